"""`edge-lstm export`: a trained model file becomes a checked bundle.

read (Keras / PyTorch) -> Stack -> scaler folded in -> bundle files -> parity against the
source framework's own predictions -> report.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_lstm.bundle import Bundle
from edge_lstm_export.bundle_writer import write_bundle
from edge_lstm_export.parity import Parity, compare, roll, source_predict
from edge_lstm_export.scaler import Scaler, ScalerError, fit_minmax, from_json, from_specs, read_csv_columns
from edge_lstm_export.stack import Stack, UnsupportedModelError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
TORCH_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")
HOLDOUT = 0.2


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

        stack = read_keras(path)
        if window is not None and stack.window not in (None, window):
            raise UnsupportedModelError(f"{path}: the model's input says window {stack.window}, --window says {window}")
        if window is not None and stack.window is None:
            stack = _with_window(stack, window)
        return stack, "keras", {}
    if suffix in TORCH_SUFFIXES or torch_factory:
        from edge_lstm_export.readers.torch import read_torch

        kwargs = {k: v for k, v in (("factory", torch_factory), ("features", features), ("window", window)) if v is not None}
        return read_torch(path, **kwargs), "torch", kwargs
    raise UnsupportedModelError(
        f"{path}: unknown model file type {suffix!r}; accepted: Keras {', '.join(KERAS_SUFFIXES)}, "
        f"PyTorch {', '.join(TORCH_SUFFIXES)} (TorchScript, or a state_dict with --torch-factory)"
    )


def _with_window(stack: Stack, window: int) -> Stack:
    from dataclasses import replace

    return replace(stack, window=window)


@dataclass
class ExportResult:
    """What `export` made and what it proved."""

    bundle: Path
    stack: Stack
    parity: list[Parity] = field(default_factory=list)
    accuracy: list = field(default_factory=list)  # variant_report.VariantReport rows, with --data
    latency_us: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def holdout_windows(data: np.ndarray, window: int) -> np.ndarray:
    """Sliding windows [N, W, F] over the last 20 % of `data` [T, F] (sensor units)."""
    start = max(0, int(len(data) * (1 - HOLDOUT)) - window)
    tail = data[start:]
    if len(tail) <= window:
        raise ScalerError(f"the data has {len(data)} rows: too few for windows of {window}")
    return np.stack([tail[i : i + window] for i in range(len(tail) - window)]).astype(np.float32)


def export_model(
    model: str | Path,
    out: str | Path,
    *,
    name: str | None = None,
    scaler: Scaler | None = None,
    scaler_specs: tuple[str, ...] = (),
    target_scaler_specs: tuple[str, ...] = (),
    fit_scaler: str | Path | None = None,
    feature_names: list[str] | None = None,
    target_names: list[str] | None = None,
    data: str | Path | None = None,
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
    """Export `model` to a bundle in `out` and check it against the source framework.

    The scaler comes from `scaler` (built), `scaler_specs` (`minmax:MIN,MAX` /
    `standard:MEAN,STD` per feature, or one JSON file path) or `fit_scaler` (a CSV: the seed's
    MinMaxScaler recipe); none of them means the model sees the values as they come.
    `data` (a CSV with a header; defaults to `fit_scaler`) supplies the held-out windows for
    parity; without it the parity windows are random values in the range mapped to [0, 1].
    """
    model = Path(model)
    stack, framework, reader_kwargs = read_model(model, torch_factory=torch_factory, features=features, window=window)
    if stack.window is None:
        raise UnsupportedModelError(
            f"{model}: the model does not say how many samples a window holds; pass --window W "
            "(the length of the windows it was trained on)"
        )
    if fit_scaler is not None:
        scaler, csv_names = fit_minmax(Path(fit_scaler), stack.features, stack.outputs,
                                       list(feature_names) if feature_names else None)
        feature_names = feature_names or csv_names
        data = data if data is not None else fit_scaler
    elif len(scaler_specs) == 1 and scaler_specs[0].lower().endswith(".json"):
        scaler = from_json(Path(scaler_specs[0]), stack.features, stack.outputs)
    elif scaler_specs:
        scaler = from_specs(list(scaler_specs), list(target_scaler_specs) or None, stack.features, stack.outputs)
    feature_names = feature_names or [f"x{i}" for i in range(stack.features)]
    target_names = target_names or (list(feature_names) if stack.outputs == stack.features else [f"y{i}" for i in range(stack.outputs)])
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
    import hashlib
    from dataclasses import replace

    stack = replace(stack, source={"framework": framework, "file": model.name,
                                   "sha256": hashlib.sha256(model.read_bytes()).hexdigest()})
    out = write_bundle(stack, out, name=name or model.stem, features=feature_names, targets=target_names,
                       scaler=scaler, cell=cell, baseline_windows=baseline_windows, units=units)
    result = ExportResult(bundle=out, stack=stack)

    if data is not None:
        _, series = read_csv_columns(Path(data), feature_names if feature_names[0] != "x0" else None)
        if series.shape[1] != stack.features:
            raise ScalerError(f"{data}: {series.shape[1]} numeric columns, the model reads {stack.features} features")
        sensor = holdout_windows(series, stack.window)
    else:
        series = None
        rng = np.random.default_rng(0)
        unit = rng.uniform(0.0, 1.0, (32, stack.window, stack.features))
        sensor = (unit / scaler.x_scale + scaler.x_offset if scaler else unit).astype(np.float32)
        result.notes.append("no --data: parity checked on 32 random windows")
    model_units = ((sensor - scaler.x_offset) * scaler.x_scale if scaler else sensor).astype(np.float32)

    want = source_predict(framework, model, model_units, reader_kwargs)
    ref_name = {"keras": "keras.predict", "torch": "torch.forward"}[framework]
    if want is None:
        from edge_lstm_export.emit_numpy import reference

        want = reference(stack).run_window(model_units)
        ref_name = "weights (float64)"
        result.notes.append(f"{framework} is not installed here: parity is against the file's weights in float64")

    device = scaler.fold(stack) if scaler else stack
    pairs = None
    if formats != ("onnx",) or quantize:
        pairs = _variants(device, out, feature_names, formats, quantize, calibration, data, progress, result)

    from edge_lstm.backends.registry import open_backend

    bundle = Bundle.open(out)
    for v in bundle.variants:
        engine = open_backend(bundle, v.backend, v.precision)
        got = roll(engine.step, sensor, bundle.state_size)
        key = f"{v.backend}/{v.precision}"
        result.parity.append(compare(key, ref_name, got, want, scaler))
        result.latency_us[key] = _p50_step_us(engine, bundle)
    if series is not None and len(bundle.variants) > 2:
        from edge_lstm_export.variant_report import evaluate_variants

        want_sensor = want / scaler.y_scale + scaler.y_offset if scaler else want
        result.accuracy = evaluate_variants(
            [v for v in bundle.variants if v.backend != "numpy"], series=series, window=stack.window,
            holdout_start=int(len(series) * (1 - HOLDOUT)), source_windows=sensor, source_expected=want_sensor,
            calibration=pairs, target_columns=_target_columns(feature_names, target_names),
        )
    write_report(result)
    return result


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
    if calibration is None and "static" in quantize and data is not None:
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
    path = result.bundle / "report.json"
    path.write_text(json.dumps({"variants": rows, "notes": result.notes}, indent=2) + "\n")
    return path
