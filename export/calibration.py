"""Calibration data for quantizing a step model: realistic (x, state) pairs.

A step model's inputs are a sample *and the recurrent state*, so calibrating on samples alone
says nothing about the range of h and c. We roll the fp32 model over a calibration series the
way the runtime will, and record the state each step receives:

- `window=W` (a window-trained model, the runtime's `exact` mode): every window of W samples
  is rolled from zero state, all windows as rows of one batch, so the pairs hold the states
  after 0..W-1 samples, as the model saw in training and sees in exact mode;
- `window=None` (`continuous` mode): one stream carried from zero state over the whole series.

Then at most `max_pairs` of them, evenly spaced, are kept (deterministic: the same series
gives the same calibration).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import click
import numpy as np
from edge_lstm_export.scaler import read_csv_columns
from edge_lstm_export.stack import Stack

from edge_lstm.errors import ConfigError

Progress = Callable[[int, int], None]  # (steps done, steps in all)


class StepEngine(Protocol):
    """Anything with the step signature (NumpyStep, LiteRTStep, the ONNX backend)."""

    state_size: int

    def step(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def calibration_pairs(
    model: Stack | StepEngine,
    series: np.ndarray,
    *,
    window: int | None,
    max_pairs: int = 1000,
    progress: bool | Progress = False,
    source: str = "calibration data",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Roll the fp32 `model` over `series` [T, F] (sensor units) and return up to `max_pairs`
    (x[1,F], state[1,S]) float32 pairs, the inputs the step model receives.

    `model` is a Stack (stepped by the float32 NumPy reference) or a step engine. `progress`
    is True for a click progress bar on stderr, or a callback `(done, total)`. `source` names
    the data in error messages (e.g. the CSV path).
    """
    engine = _float32_engine(model)
    features = getattr(engine, "features", None)
    series = check_series(series, features=features, min_rows=_min_rows(window), source=source)
    if window is None:
        xs = series[:, None, :]  # one stream, T steps
    else:
        xs = np.stack([series[i : i + window] for i in range(len(series) - window + 1)], axis=1)
    steps, rows = xs.shape[0], xs.shape[1]
    state = np.zeros((rows, engine.state_size), np.float32)
    x_seen = np.empty((steps, rows, series.shape[1]), np.float32)
    s_seen = np.empty((steps, rows, engine.state_size), np.float32)
    with _ticker(steps, progress) as tick:
        for t in range(steps):
            x_seen[t], s_seen[t] = xs[t], state
            _, state = engine.step(xs[t], state)
            state = np.asarray(state, np.float32)
            tick()
    x_all = x_seen.reshape(-1, series.shape[1])
    s_all = s_seen.reshape(-1, engine.state_size)
    keep = np.unique(np.linspace(0, len(x_all) - 1, min(max_pairs, len(x_all))).round().astype(int))
    return [(x_all[i : i + 1].copy(), s_all[i : i + 1].copy()) for i in keep]


def check_series(
    series: np.ndarray, *, features: int | None, min_rows: int, source: str = "calibration data"
) -> np.ndarray:
    """`series` as float32 [T, F]; ConfigError naming `source` if it is the wrong width, holds
    NaN/inf, or has fewer than `min_rows` rows."""
    try:
        arr = np.asarray(series, np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: not a numeric table ({exc})") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ConfigError(f"{source}: expected rows of samples [T, F], got an array of shape {arr.shape}")
    if features is not None and arr.shape[1] != features:
        raise ConfigError(
            f"{source}: {arr.shape[1]} value(s) per row, the model reads {features}; "
            "give one column per model input feature"
        )
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        raise ConfigError(
            f"{source}: row {int(bad[0]) + 1} (of {bad.size} bad row(s)) holds NaN or inf; "
            "fill or drop missing values before calibrating"
        )
    if len(arr) < min_rows:
        raise ConfigError(
            f"{source}: {len(arr)} row(s), calibration needs at least {min_rows} "
            "(one window, and preferably a few hundred rows of typical data)"
        )
    return arr.astype(np.float32)


def read_calibration_csv(
    path: str | Path, columns: list[str] | None, *, features: int, window: int | None = None
) -> np.ndarray:
    """The calibration series from the CSV `path` (header row first): the named `columns`, or
    its numeric columns, as float32 [T, F]. Errors (ConfigError, exit 2) name the file and the
    problem: missing column, a non-numeric value, NaN, the wrong column count, too few rows."""
    _, data = read_csv_columns(Path(path), list(columns) if columns else None)
    return check_series(data, features=features, min_rows=_min_rows(window), source=str(path))


def _min_rows(window: int | None) -> int:
    return 2 if window is None else window + 1


def _float32_engine(model: Stack | StepEngine) -> StepEngine:
    if isinstance(model, Stack):
        from edge_lstm_export.emit_numpy import reference

        return reference(model, np.float32)
    return model


@contextmanager
def _ticker(total: int, progress: bool | Progress) -> Iterator[Callable[[], None]]:
    """A `tick()` that advances a click progress bar, calls a callback, or does nothing."""
    if progress is True:
        with click.progressbar(length=total, label="calibrating", file=sys.stderr) as bar:
            yield lambda: bar.update(1)
    elif callable(progress):
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            progress(done, total)

        yield tick
    else:
        yield lambda: None
