"""Parity: does the bundle answer what the source framework answers on the same windows?

The source side runs the framework's own prediction (Keras `model.predict`, the PyTorch
module's forward). The bundle side rolls the step model from zero state over each window,
in sensor units, and is mapped back to the model's units for the comparison (the unit the
1e-5 criterion is stated in: fp32 rounding, not the size of the sensor values).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_lstm_export.scaler import Scaler


@dataclass(frozen=True)
class Parity:
    """How far one variant is from the source model's own prediction."""

    variant: str
    reference: str  # what it was compared with: "keras.predict", "torch.forward" or "weights (float64)"
    windows: int
    max_abs: float  # in the model's units
    rmse: float  # in the model's units
    max_abs_sensor: float  # in the sensor's units

    def as_dict(self) -> dict:
        return asdict(self)


def source_predict(framework: str, path: Path, windows: np.ndarray, reader_kwargs: dict) -> np.ndarray | None:
    """The framework's own prediction for `windows` [N, W, F] (model units), or None if the
    framework is not installed here."""
    if framework == "keras":
        try:
            import keras
        except ImportError:
            return None
        model = keras.saving.load_model(str(path), compile=False)
        return np.asarray(model.predict(windows, verbose=0), np.float64)
    if framework == "torch":
        try:
            from edge_lstm_export.readers.torch import predict_torch
        except ImportError:
            return None
        return np.asarray(predict_torch(path, windows, **reader_kwargs), np.float64)
    return None


def roll(step, windows_sensor: np.ndarray, state_size: int) -> np.ndarray:
    """Step from zero state over each window (rows in one batch); the last forecast."""
    state = np.zeros((len(windows_sensor), state_size), np.float32)
    y = None
    for t in range(windows_sensor.shape[1]):
        y, state = step(np.ascontiguousarray(windows_sensor[:, t, :], np.float32), state)
    return np.asarray(y, np.float64)


def compare(variant: str, reference: str, got_sensor: np.ndarray, want_model: np.ndarray, scaler: Scaler | None) -> Parity:
    """Parity figures for `got_sensor` (bundle output, sensor units) vs `want_model` (model units)."""
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
    )
