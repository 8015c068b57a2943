"""What each variant of a step model costs in accuracy and gains in size and speed.

One row per variant file (`evaluate_variants`), the rows of `report.json` and of the table
`edge-lstm export`/`verify` print:

- `max_abs_vs_source`: the largest difference from the source framework's own prediction on
  held-out windows, in sensor units (rolling the step model from zero state over each window);
- `rmse`, `mae`: one-step-ahead forecast error over a held-out series, in sensor units;
- `rmse_change_pct`: RMSE against the same backend's fp32 variant (else any fp32 variant);
- `bytes`, `ratio_to_fp32`: file size, and its ratio to the same backend's fp32 file;
- `p50_step_us`: median latency of one step at batch 1 on this machine, state carried;
- `outside_calibration`: for statically quantized variants, the share of held-out input
  values outside the range the calibration data covered. Static int8 clamps there, so a
  large share explains a large RMSE change (calibrate on data spanning what the device sees).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm.errors import ConfigError

STATIC_PRECISIONS = ("int8-static", "int16x8")


@dataclass(frozen=True)
class VariantReport:
    """One variant's row of the accuracy report (see the module docstring)."""

    file: str
    backend: str
    precision: str
    bytes: int
    ratio_to_fp32: float | None
    max_abs_vs_source: float | None
    rmse: float
    mae: float
    rmse_change_pct: float | None
    p50_step_us: float
    outside_calibration: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


OpenStep = Callable[[Path, str, str], Any]  # (file, backend, precision) -> engine with .step


def open_step(path: Path, backend: str, precision: str) -> Any:
    """The device runtime's engine for a variant file: OnnxStep or LiteRTStep, one thread."""
    if backend == "onnx":
        from edge_lstm.backends.onnx_backend import OnnxStep

        return OnnxStep(Path(path), precision=precision, source=str(path))
    if backend in ("litert", "tflite"):
        from edge_lstm.backends.litert_backend import LiteRTStep

        return LiteRTStep(Path(path), precision=precision)
    raise ConfigError(f"{path}: no engine for backend {backend!r} in the variant report")


def evaluate_variants(
    variants: Sequence[Any],
    *,
    series: np.ndarray,
    window: int | None,
    holdout_start: int = 0,
    target_columns: Sequence[int] | None = None,
    source_windows: np.ndarray | None = None,
    source_expected: np.ndarray | None = None,
    calibration: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    opener: OpenStep = open_step,
    latency_calls: int = 2000,
    progress: Callable[[str], None] | None = None,
) -> list[VariantReport]:
    """Measure every variant; return one `VariantReport` per variant, in the given order.

    `variants`: objects with `path`, `backend`, `precision` (e.g. `quantize.VariantFile`, or
    bundle `Variant`s). `series` [T, F] in sensor units; forecasts are scored for targets at
    rows >= max(holdout_start, window) (earlier rows only give context). With `window=W` each
    forecast re-runs the W preceding rows from zero state (the exact mode); `window=None`
    carries one stream over the series (the continuous mode). `target_columns` picks the
    series columns the outputs forecast (default: all, when outputs == features).
    `source_windows` [N, W, F] and `source_expected` [N, O], both in sensor units: the source
    framework's own prediction, for `max_abs_vs_source`. `calibration`: the (x, state) pairs
    static variants were calibrated on. `progress` is called with each file name first.
    """
    series = np.asarray(series, np.float32)
    if series.ndim == 1:
        series = series[:, None]
    first = max(holdout_start, window or 1)
    if first >= len(series):
        raise ConfigError(
            f"the held-out series has {len(series)} rows: too few to score forecasts after "
            f"row {first} (window {window}); give a longer series"
        )
    cal_lo = cal_hi = None
    if calibration:
        xs = np.concatenate([np.asarray(x, np.float32).reshape(1, -1) for x, _ in calibration])
        cal_lo, cal_hi = xs.min(axis=0), xs.max(axis=0)
    measured = []
    for v in variants:
        path = Path(v.path)
        if progress is not None:
            progress(path.name)
        engine = opener(path, v.backend, v.precision)
        targets = _target_columns(target_columns, engine, series)
        forecast = _forecasts(engine, series, window, first)
        truth = series[first:, targets]
        err = forecast - truth
        vs_source = None
        if source_windows is not None and source_expected is not None:
            got = _roll(engine, np.asarray(source_windows, np.float32))
            vs_source = float(np.abs(got - np.asarray(source_expected, np.float64)).max())
        outside = None
        if cal_lo is not None and v.precision in STATIC_PRECISIONS:
            used = series[first - (window or 1) :]
            outside = float(np.mean((used < cal_lo) | (used > cal_hi)))
        measured.append(
            dict(
                file=path.name,
                backend=v.backend,
                precision=v.precision,
                bytes=path.stat().st_size,
                max_abs_vs_source=vs_source,
                rmse=float(np.sqrt(np.mean(err**2))),
                mae=float(np.mean(np.abs(err))),
                p50_step_us=p50_step_us(engine, latency_calls),
                outside_calibration=outside,
            )
        )
    reports = []
    for row in measured:
        base = _fp32_of(measured, row["backend"])
        reports.append(
            VariantReport(
                ratio_to_fp32=None if base is None else row["bytes"] / base["bytes"],
                rmse_change_pct=None if base is None else 100.0 * (row["rmse"] / base["rmse"] - 1.0),
                **row,
            )
        )
    return reports


def p50_step_us(engine: Any, calls: int = 2000) -> float:
    """Median wall time of `engine.step` at batch 1, feeding the state back, after a warm-up."""
    x = np.zeros((1, engine.features), np.float32)
    state = np.zeros((1, engine.state_size), np.float32)
    for _ in range(max(calls // 10, 50)):
        _, state = engine.step(x, state)
        state = state.copy()
    times = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter_ns()
        _, out = engine.step(x, state)
        times[i] = time.perf_counter_ns() - t0
        state[...] = out
    return float(np.median(times) / 1e3)


def format_table(reports: Sequence[VariantReport], units: str = "") -> str:
    """The report as a fixed-width text table, one row per variant."""
    unit = f" [{units}]" if units else ""
    head = ("file", "bytes", "vs fp32", f"max|err| src{unit}", f"RMSE{unit}", f"MAE{unit}", "RMSE chg", "p50 us")
    rows = [head]
    for r in reports:
        rows.append(
            (
                r.file,
                f"{r.bytes:,}",
                "-" if r.ratio_to_fp32 is None else f"{100 * r.ratio_to_fp32:.1f}%",
                "-" if r.max_abs_vs_source is None else f"{r.max_abs_vs_source:.3g}",
                f"{r.rmse:.4g}",
                f"{r.mae:.4g}",
                "-" if r.rmse_change_pct is None else f"{r.rmse_change_pct:+.2f}%",
                f"{r.p50_step_us:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [
        f"{r.file}: {100 * r.outside_calibration:.0f}% of the held-out inputs lie outside the "
        "calibration range (static quantization clamps there: calibrate on data that spans it)"
        for r in reports
        if r.outside_calibration
    ]
    return "\n".join(lines + notes)


def _target_columns(columns: Sequence[int] | None, engine: Any, series: np.ndarray) -> list[int]:
    if columns is not None:
        return list(columns)
    if engine.outputs != series.shape[1]:
        raise ConfigError(
            f"the model forecasts {engine.outputs} value(s) from {series.shape[1]} column(s): "
            "say which columns are the targets (target_columns)"
        )
    return list(range(series.shape[1]))


def _forecasts(engine: Any, series: np.ndarray, window: int | None, first: int) -> np.ndarray:
    """Forecast of row t from the rows before it, for every t >= first."""
    if window is not None:
        windows = np.stack([series[t - window : t] for t in range(first, len(series))])
        return _roll(engine, windows)
    state = np.zeros((1, engine.state_size), np.float32)
    out = []
    for t in range(len(series) - 1):
        y, state = engine.step(series[t : t + 1], state)
        state = np.array(state, np.float32)
        if t + 1 >= first:
            out.append(np.array(y[0], np.float64))
    return np.stack(out)


def _roll(engine: Any, windows: np.ndarray) -> np.ndarray:
    """Step each window [N, W, F] from zero state (rows of one batch); the last forecast."""
    state = np.zeros((len(windows), engine.state_size), np.float32)
    y = None
    for t in range(windows.shape[1]):
        y, state = engine.step(np.ascontiguousarray(windows[:, t, :]), state)
        state = np.array(state, np.float32)  # engines may return views of their own buffers
    return np.array(y, np.float64)


def _fp32_of(rows: list[dict], backend: str) -> dict | None:
    same = [r for r in rows if r["precision"] == "fp32" and r["backend"] == backend]
    anyf = [r for r in rows if r["precision"] == "fp32"]
    return (same or anyf or [None])[0]
