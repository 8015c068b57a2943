"""The Keras reader: parity with Keras' own predictions, refusals, broken files, no TF import.

Parity: for every trained fixture model, the NumPy reference built from `read_keras(file)`
must give Keras' `model.predict` on held-out windows (float32 and float64, max abs error 1e-5).
A reader that swaps two gates, mixes up the GRU bias rows or loads the wrong layer's weights
(the `.keras` naming trap) fails these by orders of magnitude.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason="the Keras reader needs h5py (the export extra)")

from edge_lstm_export.emit_numpy import reference
from edge_lstm_export.readers.keras import KerasFileError, read_keras
from edge_lstm_export.stack import UnsupportedModelError
from fixtures_keras import KERAS_MODEL_NAMES, WINDOW

TOLERANCE = 1e-5
tensorflow = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def keras() -> Any:
    """The keras module; skips the test on a machine without TensorFlow/Keras."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("keras")


# --------------------------------------------------------------------------- parity


@tensorflow
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("name", KERAS_MODEL_NAMES)
def test_reference_matches_keras_predict(keras_models, name: str, dtype: type) -> None:
    source = keras_models[name]
    stack = read_keras(source.path)
    got = reference(stack, dtype=dtype).run_window(source.windows)
    assert got.shape == source.expected.shape
    error = float(np.max(np.abs(got - source.expected)))
    assert error <= TOLERANCE, f"{name} ({source.path.name}): max abs error {error:.3g}"


@tensorflow
@pytest.mark.parametrize(
    ("name", "window", "features", "layers", "head"),
    [
        ("seed-lstm", WINDOW, 1, [("lstm", 50), ("lstm", 50)], [("linear", 1)]),
        ("seed-lstm-h5", WINDOW, 1, [("lstm", 50), ("lstm", 50)], [("linear", 1)]),
        ("gru-reset-after", WINDOW, 1, [("gru", 16)], [("linear", 1)]),
        ("gru-reset-before", WINDOW, 1, [("gru", 16)], [("linear", 1)]),
        ("lstm-3features", WINDOW, 3, [("lstm", 16)], [("relu", 8), ("linear", 3)]),
        ("functional-sigmoid", None, 1, [("lstm", 16)], [("sigmoid", 1)]),
    ],
)
def test_stack_shape(keras_models, name, window, features, layers, head) -> None:
    stack = read_keras(keras_models[name].path)
    assert stack.window == window
    assert stack.features == features
    assert [(l.kind, l.units) for l in stack.recurrent] == layers
    assert [(d.activation, d.units) for d in stack.head] == head
    assert stack.source["framework"] == "keras"
    assert stack.source["file"] == keras_models[name].path.name


@tensorflow
def test_reset_after_and_activations_are_read(keras_models) -> None:
    after = read_keras(keras_models["gru-reset-after"].path).recurrent[0]
    before = read_keras(keras_models["gru-reset-before"].path).recurrent[0]
    hard = read_keras(keras_models["lstm-hard-sigmoid"].path).recurrent[0]
    assert after.reset_after and not before.reset_after
    assert np.any(after.recurrent_bias != 0)  # row 1 of Keras' (2, 3u) bias
    assert not np.any(before.recurrent_bias)
    assert hard.recurrent_activation == "hard_sigmoid"


@tensorflow
@pytest.mark.parametrize("strip_name_attrs", [False, True], ids=["name-attrs", "class-order"])
def test_naming_trap(keras, tmp_path: Path, strip_name_attrs: bool) -> None:
    """Config names (dense_3, dense_4) differ from weight keys (dense, dense_1); both the
    `vars` name attribute and, without it (older Keras 3 files), class-and-order find the
    right weights."""
    keras.utils.set_random_seed(3)
    keras.layers.Dense(2), keras.layers.Dense(2), keras.layers.LSTM(2)  # shift the name counters
    model = keras.Sequential(
        [
            keras.Input((WINDOW, 1)),
            keras.layers.LSTM(6),
            keras.layers.Dense(4, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    path = tmp_path / "trap.keras"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
        weights = h5py.File(io.BytesIO(zf.read("model.weights.h5")))
        keys = sorted(weights["layers"])
    names = [l["config"]["name"] for l in config["config"]["layers"][1:]]
    assert set(names).isdisjoint({"lstm", "dense"}), names
    assert "dense_1" in keys and "dense" in keys
    if strip_name_attrs:
        path = _strip_vars_names(path, tmp_path / "stripped.keras")
    x = np.random.default_rng(0).random((5, WINDOW, 1), dtype=np.float32)
    got = reference(read_keras(path), dtype=np.float32).run_window(x)
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=TOLERANCE, rtol=0)


def _strip_vars_names(src: Path, dst: Path) -> Path:
    """Copy a .keras archive with the `name` attribute removed from every `vars` group."""
    with zipfile.ZipFile(src) as zin:
        members = {n: zin.read(n) for n in zin.namelist()}
    buffer = io.BytesIO(members["model.weights.h5"])
    with h5py.File(buffer, "r+") as h5:
        h5.visititems(lambda n, o: o.attrs.__delitem__("name") if "name" in o.attrs else None)
    members["model.weights.h5"] = buffer.getvalue()
    with zipfile.ZipFile(dst, "w") as zout:
        for name, data in members.items():
            zout.writestr(name, data)
    with zipfile.ZipFile(dst) as zf, h5py.File(io.BytesIO(zf.read("model.weights.h5"))) as h5:
        left = []
        h5.visititems(lambda n, o: left.append(n) if "name" in o.attrs else None)
        assert not left
    return dst


@tensorflow
def test_layer_objects_as_activations_and_activation_layer(keras, tmp_path: Path) -> None:
    """`activation=keras.layers.ReLU()` is serialized as a dict; an Activation layer after a
    linear Dense folds into it; a Dropout is skipped."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((WINDOW, 2)),
            keras.layers.GRU(5),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(4, activation=keras.layers.ReLU()),
            keras.layers.Dense(2),
            keras.layers.Activation("sigmoid"),
        ]
    )
    path = tmp_path / "objects.keras"
    model.save(path)
    stack = read_keras(path)
    assert [d.activation for d in stack.head] == ["relu", "sigmoid"]
    x = np.random.default_rng(1).normal(size=(6, WINDOW, 2)).astype(np.float32)
    got = reference(stack, dtype=np.float32).run_window(x)
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=TOLERANCE, rtol=0)


# --------------------------------------------------------------------------- refusals


def _seq(*layers: Callable[[Any], Any], shape=(WINDOW, 1), batch: int | None = None):
    def build(keras):
        first = keras.Input(batch_shape=(batch, *shape)) if batch else keras.Input(shape)
        return keras.Sequential([first, *(make(keras) for make in layers)])

    return build


def _branching(keras):
    x = keras.Input((WINDOW, 1))
    a = keras.layers.LSTM(3, name="left")(x)
    b = keras.layers.GRU(3, name="right")(x)
    return keras.Model(x, keras.layers.Dense(1)(keras.layers.Concatenate(name="merge")([a, b])))


def _attention(keras):
    x = keras.Input((WINDOW, 1))
    h = keras.layers.MultiHeadAttention(num_heads=1, key_dim=2, name="mha")(x, x)
    return keras.Model(x, keras.layers.Dense(1)(keras.layers.LSTM(3)(h)))


LSTM = lambda **kw: lambda k: k.layers.LSTM(3, name="rnn", **kw)  # noqa: E731
SEQ = LSTM(return_sequences=True)
HEAD = lambda k: k.layers.Dense(1, name="head")  # noqa: E731

REFUSALS = {
    "bidirectional": (
        _seq(lambda k: k.layers.Bidirectional(k.layers.LSTM(3), name="bi"), HEAD),
        "'bi' (Bidirectional)",
        "needs the future: the backward pass reads samples that have not arrived yet",
    ),
    "conv1d": (
        _seq(lambda k: k.layers.Conv1D(4, 3, name="conv"), LSTM(), HEAD),
        "'conv' (Conv1D)",
        "convolves over",
    ),
    "pooling": (
        _seq(SEQ, lambda k: k.layers.GlobalAveragePooling1D(name="gap"), HEAD),
        "'gap' (GlobalAveragePooling1D)",
        "pools over several time steps",
    ),
    "flatten-window": (
        _seq(SEQ, lambda k: k.layers.Flatten(name="flat"), HEAD),
        "'flat' (Flatten)",
        "flattens the whole window",
    ),
    "time-distributed-other": (
        _seq(lambda k: k.layers.TimeDistributed(k.layers.BatchNormalization(), name="td"), LSTM(), HEAD),
        "'td' (TimeDistributed)",
        "wraps a BatchNormalization, and edge-lstm steps TimeDistributed(Dense) only",
    ),
    "repeat-vector": (
        _seq(LSTM(), lambda k: k.layers.RepeatVector(3, name="rep"), lambda k: k.layers.LSTM(2), HEAD),
        "'rep' (RepeatVector)",
        "decoder",
    ),
    "stateful": (
        _seq(LSTM(stateful=True), HEAD, batch=1),
        "'rnn' (LSTM)",
        "re-save the model with stateful=False",
    ),
    "go-backwards": (
        _seq(LSTM(go_backwards=True), HEAD),
        "'rnn' (LSTM)",
        "go_backwards=True",
    ),
    "dense-between-recurrent": (
        _seq(SEQ, lambda k: k.layers.Dense(4, name="mid"), lambda k: k.layers.GRU(2), HEAD),
        "'mid' (Dense)",
        "between recurrent layers",
    ),
    "branching": (_branching, "'merge' (Concatenate)", "branching functional graph"),
    "attention": (_attention, "'mha' (MultiHeadAttention)", "attends over the whole window"),
    "unknown-layer": (
        _seq(LSTM(), lambda k: k.layers.BatchNormalization(name="bn"), HEAD),
        "'bn' (BatchNormalization)",
        "does not know how to step this layer",
    ),
}


@tensorflow
@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refuses_unstreamable_models(keras, tmp_path: Path, case: str) -> None:
    build, label, reason = REFUSALS[case]
    path = tmp_path / f"{case}.keras"
    build(keras).save(path)
    with pytest.raises(UnsupportedModelError) as info:
        read_keras(path)
    message = str(info.value)
    assert path.name in message
    assert label in message, message
    assert reason in message, message


@tensorflow
def test_refuses_unsupported_activation(keras, tmp_path: Path) -> None:
    def thresholded(k):
        return k.layers.Dense(1, name="head", activation=k.layers.ReLU(threshold=0.5))

    model = _seq(LSTM(), thresholded)(keras)
    path = tmp_path / "leaky.keras"
    model.save(path)
    expected = r"'head' \(Dense\).*ReLU\(.*threshold=0.5"
    with pytest.raises(UnsupportedModelError, match=expected):
        read_keras(path)


# --------------------------------------------------------------------------- broken files


def test_text_file_named_keras(tmp_path: Path) -> None:
    path = tmp_path / "notes.keras"
    path.write_text("this is not a model\n")
    with pytest.raises(KerasFileError, match=r"notes\.keras: not a Keras model file"):
        read_keras(path)


def test_truncated_zip(tmp_path: Path) -> None:
    whole = tmp_path / "whole.keras"
    with zipfile.ZipFile(whole, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", json.dumps(_HAND_CONFIG))
        zf.writestr("model.weights.h5", os.urandom(4096))
    path = tmp_path / "cut.keras"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(KerasFileError, match=r"cut\.keras: not a readable \.keras archive"):
        read_keras(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KerasFileError, match=r"absent\.keras: cannot read the file"):
        read_keras(tmp_path / "absent.keras")


def test_zip_without_config(tmp_path: Path) -> None:
    path = tmp_path / "noconfig.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.weights.h5", b"")
    with pytest.raises(KerasFileError, match=r"noconfig\.keras: the archive has no config\.json"):
        read_keras(path)


def test_zip_without_weights(tmp_path: Path) -> None:
    path = tmp_path / "noweights.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps(_HAND_CONFIG))
    expected = r"noweights\.keras: the archive has no model\.weights\.h5"
    with pytest.raises(KerasFileError, match=expected):
        read_keras(path)


def test_h5_without_model_config(tmp_path: Path) -> None:
    path = tmp_path / "weights-only.h5"
    with h5py.File(path, "w") as h5:
        h5["dense/kernel"] = np.zeros((2, 2))
    with pytest.raises(KerasFileError, match=r"weights-only\.h5: HDF5 file without a model_config"):
        read_keras(path)


def test_archive_missing_a_layer_group(tmp_path: Path) -> None:
    path = _hand_archive(tmp_path / "partial.keras", drop="dense")
    expected = r"partial\.keras: no weights for layer 'dense_9' \(Dense\)"
    with pytest.raises(KerasFileError, match=expected):
        read_keras(path)


@tensorflow
@pytest.mark.parametrize("name", ["seed-lstm", "seed-lstm-h5"])
def test_truncated_real_file(keras_models, tmp_path: Path, name: str) -> None:
    source = keras_models[name].path
    path = tmp_path / f"cut{source.suffix}"
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(KerasFileError, match=rf"cut\{source.suffix}: "):
        read_keras(path)


# --------------------------------------------------------------------------- hand-written files
# Built with h5py and zipfile only, so these run without TensorFlow.

_HAND_CONFIG = {
    "class_name": "Sequential",
    "config": {
        "name": "sequential_4",
        "layers": [
            {
                "class_name": "InputLayer",
                "config": {"name": "input_layer_2", "batch_shape": [None, 5, 2]},
            },
            {
                "class_name": "GRU",
                "config": {"name": "gru_7", "units": 3, "reset_after": True, "activation": "tanh"},
            },
            {"class_name": "Dense", "config": {"name": "dense_9", "units": 1, "activation": {
                "module": "keras.activations", "class_name": "function", "config": "softplus",
                "registered_name": "softplus"}}},
        ],
    },
}


def _hand_weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {
        "kernel": rng.normal(size=(2, 9)),
        "recurrent": rng.normal(size=(3, 9)),
        "bias": rng.normal(size=(2, 9)),
        "dense_kernel": rng.normal(size=(3, 1)),
        "dense_bias": rng.normal(size=(1,)),
    }


def _hand_archive(path: Path, drop: str = "") -> Path:
    """A Keras 3-style archive whose config names (gru_7, dense_9) differ from the weight keys
    (gru, dense) and whose `vars` groups carry no name attribute."""
    w = _hand_weights()
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        groups = {
            "gru": ("layers/gru/cell/vars", [w["kernel"], w["recurrent"], w["bias"]]),
            "dense": ("layers/dense/vars", [w["dense_kernel"], w["dense_bias"]]),
        }
        for key, (where, arrays) in groups.items():
            if key == drop:
                continue
            for i, array in enumerate(arrays):
                h5[f"{where}/{i}"] = array.astype(np.float32)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        zf.writestr("config.json", json.dumps(_HAND_CONFIG))
        zf.writestr("model.weights.h5", buffer.getvalue())
    return path


def test_hand_written_archive(tmp_path: Path) -> None:
    stack = read_keras(_hand_archive(tmp_path / "hand.keras"))
    w = _hand_weights()
    gru = stack.recurrent[0]
    assert (stack.window, stack.features, gru.kind, gru.units) == (5, 2, "gru", 3)
    np.testing.assert_allclose(gru.kernel, w["kernel"].astype(np.float32))
    np.testing.assert_allclose(gru.bias, w["bias"][0].astype(np.float32))
    np.testing.assert_allclose(gru.recurrent_bias, w["bias"][1].astype(np.float32))
    assert stack.head[0].activation == "softplus"
    np.testing.assert_allclose(stack.head[0].kernel, w["dense_kernel"].astype(np.float32))


def _legacy_h5(path: Path, keras_version: str, recurrent_activation: str) -> Path:
    """A Keras 2-style .h5: `batch_input_shape` on the first layer, `:0` weight names."""
    rng = np.random.default_rng(2)
    config = {
        "class_name": "Sequential",
        "config": {"name": "sequential", "layers": [
            {"class_name": "LSTM", "config": {
                "name": "lstm", "units": 2, "batch_input_shape": [None, 4, 1],
                "recurrent_activation": recurrent_activation, "activation": "tanh",
                "return_sequences": False}},
            {"class_name": "Dense", "config": {"name": "dense", "units": 1}},
        ]},
    }
    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = json.dumps(config).encode()
        if keras_version:
            h5.attrs["keras_version"] = keras_version.encode()
        weights = h5.create_group("model_weights")
        for layer, names, shapes in [
            ("lstm", ["lstm/lstm_cell/kernel:0", "lstm/lstm_cell/recurrent_kernel:0",
                      "lstm/lstm_cell/bias:0"], [(1, 8), (2, 8), (8,)]),
            ("dense", ["dense/kernel:0", "dense/bias:0"], [(2, 1), (1,)]),
        ]:
            group = weights.create_group(layer)
            group.attrs["weight_names"] = [n.encode() for n in names]
            for name, shape in zip(names, shapes):
                group[name] = rng.normal(size=shape).astype(np.float32)
    return path


def test_keras2_legacy_h5(tmp_path: Path) -> None:
    stack = read_keras(_legacy_h5(tmp_path / "old.h5", "2.15.0", "sigmoid"))
    assert (stack.window, stack.features, stack.recurrent[0].units) == (4, 1, 2)
    assert stack.source["format"] == "keras-h5"


@pytest.mark.parametrize("version, expected", [("2.2.4", "hard_sigmoid_keras2"), ("2.15.0", "hard_sigmoid_keras2"),
                                               ("", "hard_sigmoid_keras2"), ("3.15.1", "hard_sigmoid")])
def test_hard_sigmoid_follows_the_keras_version(tmp_path: Path, version: str, expected: str) -> None:
    """Keras 2's hard_sigmoid is clip(0.2x+0.5), Keras 3's is x/6+0.5: each file gets its own
    (an .h5 without a version is Keras 2: Keras 3 always writes one)."""
    stack = read_keras(_legacy_h5(tmp_path / "old-hard.h5", version, "hard_sigmoid"))
    assert stack.recurrent[0].recurrent_activation == expected


# --------------------------------------------------------------------------- no TensorFlow


_PROBE = """
import sys
from edge_lstm_export.readers.keras import read_keras
for path in sys.argv[1:]:
    stack = read_keras(path)
    assert stack.recurrent, path
banned = ("tensorflow", "keras", "tf_keras", "torch")
heavy = sorted(m for m in sys.modules if m.split(".")[0] in banned)
print("HEAVY:" + ",".join(heavy))
"""


def _probe(*paths: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *map(str, paths)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_reader_does_not_import_tensorflow_hand_written(tmp_path: Path) -> None:
    assert _probe(_hand_archive(tmp_path / "hand.keras")) == "HEAVY:"


@tensorflow
def test_reader_does_not_import_tensorflow(keras_models) -> None:
    paths = [keras_models[n].path for n in ("seed-lstm", "seed-lstm-h5", "gru-reset-after")]
    assert _probe(*paths) == "HEAVY:"
