"""`edge-lstm export` end to end: real Keras and PyTorch models become bundles whose step
models reproduce the framework's own predictions; bad inputs exit 2 with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import datasets
from edge_lstm.backends.registry import open_backend
from edge_lstm.bundle import Bundle
from edge_lstm.cli import main
from edge_lstm_export.parity import roll
from fixtures_keras import KERAS_MODEL_NAMES

TORCH_NAMES = ("torch-lstm2", "torch-lstm2-factory", "torch-gru", "torch-lstm-nobias")


def _export(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["export", *args])
    return result.exit_code, result.output + (str(result.exception) if result.exception and result.exit_code not in (0, 2) else "")


def _cli_args(model: datasets.SourceModel) -> list[str]:
    args = [str(model.path)]
    if "factory" in model.reader_kwargs:
        args += ["--torch-factory", model.reader_kwargs["factory"]]
    return args + ["--window", str(model.windows.shape[1])]


def _assert_bundle_matches(bundle_dir: Path, model: datasets.SourceModel) -> None:
    bundle = Bundle.open(bundle_dir)
    for backend in ("onnx", "numpy"):
        got = roll(open_backend(bundle, backend).step, model.windows, bundle.state_size)
        err = np.abs(got - model.expected).max()
        assert err <= 1e-5, f"{model.name} {backend}: max abs {err:.2e} vs the framework's own prediction"
    report = json.loads((bundle_dir / "report.json").read_text())
    parity = [row["parity"] for row in report["variants"] if row["parity"] and row["precision"] == "fp32"]
    assert parity and all(p["max_abs"] <= 1e-5 for p in parity), parity


@pytest.mark.tensorflow
@pytest.mark.parametrize("name", KERAS_MODEL_NAMES)
def test_keras_export_matches_predict(name: str, keras_models, tmp_path: Path) -> None:
    """Every Keras fixture model: the exported step model rolled over each held-out window
    equals `model.predict` on that window (<= 1e-5), with ONNX Runtime and with NumPy."""
    model = keras_models[name]
    code, out = _export([*_cli_args(model), "--out", str(tmp_path / "b")])
    assert code == 0, out
    assert "keras.predict" in out
    _assert_bundle_matches(tmp_path / "b", model)


@pytest.mark.torch
@pytest.mark.parametrize("name", TORCH_NAMES)
def test_torch_export_matches_forward(name: str, torch_models, tmp_path: Path) -> None:
    """Every PyTorch fixture model: the exported step model equals the module's forward."""
    model = torch_models[name]
    code, out = _export([*_cli_args(model), "--out", str(tmp_path / "b")])
    assert code == 0, out
    assert "torch.forward" in out
    _assert_bundle_matches(tmp_path / "b", model)


@pytest.mark.tensorflow
def test_seed_model_in_sensor_units(keras_models, tmp_path: Path) -> None:
    """The seed recipe with --fit-scaler: the bundle reads and writes passengers, and its
    forecasts are Keras' forecasts mapped back through the same MinMaxScaler."""
    model = keras_models["seed-lstm"]
    code, out = _export([str(model.path), "--out", str(tmp_path / "airline"), "--fit-scaler",
                         str(datasets.AIRLINE_CSV), "--name", "airline-lstm", "--baseline-windows", "12"])
    assert code == 0, out
    bundle = Bundle.open(tmp_path / "airline")
    assert bundle.features == ["Passengers"] and bundle.manifest["scaler"]["kind"] == "minmax"
    offset, scale = datasets.minmax(datasets.airline())
    sensor = model.windows / scale + offset
    got = roll(open_backend(bundle, "onnx").step, sensor, bundle.state_size)
    np.testing.assert_allclose((got - offset) * scale, model.expected, atol=1e-5)
    inspect = CliRunner().invoke(main, ["inspect", str(tmp_path / "airline")])
    assert inspect.exit_code == 0
    assert "layer 0  lstm   50 units  h[0:50]  c[50:100]" in inspect.output
    assert "window-12.onnx" in inspect.output


@pytest.mark.tensorflow
def test_reexport_keeps_the_baselines_of_the_same_model(keras_models, tmp_path: Path) -> None:
    """The README's Quick start exports twice into one directory: the second export (no
    --baseline-windows) keeps the first one's whole-window baselines, rebuilt and listed; a
    different model file exported there does not inherit them."""
    model = keras_models["seed-lstm"]
    out = tmp_path / "airline"
    base = [str(model.path), "--out", str(out), "--fit-scaler", str(datasets.AIRLINE_CSV)]
    code, text = _export([*base, "--baseline-windows", "12,24"])
    assert code == 0, text
    first = {b["file"]: b["sha256"] for b in Bundle.open(out).manifest["baselines"]}
    assert set(first) == {"window-12.onnx", "window-24.onnx"}
    code, text = _export(base)
    assert code == 0, text
    assert "kept the whole-window baselines (W = 12, 24)" in text
    again = {b["file"]: b["sha256"] for b in Bundle.open(out).manifest["baselines"]}
    assert again == first  # same model, same scaler: the same files, each pinned by its hash
    other = keras_models["seed-lstm-h5"]  # the same weights saved as .h5: another source file
    code, text = _export([str(other.path), "--out", str(out), "--fit-scaler", str(datasets.AIRLINE_CSV)])
    assert code == 0, text
    assert Bundle.open(out).manifest["baselines"] == [] and "kept the whole-window" not in text


@pytest.mark.parametrize(
    "make, args, message",
    [
        (None, [], "no such file"),
        (lambda p: p.write_text("not a model"), [], "model.keras"),
        (lambda p: p.write_text("x"), ["--scaler", "minmax:1,2", "--scaler", "minmax:1,2"], None),
    ],
    ids=["missing", "not-a-model", "garbage-with-scaler"],
)
def test_bad_model_files_exit_2(tmp_path: Path, make, args, message) -> None:
    """Missing or garbage model files: exit 2 and a message naming the file."""
    path = tmp_path / "model.keras"
    if make:
        make(path)
    code, out = _export([str(path), "--out", str(tmp_path / "b"), *args])
    assert code == 2, out
    assert str(path.name) in out and "error:" in out
    if message:
        assert message in out


def test_unknown_suffix_exit_2(tmp_path: Path) -> None:
    """A file type no reader takes lists the accepted ones."""
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\0")
    code, out = _export([str(path), "--out", str(tmp_path / "b")])
    assert code == 2 and "accepted: Keras .keras" in out


@pytest.mark.tensorflow
def test_wrong_scaler_length_exit_2(keras_models, tmp_path: Path) -> None:
    """Two scaler specs for a one-feature model: exit 2, naming the option."""
    model = keras_models["seed-lstm"]
    code, out = _export([str(model.path), "--out", str(tmp_path / "b"), "--scaler", "minmax:1,2", "--scaler", "minmax:3,4"])
    assert code == 2 and "--scaler: got 2 scaler specs for 1 columns" in out


@pytest.mark.tensorflow
def test_unsupported_layer_exit_2(tmp_path: Path) -> None:
    """A Bidirectional layer is refused by name, with the reason (it needs the future)."""
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((12, 1)), keras.layers.Bidirectional(keras.layers.LSTM(4), name="bi"),
                              keras.layers.Dense(1)])
    path = tmp_path / "bi.keras"
    model.save(path)
    code, out = _export([str(path), "--out", str(tmp_path / "b")])
    assert code == 2, out
    assert "bi" in out and "future" in out


@pytest.mark.tensorflow
@pytest.mark.slow
def test_all_variants_from_the_cli(keras_models, tmp_path: Path) -> None:
    """--formats onnx,tflite --quantize dynamic,static,fp16: every variant is in the manifest
    with its hash, the shared checker accepts the bundle, and report.json scores each one."""
    import subprocess
    import sys

    model = keras_models["seed-lstm"]
    out = tmp_path / "b"
    code, text = _export([str(model.path), "--out", str(out), "--fit-scaler", str(datasets.AIRLINE_CSV),
                          "--formats", "onnx,tflite", "--quantize", "dynamic,static,fp16"])
    assert code == 0, text
    bundle = Bundle.open(out)
    have = {(v.backend, v.precision) for v in bundle.variants}
    for backend in ("onnx", "litert"):
        for precision in ("fp32", "int8-dynamic", "int8-static", "fp16"):
            assert (backend, precision) in have
    checker = Path(__file__).parent / "check_bundle.py"  # the shared contract checker, vendored
    run = subprocess.run([sys.executable, str(checker), str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout
    rows = {r["file"]: r["accuracy"] for r in json.loads((out / "report.json").read_text())["variants"] if r["accuracy"]}
    for name in ("model.int8-dynamic.onnx", "model.int8-static.onnx", "model.int8-dynamic.tflite", "model.int8-static.tflite"):
        assert rows[name]["ratio_to_fp32"] <= 0.40, name
        assert abs(rows[name]["rmse_change_pct"]) <= 5.0, (name, rows[name])
    for name in ("model.fp16.onnx", "model.fp16.tflite"):
        assert abs(rows[name]["rmse_change_pct"]) <= 0.5, (name, rows[name])
    assert rows["model.tflite"]["max_abs_vs_source"] <= 1e-5 / datasets.minmax(datasets.airline())[1][0]
