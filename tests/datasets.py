"""The real data the tests use: the airline-passengers series, shipped in tests/data/."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).parent / "data"
AIRLINE_CSV = DATA / "airline-passengers.csv"


def airline() -> np.ndarray:
    """Monthly passengers, 1949-1960 (144 values, thousands), as float32."""
    with AIRLINE_CSV.open(newline="") as fh:
        return np.array([float(row["Passengers"]) for row in csv.DictReader(fh)], np.float32)


def minmax(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sklearn MinMaxScaler's fit as (offset, scale): `scaled = (x - offset) * scale`."""
    series = np.asarray(series, np.float64).reshape(len(series), -1)
    lo, hi = series.min(axis=0), series.max(axis=0)
    return lo, 1.0 / (hi - lo)


def windows(series: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The seed recipe: X[i] = series[i:i+window], y[i] = series[i+window].

    `series` is [T] or [T, F]; X is [N, window, F] and y is [N, F].
    """
    s = np.asarray(series, np.float32)
    if s.ndim == 1:
        s = s[:, None]
    n = len(s) - window
    x = np.stack([s[i : i + window] for i in range(n)])
    return x, s[window:]


@dataclass
class SourceModel:
    """A trained source model and what its own framework predicts, for parity tests."""

    name: str
    framework: str  # "keras" or "torch"
    path: Path  # the saved file a user would hand to `edge-lstm export`
    windows: np.ndarray  # [N, W, F] float32 held-out windows, in the model's own units
    expected: np.ndarray  # [N, O] the framework's own prediction for `windows`
    reader_kwargs: dict = field(default_factory=dict)  # extra reader arguments (torch factory, ...)
    module: Any = None  # the live keras.Model / torch.nn.Module, for step-by-step oracles
