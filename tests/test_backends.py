"""Backends opened from real bundles (written by the exporter): onnx and numpy agree with each
other and with the float64 reference; `auto` picks onnx and says so; the runtime opens a
bundle path on either backend and hot-swaps bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import datasets
from edge_lstm.backends.registry import open_backend
from edge_lstm.bundle import Bundle
from edge_lstm.errors import BundleError, ConfigError
from edge_lstm.forecaster import Forecast, Runtime, Sample
from edge_lstm_export.bundle_writer import write_bundle
from edge_lstm_export.emit_numpy import reference
from edge_lstm_export.scaler import Scaler
from test_runtime import random_stack

WINDOW = 6


def airline_scaler() -> Scaler:
    lo, scale = datasets.minmax(datasets.airline())
    return Scaler("minmax", lo, scale, lo, scale)


def write(tmp: Path, stack, name: str, **kw) -> Path:
    return write_bundle(stack, tmp / name, name=name, features=["passengers"], targets=["passengers"],
                        scaler=airline_scaler(), **kw)


@pytest.fixture(scope="module")
def stacks():
    return {"lstm": random_stack("lstm", units=(10, 8), window=WINDOW, seed=3),
            "gru": random_stack("gru", units=(10,), window=WINDOW, seed=4),
            "other": random_stack("lstm", units=(10, 8), window=WINDOW, seed=5)}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, stacks):
    tmp = tmp_path_factory.mktemp("bundles")
    return {name: write(tmp, stack, name) for name, stack in stacks.items()}


def oracle(stack):
    s = airline_scaler()
    return reference(stack.with_scaling(s.x_offset, s.x_scale, s.y_offset, s.y_scale))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_onnx_and_numpy_engines_agree_with_the_reference(bundles, stacks, kind):
    onnx, npy = open_backend(bundles[kind], "onnx"), open_backend(bundles[kind], "numpy")
    assert (onnx.name, npy.name, onnx.precision) == ("onnx", "numpy", "fp32")
    ref = oracle(stacks[kind])
    rng = np.random.default_rng(0)
    for batch in (1, 7, 300, 2, 2500, 1):  # growing and shrinking: bindings are re-made
        x = rng.uniform(100, 600, (batch, 1)).astype(np.float32)
        state = rng.normal(0, 0.5, (batch, ref.state_size)).astype(np.float32)
        y_o, s_o = (a.copy() for a in onnx.step(x, state))
        y_n, s_n = npy.step(x, state)
        y_r, s_r = ref.step(x.astype(np.float64), state.astype(np.float64))
        np.testing.assert_allclose(y_o, y_n, rtol=1e-5, atol=1e-4)  # y is in passengers (100s)
        np.testing.assert_allclose(s_o, s_n, atol=1e-5)
        np.testing.assert_allclose(y_o, y_r, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(s_o, s_r, atol=1e-5)


def test_auto_picks_onnx_and_says_why(bundles):
    engine = open_backend(bundles["lstm"])
    assert engine.name == "onnx" and engine.selection == "auto picked onnx (fp32)"
    assert open_backend(bundles["lstm"], "numpy", threads=2).selection == "numpy: asked for by name"


def test_auto_falls_back_to_numpy_and_names_what_it_skipped(tmp_path, bundles):
    copy = shutil.copytree(bundles["lstm"], tmp_path / "no-onnx")
    mf = copy / "manifest.json"
    manifest = json.loads(mf.read_text())
    manifest["variants"] = [v for v in manifest["variants"] if v["backend"] != "onnx"]
    mf.write_text(json.dumps(manifest))
    engine = open_backend(copy)
    assert engine.name == "numpy"
    assert "skipped onnx" in engine.selection and "skipped" in engine.selection and "litert" in engine.selection


def test_backend_errors_name_the_problem(bundles):
    with pytest.raises(ConfigError, match="'tensorrt' is unknown"):
        open_backend(bundles["lstm"], "tensorrt")
    with pytest.raises(BundleError, match="no litert variant"):
        open_backend(bundles["lstm"], "litert")
    with pytest.raises(BundleError, match="int8-dynamic"):
        open_backend(bundles["lstm"], "onnx", precision="int8-dynamic")
    with pytest.raises(ConfigError, match="threads"):
        open_backend(bundles["lstm"], "onnx", threads=0)


def test_a_corrupt_variant_is_refused(tmp_path, bundles):
    copy = shutil.copytree(bundles["lstm"], tmp_path / "corrupt")
    with (copy / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        Runtime.open(copy, backend="onnx")


@pytest.mark.parametrize("mode", ["exact", "continuous"])
def test_runtime_on_onnx_and_numpy_agree_on_the_airline_series(bundles, stacks, mode):
    series = datasets.airline()
    runs = {}
    for backend in ("onnx", "numpy"):
        rt = Runtime.open(str(bundles["lstm"]), backend=backend, mode=mode)
        assert (rt.backend_name, rt.precision, rt.window, rt.features) == (backend, "fp32", WINDOW, ["passengers"])
        runs[backend] = np.array([rt.push("airline", [v], ts=float(i)).values[0, 0] for i, v in enumerate(series)])
    np.testing.assert_allclose(runs["onnx"], runs["numpy"], rtol=1e-5, atol=1e-4)
    if mode == "exact":
        windows = np.stack([series[i - WINDOW + 1 : i + 1] for i in range(WINDOW - 1, len(series))])
        want = oracle(stacks["lstm"]).run_window(windows[:, :, None].astype(np.float64))[:, 0]
        np.testing.assert_allclose(runs["onnx"][WINDOW - 1 :], want, rtol=1e-5, atol=1e-4)


def test_push_many_on_onnx_equals_push(bundles):
    series = datasets.airline()[:40]
    many = Runtime.open(bundles["lstm"], backend="onnx")
    one = Runtime.open(bundles["lstm"], backend="onnx")
    for i, v in enumerate(series):
        got = many.push_many([Sample(f"s{k}", [v + k], float(i)) for k in range(50)])
        want = [one.push(f"s{k}", [v + k], float(i)) for k in range(50)]
        np.testing.assert_allclose([f.values for f in got], [f.values for f in want], rtol=1e-6, atol=1e-4)


def test_swapping_in_the_same_bundle_keeps_every_state(bundles):
    rt = Runtime.open(bundles["lstm"], backend="onnx")
    for i, v in enumerate(datasets.airline()[:9]):
        rt.push_many([Sample("a", [v], float(i)), Sample("b", [v * 1.1], float(i))])
    before = rt.export_state()
    rt.swap_bundle(Bundle.open(bundles["lstm"]))
    after = rt.export_state()
    np.testing.assert_array_equal(before.states, after.states)
    np.testing.assert_array_equal(before.seq, after.seq)
    assert rt.recent("a") and rt.push("a", [300.0], ts=100.0).seq == 10


def test_swapping_in_a_retrained_model_reprimes_from_recent_samples(bundles, stacks):
    series = datasets.airline()[:20]
    rt = Runtime.open(bundles["lstm"], backend="onnx", mode="exact")
    for i, v in enumerate(series[:-1]):
        rt.push("a", [v], ts=float(i))
    rt.swap_bundle(bundles["other"])
    assert rt.bundle.name == "other"
    f = rt.push("a", [series[-1]], ts=19.0)
    want = oracle(stacks["other"]).run_window(series[None, -WINDOW:, None].astype(np.float64))[0]
    assert isinstance(f, Forecast) and not f.warming_up and f.seq == 20
    np.testing.assert_allclose(f.values[0], want, rtol=1e-5, atol=1e-4)
    # keep_state=True keeps the old model's rows instead: a different (stale) answer
    kept = Runtime.open(bundles["lstm"], backend="onnx", mode="exact")
    for i, v in enumerate(series[:-1]):
        kept.push("a", [v], ts=float(i))
    kept.swap_bundle(bundles["other"], keep_state=True)
    assert not np.allclose(kept.push("a", [series[-1]], ts=19.0).values, f.values, rtol=1e-4)


def test_a_bundle_that_does_not_fit_is_refused_and_the_old_one_keeps_running(tmp_path, bundles):
    two = random_stack(features=2, outputs=2, window=WINDOW)
    other = write_bundle(two, tmp_path / "two", name="two", features=["a", "b"], targets=["a", "b"])
    rt = Runtime.open(bundles["lstm"], backend="numpy")
    rt.push("a", [100.0])
    with pytest.raises(ConfigError, match="restart instead"):
        rt.swap_bundle(other)
    assert rt.bundle.name == "lstm" and rt.push("a", [110.0]).seq == 2


@pytest.mark.tensorflow
def test_runtime_on_litert_agrees_with_numpy_and_auto_prefers_onnx(tmp_path, bundles, stacks):
    """The TFLite variant (emitted with TensorFlow on the workstation side) through the runtime:
    exact mode over the airline series and a 20-stream push_many equal the NumPy backend."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from edge_lstm_export.bundle_writer import add_variant
    from edge_lstm_export.emit_tflite import emit_tflite

    out = shutil.copytree(bundles["lstm"], tmp_path / "with-tflite")
    s = airline_scaler()
    emit_tflite(stacks["lstm"].with_scaling(s.x_offset, s.x_scale, s.y_offset, s.y_scale), out / "model.tflite")
    add_variant(out, "model.tflite", backend="litert", precision="fp32")
    assert open_backend(out).name == "onnx"
    series = datasets.airline()
    lite = Runtime.open(out, backend="litert", mode="exact")
    npy = Runtime.open(out, backend="numpy", mode="exact")
    assert lite.backend_name == "litert"
    for i, v in enumerate(series[:60]):
        got = lite.push_many([Sample(f"s{k}", [v + k], float(i)) for k in range(20)])
        want = [npy.push(f"s{k}", [v + k], float(i)) for k in range(20)]
        np.testing.assert_allclose([f.values for f in got], [f.values for f in want], rtol=1e-5, atol=1e-4)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["variants"] = [v for v in manifest["variants"] if v["backend"] != "onnx"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    engine = open_backend(out)
    assert engine.name == "litert" and "skipped onnx" in engine.selection
