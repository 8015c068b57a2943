"""The export's Python API: a notebook user exports the live model right after training, and
`--fit-scaler` serves a target that is one of the feature columns."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import corpus
import datasets
from edge_lstm.bundle import Bundle
from edge_lstm.cli import main
from edge_lstm.forecaster import Runtime
from edge_lstm_export import ExportResult, Scaler, export_model

TOL = 1e-5  # fp32 rounding in model units (see test_corpus.py)


def _exact(bundle: Path, series: np.ndarray, window: int) -> np.ndarray:
    rt = Runtime.open(bundle, backend="onnx", mode="exact")
    return np.array([rt.push("s", x).values[0] for x in series])[window - 1 :]


@pytest.mark.tensorflow
def test_live_keras_model(tmp_path: Path) -> None:
    """export_model(keras.Model, out=..., data=array): the bundle's exact mode is model.predict;
    the scaler folds in (sensor units in and out), the result lists the parity checks."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((6, 3)), keras.layers.GRU(8), keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss="mse")
    data = corpus.series(80, 3)
    model.fit(corpus.sliding(data[:40], 6)[:-1], data[6:40], epochs=1, verbose=0)
    lo, span = np.array([10.0, -5.0, 0.0]), np.array([100.0, 10.0, 2.0])
    scaler = Scaler("minmax", lo, 1 / span, lo, 1 / span)
    sensor = data * span + lo
    result = export_model(model, out=tmp_path / "live", data=sensor, scaler=scaler)
    assert isinstance(result, ExportResult) and result.bundle == tmp_path / "live"
    assert {p.variant for p in result.parity} >= {"onnx/fp32", "numpy/fp32", "runtime exact mode (onnx/fp32)"}
    assert all(p.passed for p in result.parity)
    want = model.predict(corpus.sliding(data, 6), verbose=0)
    got = (_exact(tmp_path / "live", sensor, 6) - lo) / span
    assert np.abs(got - want).max() <= TOL


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_live_torch_module(tmp_path: Path, monkeypatch) -> None:
    """export_model(nn.Module, out=..., window=12): the usual LSTMModel (fc registered first,
    .squeeze() output) exports without a file, and a second export replaces the first bundle."""
    import torch

    classes, file = corpus._factory_module(tmp_path)
    torch.manual_seed(0)
    module = classes.LSTMModel()
    module.train()
    result = export_model(module, out=tmp_path / "b", window=12)
    assert module.training, "reading the module must not leave it in eval mode"
    assert result.stack.source["calls"] == ["lstm", "fc"]
    data = corpus.series(70, 6)
    export_model(module, out=tmp_path / "b", window=12, data=data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "corpus_models.py"]
    with torch.no_grad():
        want = module.eval()(torch.from_numpy(corpus.sliding(data, 12))).numpy()
    assert np.abs(_exact(tmp_path / "b", data, 12)[:, 0] - want).max() <= TOL


def test_out_that_is_not_a_bundle_is_left_alone(tmp_path: Path) -> None:
    """--out naming a folder with other files is refused (exit 2) before anything is read."""
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "missing.keras"), "--out", str(other)])
    assert result.exit_code == 2
    assert "photos: exists and is not an edge-lstm bundle" in result.output
    assert [p.name for p in other.iterdir()] == ["cat.jpg"]


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fit_scaler_with_a_target_among_the_features(tmp_path: Path) -> None:
    """--fit-scaler with --target-names naming one CSV column: the target is scaled like that
    column (the macro-data recipe: forecast realgdp from realgdp, realcons, realinv)."""
    import torch
    from torch import nn

    torch.manual_seed(4)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(3, 8, batch_first=True)
            self.fc = nn.Linear(8, 1)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out[:, -1])

    path = tmp_path / "macro.pt"
    torch.jit.save(torch.jit.script(Net().eval()), str(path))
    raw = corpus.series(60, 3) * np.array([9000.0, 6000.0, 1500.0]) + np.array([2700.0, 1700.0, 250.0])
    csv = tmp_path / "macro.csv"
    csv.write_text("year,realgdp,realcons,realinv\n" + "".join(
        f"{1959 + i},{a:.3f},{b:.3f},{c:.3f}\n" for i, (a, b, c) in enumerate(raw)))
    result = CliRunner().invoke(main, ["export", str(path), "--out", str(tmp_path / "b"), "--window", "4",
                                       "--fit-scaler", str(csv), "--feature-names", "realgdp,realcons,realinv",
                                       "--target-names", "realgdp"])
    assert result.exit_code == 0, result.output
    scaler = Bundle.open(tmp_path / "b").manifest["scaler"]
    gdp = np.loadtxt(csv, delimiter=",", skiprows=1, usecols=1)
    np.testing.assert_allclose(scaler["y_min"], [gdp.min()], rtol=1e-9)
    np.testing.assert_allclose(scaler["y_scale"], [1 / (gdp.max() - gdp.min())], rtol=1e-9)
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["runtime"][0]["max_abs"] <= TOL


@pytest.mark.tensorflow
def test_parity_tolerance_catches_a_real_error(tmp_path: Path, keras_models) -> None:
    """The gate is not loose: the seed model's bundle with the input and forget gates of its
    first LSTM swapped (a subtle error on this model: 4e-4) fails `check`, while the true
    bundle passes with a wide margin (fp32 rounding, ~4e-7)."""
    from dataclasses import replace

    from edge_lstm_export.emit_numpy import reference
    from edge_lstm_export.parity import ParityError, check, compare
    from edge_lstm_export.readers.keras import read_keras

    model = keras_models["seed-lstm"]
    stack = read_keras(model.path)
    first = stack.recurrent[0]
    u = first.units
    swapped = np.r_[u : 2 * u, 0:u, 2 * u : 4 * u]
    broken = replace(stack, recurrent=(replace(first, kernel=first.kernel[:, swapped]), *stack.recurrent[1:]))
    good = compare("onnx/fp32", "keras.predict", reference(stack, np.float32).run_window(model.windows), model.expected, None)
    bad = compare("onnx/fp32", "keras.predict", reference(broken, np.float32).run_window(model.windows), model.expected, None)
    check([good], [])
    assert good.max_abs < good.tolerance / 10 and bad.max_abs > bad.tolerance
    with pytest.raises(ParityError, match="onnx/fp32 vs keras.predict"):
        check([good, bad], [])


def test_squeezed_forward_compares_per_window() -> None:
    """A forward returning (N,) (`.squeeze()`) is compared window by window, not broadcast to (N, N)."""
    from edge_lstm_export.parity import compare

    want = np.linspace(0, 1, 30)
    p = compare("onnx/fp32", "torch.forward", (want + 3e-7)[:, None], want, None)
    assert p.max_abs < 1e-6 and p.windows == 30
