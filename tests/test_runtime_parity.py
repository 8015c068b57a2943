"""The runtime against the source frameworks themselves, on the airline series.

- exact mode, fed the whole series sample by sample, equals Keras `model.predict` on every
  sliding window (the window-trained model, reproduced at one step call per sample);
- continuous mode equals Keras' own recurrent layers (same weights) called one sample at a
  time with `initial_state=` / `return_state=True`, and PyTorch's nn.LSTM / nn.GRU fed one
  sample at a time with the state carried.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import datasets
from edge_lstm.cli import main
from edge_lstm.forecaster import Runtime

ENGINES = ("onnx", "numpy", "litert")


@pytest.fixture(scope="module")
def seed_bundle(keras_models, tmp_path_factory) -> tuple[Path, datasets.SourceModel]:
    """The seed Keras model exported with the MinMaxScaler fitted on the series (sensor units),
    as ONNX, TFLite and NumPy variants."""
    model = keras_models["seed-lstm"]
    out = tmp_path_factory.mktemp("seed") / "airline"
    result = CliRunner().invoke(main, ["export", str(model.path), "--out", str(out), "--fit-scaler", str(datasets.AIRLINE_CSV),
                                       "--formats", "onnx,tflite"])
    assert result.exit_code == 0, result.output
    return out, model


def _engine_or_skip(bundle: Path, backend: str, mode: str) -> Runtime:
    from edge_lstm.bundle import Bundle

    if not any(v.backend == backend for v in Bundle.open(bundle).variants):
        pytest.skip(f"the bundle has no {backend} variant")
    return Runtime.open(bundle, backend=backend, mode=mode)


@pytest.mark.tensorflow
@pytest.mark.parametrize("backend", ENGINES)
def test_exact_mode_equals_keras_predict_on_every_window(seed_bundle, backend: str) -> None:
    """Sample by sample over all 144 months: each forecast after sample n >= 12 equals
    model.predict on the window of the last 12 samples (<= 1e-5 in the model's units)."""
    path, model = seed_bundle
    rt = _engine_or_skip(path, backend, "exact")
    series = datasets.airline()
    offset, scale = datasets.minmax(series)
    scaled = ((series - offset) * scale).astype(np.float32)
    x, _ = datasets.windows(scaled, 12)
    want = model.module.predict(x, verbose=0)[:, 0]  # windows ending at samples 11..142
    got, warm = [], []
    for t, value in enumerate(series):
        f = rt.push("airline", [float(value)], ts=float(t))
        got.append((f.values[0, 0] - offset[0]) * scale[0])
        warm.append(f.warming_up)
    assert warm[:11] == [True] * 11 and not any(warm[11:])
    err = np.abs(np.array(got[11:-1]) - want).max()
    assert err <= 1e-5, f"{backend}: max abs {err:.2e} vs keras.predict"


def _keras_step_oracle(keras, model, samples: np.ndarray) -> np.ndarray:
    """Keras' own layers, one sample at a time, state carried with initial_state/return_state."""
    layers = [l for l in model.layers if l.__class__.__name__ in ("LSTM", "GRU")]
    head = [l for l in model.layers if l.__class__.__name__ == "Dense"]
    twins = []
    for layer in layers:
        cfg = layer.get_config()
        cfg.update(return_state=True, return_sequences=False, name=None)
        twin = layer.__class__.from_config(cfg)
        twin.build((1, 1, layer.input.shape[-1]))
        twin.set_weights(layer.get_weights())
        twins.append(twin)
    states = [None] * len(twins)
    out = []
    for x in samples:
        h = np.asarray(x, np.float32).reshape(1, 1, -1)
        for k, twin in enumerate(twins):
            res = twin(h, initial_state=states[k]) if states[k] is not None else twin(h)
            seq, states[k] = res[0], list(res[1:])
            h = np.asarray(seq).reshape(1, 1, -1)
        y = h.reshape(1, -1)
        for d in head:
            y = np.asarray(d(y))
        out.append(y[0])
    return np.array(out)


@pytest.mark.tensorflow
@pytest.mark.parametrize("name", ["seed-lstm", "gru-reset-after", "gru-reset-before"])
def test_continuous_mode_equals_keras_layers_stepped(keras_models, tmp_path: Path, name: str) -> None:
    """Continuous mode over 40 samples equals Keras' layers carried one sample at a time."""
    keras = pytest.importorskip("keras")
    model = keras_models[name]
    out = tmp_path / "b"
    assert CliRunner().invoke(main, ["export", str(model.path), "--out", str(out), "--window", "12"]).exit_code == 0
    samples = np.concatenate([model.windows[0], model.windows[-1], model.windows[5]])[:40]
    want = _keras_step_oracle(keras, model.module, samples)
    for backend in ("onnx", "numpy"):
        rt = Runtime.open(out, backend=backend, mode="continuous")
        got = np.array([rt.push("s", s, ts=float(t)).values[0] for t, s in enumerate(samples)])
        assert np.abs(got - want).max() <= 1e-5, backend


@pytest.mark.torch
@pytest.mark.parametrize("name", ["torch-lstm2", "torch-gru"])
def test_continuous_mode_equals_torch_stepped(torch_models, tmp_path: Path, name: str) -> None:
    """Continuous mode equals the PyTorch recurrent layer fed one sample at a time, state carried."""
    torch = pytest.importorskip("torch")
    model = torch_models[name]
    out = tmp_path / "b"
    args = ["export", str(model.path), "--out", str(out), "--window", "12"]
    assert CliRunner().invoke(main, args).exit_code == 0
    rnn, head = model.module.rnn, model.module.head
    samples = np.concatenate([model.windows[0], model.windows[-1], model.windows[5]])[:40]
    state, want = None, []
    with torch.no_grad():
        for s in samples:
            x = torch.from_numpy(np.asarray(s, np.float32).reshape(1, 1, -1))
            y, state = rnn(x, state) if state is not None else rnn(x)
            want.append(head(y[:, -1] if getattr(rnn, "batch_first", False) else y[-1]).numpy()[0])
    rt = Runtime.open(out, backend="onnx", mode="continuous")
    got = np.array([rt.push("s", s, ts=float(t)).values[0] for t, s in enumerate(samples)])
    assert np.abs(got - np.array(want)).max() <= 1e-5
