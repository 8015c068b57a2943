"""Parity: does the bundle answer what the source framework answers on the same windows?

The source side runs the framework's own prediction (Keras `model.predict`, the PyTorch
module's forward). The bundle side rolls the step model from zero state over each window,
in sensor units, and is mapped back to the model's units for the comparison (the unit the
1e-5 criterion is stated in: fp32 rounding, not the size of the sensor values). The runtime's
exact mode is checked the same way, fed the held-out series one sample at a time.

An fp32 variant further than `PARITY_RTOL` times the output scale from the framework is a
wrong bundle: `check` raises `ParityError` and the export fails.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.errors import EdgeLstmError
from edge_lstm_export.scaler import Scaler
from edge_lstm_export.stack import Stack

#: fp32 variants must agree with the framework within this share of the output scale. fp32
#: rounding through a recurrent stack stays near 1e-6 of it; a missed layer, activation or
#: gate order is off by 1e-2 or more.
PARITY_RTOL = 1e-4
#: Outputs smaller than this (model units) are not used to shrink the tolerance further.
_SCALE_FLOOR = 1e-2


class ParityError(EdgeLstmError):
    """Raised when an fp32 variant of a freshly written bundle does not reproduce the source
    model: the bundle is wrong, so the export fails (exit 1) and leaves no bundle behind."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Parity:
    """How far one variant is from the source model's own prediction."""

    variant: str
    reference: str  # what it was compared with: "keras.predict", "torch.forward" or "weights (float64)"
    windows: int
    max_abs: float  # in the model's units
    rmse: float  # in the model's units
    max_abs_sensor: float  # in the sensor's units
    tolerance: float = float("nan")  # in the model's units; fp32 variants must stay within it

    @property
    def passed(self) -> bool:
        return bool(self.max_abs <= self.tolerance)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Reference:
    """The framework's own forecasts for the parity windows, or why there are none."""

    values: np.ndarray | None  # [N, O] model units
    name: str  # "keras.predict", "torch.forward"
    why_not: str = ""  # set when `values` is None


def source_predict(
    framework: str, source: Any, windows: np.ndarray, reader_kwargs: dict, stack: Stack
) -> Reference:
    """The framework's own forecast for `windows` [N, W, F] (model units), one row per window.

    `source` is the model file or the live model. A model that outputs a forecast per time
    step (`return_sequences=True` then Dense) gives its last step. `values` is None, with the
    reason, when the framework is not installed or cannot load or run the file.
    """
    if framework == "keras":
        return _keras_predict(source, windows, stack)
    try:
        from edge_lstm_export.readers.torch import predict_torch
    except ImportError as exc:  # pragma: no cover - the reader imports torch lazily
        return Reference(None, "torch.forward", f"torch is not installed here ({exc})")
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        return Reference(None, "torch.forward", f"torch is not installed here ({exc})")
    out = predict_torch(source, windows, stack=stack, **reader_kwargs)
    return Reference(_per_window(out, len(windows)), "torch.forward")


def _keras_predict(source: Any, windows: np.ndarray, stack: Stack) -> Reference:
    name = "keras.predict"
    try:
        import keras
    except ImportError as exc:
        return Reference(None, name, f"keras is not installed here ({exc})")
    uses_keras2 = any(
        act == "hard_sigmoid_keras2"
        for layer in (*stack.pre, *stack.recurrent, *stack.head)
        for act in (getattr(layer, "activation", ""), getattr(layer, "recurrent_activation", ""))
    )
    version = stack.source.get("keras_version", "")
    if uses_keras2 and not keras.__version__.startswith(("1.", "2.")):
        return Reference(None, name, (
            f"the file uses Keras {version or '2'}'s hard_sigmoid (clip(0.2x+0.5)), which Keras "
            f"{keras.__version__} would run as its own relu6(x+3)/6"
        ))
    if isinstance(source, (str, Path)):
        try:
            model = keras.saving.load_model(str(source), compile=False)
        except Exception as exc:  # noqa: BLE001 - any failure to load means no framework reference
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return Reference(None, name, f"Keras {keras.__version__} cannot load {Path(source).name} ({first})")
    else:
        model = source
    out = np.asarray(model.predict(windows, verbose=0), np.float64)
    if stack.source.get("sequence_output") and out.ndim == 3:
        out = out[:, -1]
    return Reference(_per_window(out, len(windows)), name)


def _per_window(out: np.ndarray, windows: int) -> np.ndarray:
    """[N, ...] -> [N, O]: a forward returning (N,) (`.squeeze()`) or (N, H, O) is one row per window."""
    out = np.asarray(out, np.float64)
    if out.ndim == 0 or out.shape[0] != windows:
        raise ParityError(
            f"the source model returned shape {list(out.shape)} for {windows} windows; expected one "
            "forecast per window (batch axis first)"
        )
    return out.reshape(windows, -1)


def roll(step, windows_sensor: np.ndarray, state_size: int) -> np.ndarray:
    """Step from zero state over each window (rows in one batch); the last forecast."""
    state = np.zeros((len(windows_sensor), state_size), np.float32)
    y = None
    for t in range(windows_sensor.shape[1]):
        y, state = step(np.ascontiguousarray(windows_sensor[:, t, :], np.float32), state)
    return np.asarray(y, np.float64)


def exact_mode(bundle: Any, series_sensor: np.ndarray, backend: str = "onnx") -> np.ndarray:
    """The runtime in exact mode fed `series_sensor` [T, F] one sample at a time: the forecast
    after each sample from the W-th on ([T - W + 1, O]), which must be the window model's."""
    from edge_lstm.forecaster import Runtime

    rt = Runtime.open(bundle, backend=backend, mode="exact")
    window = int(bundle.window)
    got = [rt.push("parity", x).values[0] for x in np.asarray(series_sensor, np.float32)]
    return np.asarray(got[window - 1 :], np.float64)


def compare(variant: str, reference: str, got_sensor: np.ndarray, want_model: np.ndarray, scaler: Scaler | None) -> Parity:
    """Parity figures for `got_sensor` (bundle output, sensor units) vs `want_model` (model units)."""
    got_sensor = np.asarray(got_sensor, np.float64).reshape(len(got_sensor), -1)
    want_model = np.asarray(want_model, np.float64).reshape(len(want_model), -1)
    if got_sensor.shape != want_model.shape:
        raise ParityError(
            f"{variant}: the bundle gives {got_sensor.shape[1]} value(s) per window for "
            f"{got_sensor.shape[0]} windows, {reference} gives {want_model.shape[1]} for "
            f"{want_model.shape[0]}: the step model does not compute what the source model outputs"
        )
    if scaler is not None:
        got_model = (got_sensor - scaler.y_offset) * scaler.y_scale
        want_sensor = want_model / scaler.y_scale + scaler.y_offset
    else:
        got_model, want_sensor = got_sensor, want_model
    diff = got_model - want_model
    return Parity(
        variant=variant,
        reference=reference,
        windows=int(len(want_model)),
        max_abs=float(np.abs(diff).max()),
        rmse=float(np.sqrt(np.mean(diff**2))),
        max_abs_sensor=float(np.abs(got_sensor - want_sensor).max()),
        tolerance=tolerance(want_model),
    )


def tolerance(want_model: np.ndarray) -> float:
    """`PARITY_RTOL` times the output scale (the largest |forecast|, model units)."""
    return PARITY_RTOL * max(float(np.abs(want_model).max(initial=0.0)), _SCALE_FLOOR)


def check(parity: list[Parity], hints: list[str], result: Any = None) -> None:
    """Raise ParityError naming every fp32 check beyond its tolerance, with `hints` on why."""
    failed = [p for p in parity if ("fp32" in p.variant) and not p.passed]
    if not failed:
        return
    lines = [
        f"  {p.variant} vs {p.reference} on {p.windows} windows: max abs {p.max_abs:.3g} > tolerance "
        f"{p.tolerance:.3g} ({PARITY_RTOL:g} x output scale)"
        for p in failed
    ]
    why = hints or [
        "the source model computes something the reader did not see (an operation in code between "
        "the layers, a layer it mistook for another); check the model's forward/call"
    ]
    raise ParityError(
        "the exported bundle does not reproduce the source model, so it was not written:\n"
        + "\n".join(lines)
        + "\nhint: "
        + "\nhint: ".join(why),
        result,
    )
