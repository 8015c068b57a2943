"""Export: a trained model (a file, or the live Keras model / PyTorch module) becomes a checked bundle.

read (Keras / PyTorch) -> Stack -> scaler folded in -> bundle files -> parity against the
source framework's own predictions (every variant rolled over the held-out windows, and the
runtime's exact mode fed the held-out series) -> report.json.

The bundle is written into a temporary folder beside `out` and renamed to `out` only when
every fp32 variant reproduces the source model: a failed export (a reader error, a parity
failure, an interrupted run) never leaves a half-written or wrong bundle where the runtime
would open it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.bundle import Bundle
from edge_lstm.errors import ConfigError
from edge_lstm_export.bundle_writer import write_bundle
from edge_lstm_export.parity import Parity, Reference, check, compare, exact_mode, roll, source_predict
from edge_lstm_export.quiet import framework_chatter_filtered
from edge_lstm_export.scaler import Scaler, ScalerError, fit_minmax, from_json, from_specs, read_csv_columns
from edge_lstm_export.stack import Stack, UnsupportedModelError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
TORCH_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")
HOLDOUT = 0.2
#: Windows checked when no --data is given: a random series in the range the scaler maps to [0, 1].
RANDOM_WINDOWS = 48


def read_model(path: str | Path, *, torch_factory: str | None = None, features: int | None = None,
               window: int | None = None) -> tuple[Stack, str, dict]:
    """Read a model file with the reader its suffix calls for: (stack, framework, reader kwargs)."""
    path = Path(path)
    if not path.exists():
        raise UnsupportedModelError(f"{path}: no such file; give the path of a .keras, .h5 or PyTorch .pt file")
    suffix = path.suffix.lower()
    if suffix in KERAS_SUFFIXES:
        try:
            from edge_lstm_export.readers.keras import read_keras
        except ImportError as exc:
            raise UnsupportedModelError(
                f"{path}: reading Keras files needs {exc.name}, which is not installed: pip install 'edge-lstm[export]'"
            ) from None
        return _keras_window(read_keras(path), window, str(path)), "keras", {}
    if suffix in TORCH_SUFFIXES or torch_factory:
        from edge_lstm_export.readers.torch import read_torch

        kwargs = {k: v for k, v in (("factory", torch_factory), ("features", features), ("window", window)) if v is not None}
        return read_torch(path, **kwargs), "torch", kwargs
    raise UnsupportedModelError(
        f"{path}: unknown model file type {suffix!r}; accepted: Keras {', '.join(KERAS_SUFFIXES)}, "
        f"PyTorch {', '.join(TORCH_SUFFIXES)} (TorchScript, or a state_dict with --torch-factory)"
    )


def _keras_window(stack: Stack, window: int | None, where: str) -> Stack:
    if window is not None and stack.window not in (None, window):
        raise UnsupportedModelError(f"{where}: the model's input says window {stack.window}, --window says {window}")
    return replace(stack, window=window) if window is not None and stack.window is None else stack


def _read_live(model: Any, *, features: int | None, window: int | None) -> tuple[Stack, str, dict]:
    """Read a live keras.Model (saved to a temporary .keras file and read back: the same reader
    as for files) or torch.nn.Module."""
    kinds = {cls.__module__.split(".")[0] for cls in type(model).__mro__}
    if "torch" in kinds:
        from edge_lstm_export.readers.torch import read_torch

        kwargs = {k: v for k, v in (("features", features), ("window", window)) if v is not None}
        return read_torch(model, **kwargs), "torch", kwargs
    if "keras" in kinds or "tf_keras" in kinds:
        from edge_lstm_export.readers.keras import read_keras

        with tempfile.TemporaryDirectory(prefix="edge-lstm-export-") as tmp:
            path = Path(tmp) / f"{getattr(model, 'name', None) or 'model'}.keras"
            model.save(path)
            stack = read_keras(path)
        return _keras_window(stack, window, "the Keras model"), "keras", {}
    raise UnsupportedModelError(
        f"export_model got a {type(model).__module__}.{type(model).__name__}; expected a model file path, "
        "a keras.Model or a torch.nn.Module"
    )


@dataclass
class ExportResult:
    """What `export` made and what it proved."""

    bundle: Path
    stack: Stack
    parity: list[Parity] = field(default_factory=list)
    accuracy: list = field(default_factory=list)  # variant_report.VariantReport rows, with --data
    latency_us: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    drift: dict | None = None  # edge_lstm.drift summary of continuous vs exact mode, with --data


def holdout_windows(data: np.ndarray, window: int) -> np.ndarray:
    """Sliding windows [N, W, F] over the last 20 % of `data` [T, F] (sensor units)."""
    return sliding_windows(holdout_tail(data, window), window)


def holdout_tail(data: np.ndarray, window: int) -> np.ndarray:
    """The rows the held-out windows cover: the last 20 % of `data`, plus W-1 rows of context."""
    start = max(0, int(len(data) * (1 - HOLDOUT)) - window)
    tail = data[start:]
    if len(tail) <= window:
        raise ScalerError(f"the data has {len(data)} rows: too few for windows of {window}")
    return tail


def sliding_windows(series: np.ndarray, window: int) -> np.ndarray:
    """Every window of `series` [T, F] that has a next row: [T - W, W, F], float32."""
    return np.stack([series[i : i + window] for i in range(len(series) - window)]).astype(np.float32)


@framework_chatter_filtered()
def export_model(
    model: Any,
    out: str | Path,
    *,
    name: str | None = None,
    scaler: Scaler | None = None,
    scaler_specs: tuple[str, ...] = (),
    target_scaler_specs: tuple[str, ...] = (),
    fit_scaler: str | Path | None = None,
    feature_names: list[str] | None = None,
    target_names: list[str] | None = None,
    data: str | Path | np.ndarray | None = None,
    torch_factory: str | None = None,
    features: int | None = None,
    window: int | None = None,
    cell: str = "matmul",
    baseline_windows: tuple[int, ...] = (),
    formats: tuple[str, ...] = ("onnx",),
    quantize: tuple[str, ...] = (),
    calibration: str | Path | None = None,
    progress: bool = False,
    units: dict[str, str] | None = None,
) -> ExportResult:
    """Export `model` to a bundle in `out` and prove it matches the source framework.

    `model` is a file (`.keras`, `.h5`, TorchScript `.pt`, or a state_dict with `torch_factory`)
    or the live `keras.Model` / `torch.nn.Module` right after training. `window` is the training
    window when the model does not record it (PyTorch). The scaler comes from `scaler` (a
    `Scaler`, e.g. `Scaler("minmax", x_min, 1 / (x_max - x_min), y_min, 1 / (y_max - y_min))`), `scaler_specs`
    (`minmax:MIN,MAX` / `standard:MEAN,STD` per feature, or one JSON file path) or `fit_scaler`
    (a CSV: the classic MinMaxScaler recipe); none of them means the model sees the values as
    they come. `data` (a CSV with a header, or an array [T, F] in sensor units; defaults to
    `fit_scaler`) supplies the held-out series for parity; without it parity runs on a random
    series in the range the scaler maps to [0, 1]. `formats`: "onnx", "tflite"; `quantize`:
    "dynamic", "static", "fp16", "int16x8".

    Raises `UnsupportedModelError` (exit 2) for a model that cannot be streamed, `ScalerError`
    (exit 2) for bad scaling options, and `ParityError` (exit 1) when an fp32 variant does not
    reproduce the source model; nothing is written at `out` then.
    """
    out = Path(out)
    _check_out(out)
    if isinstance(model, (str, os.PathLike)):
        source: Any = Path(model)
        stack, framework, reader_kwargs = read_model(source, torch_factory=torch_factory, features=features, window=window)
        label, default_name = source.name, source.stem
        sha = hashlib.sha256(source.read_bytes()).hexdigest()
    else:
        if torch_factory is not None:
            raise ConfigError("torch_factory= is for a state_dict file; a live model was given, so drop it")
        source = model
        stack, framework, reader_kwargs = _read_live(model, features=features, window=window)
        label = f"the live {type(model).__name__}"
        default_name = str(getattr(model, "name", "") or type(model).__name__)
        sha = ""
    if stack.window is None:
        raise UnsupportedModelError(
            f"{label}: the model does not say how many samples a window holds; pass --window W "
            "(window=W in Python: the length of the windows it was trained on)"
        )
    scaler, feature_names, target_names, data = _scaling(
        stack, scaler, scaler_specs, target_scaler_specs, fit_scaler, feature_names, target_names, data, units)
    stack = replace(stack, source={**stack.source, "framework": framework, "file": label if sha else "",
                                   "sha256": sha})
    if not sha:
        stack.source.pop("sha256")
    hints = list(stack.source.pop("hints", []))

    kept = () if baseline_windows or not sha else kept_baselines(out, sha)
    notes = [f"kept the whole-window baselines (W = {', '.join(map(str, kept))}) of the previous export of "
             "this model into this directory, rebuilt"] if kept else []
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        result = _write_and_check(stack, framework, source, reader_kwargs, work, scaler=scaler,
                                  name=name or default_name, feature_names=feature_names, target_names=target_names,
                                  data=data, cell=cell, baseline_windows=baseline_windows or kept, formats=formats,
                                  quantize=quantize, calibration=calibration, progress=progress, notes=notes,
                                  units=units)
        check(result.parity, hints, result)
        _replace_dir(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    result.bundle = out
    return result


def _check_out(out: Path) -> None:
    """`out` may be new, empty, or an old bundle (replaced); never someone's other folder."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file())):
        raise ConfigError(
            f"--out {out}: exists and is not an edge-lstm bundle (no manifest.json); export replaces only "
            "a bundle or an empty folder: choose a new path"
        )


def _replace_dir(new: Path, out: Path) -> None:
    """Move the finished bundle `new` to `out`, replacing an old bundle there."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(new, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, out)


def _scaling(stack: Stack, scaler, scaler_specs, target_scaler_specs, fit_scaler, feature_names, target_names, data,
             units):
    """The scaler and the feature/target names, from whichever option gave them."""
    if fit_scaler is not None:
        scaler, csv_names = fit_minmax(Path(fit_scaler), stack.features, stack.outputs,
                                       list(feature_names) if feature_names else None,
                                       list(target_names) if target_names else None)
        feature_names = feature_names or csv_names
        data = data if data is not None else fit_scaler
    elif len(scaler_specs) == 1 and scaler_specs[0].lower().endswith(".json"):
        scaler = from_json(Path(scaler_specs[0]), stack.features, stack.outputs)
    elif scaler_specs:
        scaler = from_specs(list(scaler_specs), list(target_scaler_specs) or None, stack.features, stack.outputs)
    elif scaler is not None and not isinstance(scaler, Scaler):
        raise ScalerError(
            f"scaler: a {type(scaler).__name__} was given; pass an edge_lstm_export.scaler.Scaler, "
            "scaler_specs=('minmax:MIN,MAX', ...) or fit_scaler='data.csv'"
        )
    feature_names = list(feature_names or [f"x{i}" for i in range(stack.features)])
    target_names = list(target_names or (feature_names if stack.outputs == stack.features
                                         else [f"y{i}" for i in range(stack.outputs)]))
    for what, names, want in (("--feature-names", feature_names, stack.features), ("--target-names", target_names, stack.outputs)):
        if len(names) != want:
            raise ScalerError(f"{what}: {len(names)} names given, the model has {want}")
    for what, arr, want in (("x", getattr(scaler, "x_scale", None), stack.features), ("y", getattr(scaler, "y_scale", None), stack.outputs)):
        if arr is not None and len(arr) != want:
            raise ScalerError(f"scaler: {len(arr)} {what} scales given, the model has {want} {'inputs' if what == 'x' else 'outputs'}")
    unknown = sorted(set(units or {}) - set(target_names))
    if unknown:
        raise ScalerError(f"--unit: {unknown} are not targets of this model ({target_names}); "
                          f"e.g. --unit {target_names[0]}=UNIT")
    return scaler, feature_names, target_names, data


def _series(data, feature_names: list[str], stack: Stack, scaler: Scaler | None, notes: list[str]) -> tuple[np.ndarray, bool]:
    """The parity series [T, F] in sensor units, and whether it is real data."""
    if data is None:
        rng = np.random.default_rng(0)
        unit = rng.uniform(0.0, 1.0, (RANDOM_WINDOWS + stack.window, stack.features))
        notes.append(f"no --data: parity checked on {RANDOM_WINDOWS} windows of a random series")
        return (unit / scaler.x_scale + scaler.x_offset if scaler else unit).astype(np.float32), False
    if isinstance(data, np.ndarray):
        series = np.asarray(data, np.float64)
        series = series[:, None] if series.ndim == 1 else series
        where = "data"
    else:
        _, series = read_csv_columns(Path(data), feature_names if feature_names[0] != "x0" else None)
        where = str(data)
    if series.ndim != 2 or series.shape[1] != stack.features:
        raise ScalerError(f"{where}: {series.shape[-1]} columns, the model reads {stack.features} features")
    return series, True


def _write_and_check(stack: Stack, framework: str, source: Any, reader_kwargs: dict, work: Path, *, scaler,
                     name, feature_names, target_names, data, cell, baseline_windows, formats, quantize,
                     calibration, progress, notes, units) -> ExportResult:
    write_bundle(stack, work, name=name, features=feature_names, targets=target_names,
                 scaler=scaler, cell=cell, baseline_windows=baseline_windows, units=units)
    result = ExportResult(bundle=work, stack=stack, notes=list(notes))
    series, real = _series(data, feature_names, stack, scaler, result.notes)
    tail = holdout_tail(series, stack.window) if real else series
    sensor = sliding_windows(tail, stack.window)
    model_units = ((sensor - scaler.x_offset) * scaler.x_scale if scaler else sensor).astype(np.float32)

    ref = source_predict(framework, source, model_units, reader_kwargs, stack)
    if ref.values is None:
        from edge_lstm_export.emit_numpy import reference

        result.notes.append(f"{ref.why_not or framework + ' is not available'}: parity is against the file's "
                            "weights in float64 (this checks the emitters, not the reader)")
        ref = Reference(reference(stack).run_window(model_units), "weights (float64)")
    want = ref.values

    device = scaler.fold(stack) if scaler else stack
    pairs = None
    if formats != ("onnx",) or quantize:
        pairs = _variants(device, work, feature_names, formats, quantize, calibration, data if real else None,
                          progress, result)

    from edge_lstm.backends.registry import open_backend

    bundle = Bundle.open(work)
    for v in bundle.variants:
        engine = open_backend(bundle, v.backend, v.precision)
        got = roll(engine.step, sensor, bundle.state_size)
        key = f"{v.backend}/{v.precision}"
        result.parity.append(compare(key, ref.name, got, want, scaler))
        result.latency_us[key] = _p50_step_us(engine, bundle)
    # The device's exact mode, fed the series one sample at a time, must give the same forecasts.
    runtime = exact_mode(bundle, tail[: len(sensor) + stack.window - 1])
    result.parity.append(compare("runtime exact mode (onnx/fp32)", ref.name, runtime, want, scaler))
    columns = _target_columns(feature_names, target_names)
    if real and len(bundle.variants) > 2 and columns is None and stack.outputs != stack.features:
        result.notes.append("held-out accuracy of the variants not scored: name the data's target columns with "
                            "--target-names (the model forecasts values that are not its input columns)")
    elif real and len(bundle.variants) > 2:
        from edge_lstm_export.variant_report import evaluate_variants

        want_sensor = want / scaler.y_scale + scaler.y_offset if scaler else want
        result.accuracy = evaluate_variants(
            [v for v in bundle.variants if v.backend != "numpy"], series=series, window=stack.window,
            holdout_start=int(len(series) * (1 - HOLDOUT)), source_windows=sensor, source_expected=want_sensor,
            calibration=pairs, target_columns=columns,
        )
    if real:
        from edge_lstm.drift import drift_report

        result.drift = drift_report(bundle, series).summary(
            Path(data).name if isinstance(data, (str, os.PathLike)) else "data")
    write_report(result)
    return result


def kept_baselines(out: Path, source_sha256: str) -> tuple[int, ...]:
    """The baseline windows of the bundle already in `out`, when it was exported from the same
    model file: re-exporting a model (say, to add quantized variants) keeps what `bench`
    compares against instead of silently dropping it."""
    try:
        previous = json.loads((out / "manifest.json").read_text())
        if previous.get("source", {}).get("sha256") != source_sha256:
            return ()
        return tuple(sorted({int(b["window"]) for b in previous.get("baselines", [])}))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return ()


def _target_columns(features: list[str], targets: list[str]) -> list[int] | None:
    if set(targets) <= set(features):
        return [features.index(t) for t in targets]
    return None


def _variants(device: Stack, out: Path, feature_names, formats, quantize, calibration, data, progress,
              result: "ExportResult"):
    """TFLite and quantized variants, listed in the manifest; returns the calibration pairs."""
    from edge_lstm_export.bundle_writer import add_variant
    from edge_lstm_export.calibration import calibration_pairs, read_calibration_csv
    from edge_lstm_export.quantize import make_variants

    pairs = None
    if calibration is None and "static" in quantize and isinstance(data, (str, Path)):
        calibration = data
        result.notes.append(f"static quantization calibrated on {Path(data).name} (no --calibration given)")
    if calibration is not None:
        names = feature_names if feature_names[0] != "x0" else None
        cal = read_calibration_csv(Path(calibration), names, features=device.features, window=device.window)
        pairs = calibration_pairs(device, cal, window=device.window, progress=progress, source=str(calibration))
    made = make_variants(device, out, formats=formats, quantize=quantize, pairs=pairs)
    for f in made.files:
        add_variant(out, f.path, backend=f.backend, precision=f.precision)
    result.notes.extend(made.notes)
    return pairs


def _p50_step_us(engine, bundle: Bundle, calls: int = 2000) -> float:
    x = np.zeros((1, len(bundle.features)), np.float32)
    s = np.zeros((1, bundle.state_size), np.float32)
    times = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter_ns()
        engine.step(x, s)
        times[i] = time.perf_counter_ns() - t0
    return float(np.median(times[calls // 5 :]) / 1e3)


def write_report(result: ExportResult) -> Path:
    """report.json: parity, accuracy, sizes and latency for every variant (also read by `inspect`)."""
    bundle = Bundle.open(result.bundle)
    accuracy = {a.file: a.as_dict() for a in result.accuracy}
    rows = []
    for v in bundle.variants:
        key = f"{v.backend}/{v.precision}"
        parity = next((p for p in result.parity if p.variant == key), None)
        rows.append({"file": v.file, "backend": v.backend, "precision": v.precision, "bytes": v.bytes,
                     "parity": parity.as_dict() if parity else None, "p50_step_us": result.latency_us.get(key),
                     "accuracy": accuracy.get(v.file)})
    runtime = [p.as_dict() for p in result.parity if p.variant.startswith("runtime")]
    path = result.bundle / "report.json"
    doc = {"variants": rows, "runtime": runtime, "notes": result.notes}
    if result.drift is not None:
        doc["drift"] = result.drift  # read by inspect, run and demo (edge_lstm.drift.recorded)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
