"""The TFLite step model and the LiteRT backend: parity, naming, batching, errors, the bundle checker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import datasets
from stacks import activation_names, dense, recurrent, zoo

pytest.importorskip("ai_edge_litert")
tf = pytest.importorskip("tensorflow")

from edge_lstm.backends.litert_backend import LiteRTStep  # noqa: E402
from edge_lstm.errors import BackendUnavailableError, ConfigError  # noqa: E402
from edge_lstm_export.emit_numpy import reference  # noqa: E402
from edge_lstm_export.emit_tflite import emit_tflite, tflite_bytes  # noqa: E402
from edge_lstm_export.stack import Stack  # noqa: E402

pytestmark = pytest.mark.tensorflow

TOL = 1e-5
CHECKER = Path(__file__).parent / "check_bundle.py"  # the shared contract checker, vendored
KERAS_MODELS = ["seed-lstm", "gru-reset-after", "gru-reset-before", "lstm-3features"]


def roll(engine, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step every window [N, W, F] from zero state as rows of one batch: (last y, last state)."""
    state = np.zeros((len(windows), engine.state_size), windows.dtype)
    y = None
    for t in range(windows.shape[1]):
        y, state = engine.step(np.ascontiguousarray(windows[:, t, :]), state)
    return np.asarray(y, np.float64), np.asarray(state, np.float64)


@pytest.fixture(scope="module")
def keras_stacks(keras_models):
    from edge_lstm_export.readers.keras import read_keras

    return {name: (read_keras(keras_models[name].path), keras_models[name]) for name in KERAS_MODELS}


@pytest.mark.parametrize("name", KERAS_MODELS)
def test_tflite_matches_keras_and_reference(keras_stacks, name):
    """Rolled over held-out windows, the TFLite step model gives Keras' own prediction and the
    float64 reference's state, within 1e-5 (model units)."""
    stack, source = keras_stacks[name]
    engine = LiteRTStep(tflite_bytes(stack))
    got_y, got_s = roll(engine, source.windows)
    want_y, want_s = roll(reference(stack), source.windows.astype(np.float64))
    assert got_y.shape == source.expected.shape
    assert np.abs(got_y - source.expected).max() <= TOL
    assert np.abs(got_y - want_y).max() <= TOL
    assert np.abs(got_s - want_s).max() <= TOL


def test_scaled_seed_model_reads_and_writes_sensor_units(keras_stacks):
    """With the scaler folded in, x and y are passengers; parity holds in model units."""
    stack, source = keras_stacks["seed-lstm"]
    offset, scale = datasets.minmax(datasets.airline())
    device = stack.with_scaling(offset, scale, offset, scale)
    engine = LiteRTStep(tflite_bytes(device))
    sensor_windows = (source.windows / scale + offset).astype(np.float32)
    got, _ = roll(engine, sensor_windows)
    assert got.min() > 100  # passengers, not [0, 1]
    assert np.abs((got - offset) * scale - source.expected).max() <= TOL


@pytest.mark.parametrize("name", sorted(zoo()))
def test_tflite_matches_reference_on_hand_built_stacks(name):
    stack = zoo()[name]
    rng = np.random.default_rng(3)
    windows = rng.normal(0, 1, (7, stack.window, stack.features)).astype(np.float32)
    got_y, got_s = roll(LiteRTStep(tflite_bytes(stack)), windows)
    want_y, want_s = roll(reference(stack), windows.astype(np.float64))
    assert np.abs(got_y - want_y).max() <= TOL
    assert np.abs(got_s - want_s).max() <= TOL


def test_every_activation_has_the_reference_maths():
    """One stack whose recurrent layers and head use every supported activation, plus an
    output scale kept outside a non-linear last layer."""
    rng = np.random.default_rng(5)
    names = activation_names()
    layers = (
        recurrent("lstm", 2, 4, rng, activation="softsign", recurrent_activation="hard_sigmoid"),
        recurrent("lstm", 4, 4, rng, activation="tanh", recurrent_activation="hard_sigmoid_keras2"),
        recurrent("gru", 4, 4, rng, activation="elu:0.5", recurrent_activation="sigmoid", reset_after=False),
    )
    head = tuple(dense(4, 4, rng, act) for act in names) + (dense(4, 2, rng, "sigmoid"),)
    stack = Stack(layers, head, window=4).with_scaling([0.0, 0.0], [1.0, 1.0], [10.0, -3.0], [0.5, 2.0])
    assert stack.output_scale is not None
    windows = rng.normal(0, 1, (5, 4, 2)).astype(np.float32)
    got_y, got_s = roll(LiteRTStep(tflite_bytes(stack)), windows)
    want_y, want_s = roll(reference(stack), windows.astype(np.float64))
    assert np.abs(got_y - want_y).max() <= TOL
    assert np.abs(got_s - want_s).max() <= TOL


@pytest.fixture(scope="module")
def seed_tflite(tmp_path_factory) -> tuple[Stack, Path]:
    stack = zoo()["lstm2"]
    path = emit_tflite(stack, tmp_path_factory.mktemp("tflite") / "model.tflite")
    return stack, path


def test_io_tensors_are_named_for_the_manifest_and_the_batch_axis_is_free(seed_tflite):
    from ai_edge_litert.interpreter import Interpreter

    stack, path = seed_tflite
    it = Interpreter(model_path=str(path))
    ins = {d["name"]: d for d in it.get_input_details()}
    outs = {d["name"]: d for d in it.get_output_details()}
    assert set(ins) == {"x", "state"} and set(outs) == {"y", "state_out"}
    assert list(ins["x"]["shape_signature"]) == [-1, stack.features]
    assert list(ins["state"]["shape_signature"]) == [-1, stack.state_size]
    assert list(outs["state_out"]["shape_signature"]) == [-1, stack.state_size]
    assert all(d["dtype"] == np.float32 for d in (*ins.values(), *outs.values()))
    signature = it.get_signature_list()["serving_default"]
    assert sorted(signature["inputs"]) == ["state", "x"] and sorted(signature["outputs"]) == ["state_out", "y"]


def test_batch_rows_equal_single_streams_and_resizes_back_and_forth(seed_tflite):
    stack, path = seed_tflite
    engine = LiteRTStep(path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, stack.features)).astype(np.float32)
    s = rng.normal(0, 0.5, (5, stack.state_size)).astype(np.float32)
    y5, s5 = engine.step(x, s)
    for i in range(5):  # batch 1 after batch 5, then 5 again below
        yi, si = engine.step(x[i : i + 1], s[i : i + 1])
        np.testing.assert_allclose(yi[0], y5[i], atol=1e-6)
        np.testing.assert_allclose(si[0], s5[i], atol=1e-6)
    y5b, _ = engine.step(x, s)
    np.testing.assert_array_equal(y5b, y5)
    want_y, want_s = reference(stack).step(x.astype(np.float64), s.astype(np.float64))
    assert np.abs(y5 - want_y).max() <= TOL and np.abs(s5 - want_s).max() <= TOL


def test_step_returns_copies_that_survive_the_next_step(seed_tflite):
    stack, path = seed_tflite
    engine = LiteRTStep(path.read_bytes())
    x = np.ones((1, stack.features), np.float32)
    y1, s1 = engine.step(x, np.zeros((1, stack.state_size), np.float32))
    kept_y, kept_s = y1.copy(), s1.copy()
    y2, s2 = engine.step(x, s1)
    assert not np.array_equal(s2, s1)  # the state moved on...
    np.testing.assert_array_equal(y1, kept_y)  # ...and the first answer was not overwritten
    np.testing.assert_array_equal(s1, kept_s)


def test_wrong_shapes_raise_a_message_naming_the_expected_shapes(seed_tflite):
    stack, path = seed_tflite
    engine = LiteRTStep(path)
    with pytest.raises(ValueError, match=rf"x\[B,{stack.features}\] and state\[B,{stack.state_size}\]"):
        engine.step(np.zeros((1, stack.features + 1), np.float32), np.zeros((1, stack.state_size), np.float32))


def test_not_a_tflite_file_is_refused(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"this is not a flatbuffer" * 10)
    with pytest.raises(BackendUnavailableError, match="model.tflite"):
        LiteRTStep(bad)


def test_missing_interpreter_names_the_extra_to_install(seed_tflite):
    """With neither ai-edge-litert nor tflite-runtime importable, the error says what to install."""
    code = (
        "import sys\n"
        "sys.modules['ai_edge_litert'] = None; sys.modules['tflite_runtime'] = None\n"
        "from edge_lstm.backends.litert_backend import LiteRTStep\n"
        "from edge_lstm.errors import BackendUnavailableError\n"
        f"try:\n    LiteRTStep({str(seed_tflite[1])!r})\n"
        "except BackendUnavailableError as exc:\n    print('ERR', exc.exit_code, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "ERR 2" in out.stdout and "pip install 'edge-lstm[litert]'" in out.stdout, out.stderr


def test_litert_backend_never_imports_tensorflow(seed_tflite):
    code = (
        "import sys, numpy as np\n"
        "from edge_lstm.backends.litert_backend import LiteRTStep\n"
        f"e = LiteRTStep({str(seed_tflite[1])!r})\n"
        "e.step(np.zeros((2, e.features), np.float32), np.zeros((2, e.state_size), np.float32))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'torch')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_full_integer_quantization_without_calibration_is_refused():
    with pytest.raises(ConfigError, match="calibration"):
        tflite_bytes(zoo()["lstm2"], quantize="int8")
    with pytest.raises(ConfigError, match="not known"):
        tflite_bytes(zoo()["lstm2"], quantize="int4")


def test_bundle_with_tflite_variants_passes_the_shared_checker(tmp_path):
    """The contract checker finds x/state/y/state_out by name, resizes the batch and compares
    batch rows with single streams, for the fp32 and a quantized TFLite variant."""
    from edge_lstm_export.bundle_writer import add_variant, write_bundle
    from edge_lstm_export.scaler import Scaler

    rng = np.random.default_rng(9)
    stack = Stack((recurrent("lstm", 1, 8, rng), recurrent("gru", 8, 6, rng)), (dense(6, 1, rng),), window=6)
    scaler = Scaler("minmax", np.array([104.0]), np.array([1 / 518.0]), np.array([104.0]), np.array([1 / 518.0]))
    out = write_bundle(stack, tmp_path / "b", name="t", features=["passengers"], targets=["passengers"], scaler=scaler)
    device = stack.with_scaling(scaler.x_offset, scaler.x_scale, scaler.y_offset, scaler.y_scale)
    emit_tflite(device, out / "model.tflite")
    emit_tflite(device, out / "model.fp16.tflite", quantize="fp16")
    add_variant(out, "model.tflite", backend="litert", precision="fp32")
    add_variant(out, "model.fp16.tflite", backend="litert", precision="fp16")
    listed = {v["file"] for v in json.loads((out / "manifest.json").read_text())["variants"]}
    assert {"model.tflite", "model.fp16.tflite"} <= listed
    res = subprocess.run([sys.executable, str(CHECKER), str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    # and the device runtime opens the TFLite variant from the bundle by precision
    from edge_lstm.backends.registry import open_backend

    engine = open_backend(out, "litert", precision="fp16")
    assert engine.name == "litert" and engine.precision == "fp16"
