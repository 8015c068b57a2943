"""How far continuous mode drifts from exact mode on a user's own series (`edge-lstm verify --data`).

A model trained on W-sample windows has only ever seen states built from W samples starting
at zero. Continuous mode carries the state forever, which the model never saw in training;
for some models that is harmless, for others the forecasts wander off. Exact mode reproduces
the window model. Running both over the same series and comparing the forecasts after the
warm-up tells a user whether continuous mode (one row per stream, W times cheaper) is safe
for their model and data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


from edge_lstm.errors import ConfigError

#: Default verdict threshold: largest drift as a share of the target's range in the series.
TOLERANCE = 0.05


@dataclass(frozen=True)
class DriftReport:
    """Continuous-minus-exact forecast differences over a series, after exact mode's warm-up."""

    bundle: str
    backend: str
    precision: str
    window: int
    targets: list[str]
    samples: int
    first_step: int  # series index of the first compared forecast (the first exact one)
    diff: np.ndarray  # [steps, O] |continuous - exact| per compared step, sensor units
    span: np.ndarray  # [O] range of each target over the series and the forecasts (1 where flat)
    tolerance: float = TOLERANCE

    @property
    def steps(self) -> int:
        """Number of compared forecasts."""
        return int(self.diff.shape[0])

    @property
    def max_abs(self) -> np.ndarray:
        """Largest difference per target."""
        return self.diff.max(axis=0) if self.steps else np.full(len(self.targets), np.nan)

    @property
    def mean_abs(self) -> np.ndarray:
        """Mean difference per target."""
        return self.diff.mean(axis=0) if self.steps else np.full(len(self.targets), np.nan)

    @property
    def relative(self) -> np.ndarray:
        """Largest difference per target as a share of the target's range in the series."""
        return self.max_abs / self.span

    @property
    def worst_step(self) -> int:
        """Series index of the largest difference (any target)."""
        return self.first_step + int(np.argmax(self.diff.max(axis=1))) if self.steps else -1

    @property
    def safe(self) -> bool:
        """True when every target drifts by at most `tolerance` of its range."""
        rel = self.relative
        return bool(self.steps) and bool(np.all(rel <= self.tolerance))

    def segments(self, parts: int = 4) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
        """`(first, last, max_abs, mean_abs)` per consecutive stretch of the compared steps,
        so a drift that grows along the series shows."""
        out = []
        for chunk in np.array_split(np.arange(self.steps), min(parts, max(self.steps, 1))):
            if len(chunk):
                d = self.diff[chunk]
                first, last = self.first_step + int(chunk[0]), self.first_step + int(chunk[-1])
                out.append((first, last, d.max(axis=0), d.mean(axis=0)))
        return out

    def table(self) -> str:
        """The report as text: per target, per stretch of the series, and a verdict."""
        lines = [
            f"drift of continuous mode from exact mode: bundle {self.bundle} "
            f"({self.backend} {self.precision}), window {self.window}",
            f"series: {self.samples} samples; compared the {self.steps} forecasts from sample {self.first_step} on "
            f"(the first {self.first_step} are exact mode's warm-up)",
        ]
        if not self.steps:
            lines.append(f"nothing to compare: the series needs more than {self.window - 1} samples")
            return "\n".join(lines)
        width = max(8, *(len(t) for t in self.targets))
        lines.append(f"{'target':<{width}}  {'max abs':>12}  {'mean abs':>12}  {'max / range':>11}")
        for name, mx, mean, rel in zip(self.targets, self.max_abs, self.mean_abs, self.relative):
            lines.append(f"{name:<{width}}  {mx:>12.6g}  {mean:>12.6g}  {rel:>10.2%}")
        lines.append(f"{'samples':<{width}}  {'max abs':>12}  {'mean abs':>12}   (all targets)")
        for first, last, mx, mean in self.segments():
            lines.append(f"{f'{first}-{last}':<{width}}  {mx.max():>12.6g}  {mean.mean():>12.6g}")
        lines.append(f"largest difference at sample {self.worst_step}")
        lines.append(verdict(self.summary()))
        return "\n".join(lines)

    def summary(self, series: str = "") -> dict[str, Any]:
        """The verdict and its figures as JSON-ready values (export keeps it in report.json)."""
        return {
            "series": series, "samples": self.samples, "backend": self.backend, "precision": self.precision,
            "window": self.window, "targets": list(self.targets),
            "max_abs": [float(v) for v in self.max_abs] if self.steps else [],
            "max_relative": [float(v) for v in self.relative] if self.steps else [],
            "tolerance": self.tolerance, "safe": self.safe,
        }


def continuous_mode_warning(summary: dict[str, Any] | None) -> str | None:
    """What to tell a user about to run continuous mode, from a drift summary (`summary()`, or
    report.json's "drift"): None when it stays within tolerance (or was not measured), else
    the measured drift and the advice."""
    if not summary or summary.get("safe", True):
        return None
    rel = summary.get("max_relative") or []
    if not rel:
        return "continuous mode could not be compared with exact mode (too short a series): use mode = \"exact\""
    worst = max(range(len(rel)), key=lambda i: rel[i])
    target = summary["targets"][worst] if worst < len(summary.get("targets", [])) else f"target {worst}"
    on = f"{summary['series']}, " if summary.get("series") else ""
    return (
        f"continuous mode drifts from exact mode by up to {rel[worst]:.0%} of the range of {target} "
        f"({on}{summary.get('samples', '?')} samples; tolerance {summary.get('tolerance', TOLERANCE):.0%}): "
        "its forecasts are not the model's; use mode = \"exact\""
    )


def verdict(summary: dict[str, Any]) -> str:
    """One line for a drift summary: `warning: ...` (see `continuous_mode_warning`) or why
    continuous mode is safe."""
    warning = continuous_mode_warning(summary)
    if warning:
        return f"warning: {warning}"
    on = f" on {summary['series']}" if summary.get("series") else ""
    return (
        f"verdict: continuous mode stays within {summary.get('tolerance', TOLERANCE):.0%} of each target's range{on}: "
        "safe for this model and data (it steps 1 row per sample instead of W)"
    )


def recorded(bundle: Any) -> dict[str, Any] | None:
    """The drift summary export measured for `bundle` (a Bundle or its directory; report.json's
    "drift"), or None when it was exported without a series (`edge-lstm verify BUNDLE --data
    CSV` measures it)."""
    try:
        doc = json.loads((Path(getattr(bundle, "path", bundle)) / "report.json").read_text())
    except (OSError, ValueError):
        return None
    drift = doc.get("drift") if isinstance(doc, dict) else None
    return drift if isinstance(drift, dict) else None


def drift_report(
    bundle: Any,
    series: np.ndarray,
    *,
    backend: str = "auto",
    precision: str | None = None,
    threads: int = 1,
    tolerance: float = TOLERANCE,
) -> DriftReport:
    """Run `series` ([T, F] in the bundle's feature order, sensor units) through exact and
    continuous mode and compare their one-step forecasts after the warm-up."""
    from edge_lstm.forecaster import Runtime

    exact = Runtime.open(bundle, backend=backend, precision=precision, threads=threads, mode="exact")
    cont = Runtime.open(exact.bundle, backend=backend, precision=precision, threads=threads, mode="continuous")
    nf = len(exact.features)
    series = np.asarray(series, np.float64)
    if series.ndim == 1 and nf == 1:
        series = series[:, None]
    if series.ndim != 2 or series.shape[1] != nf:
        raise ConfigError(
            f"the series has shape {series.shape}; the model reads {nf} feature(s) {exact.features} per sample"
        )
    if not np.isfinite(series).all():
        raise ConfigError("the series holds NaN or infinite values; clean it first")
    w = int(exact.window)
    e_out, c_out = [], []
    for row in series:
        e_out.append(exact.push("drift", row).values[0])
        c_out.append(cont.push("drift", row).values[0])
    first = w - 1
    diff = np.abs(np.array(c_out, np.float64) - np.array(e_out, np.float64))[first:]
    exact_y = np.array(e_out, np.float64).reshape(len(series), -1)
    span = exact_y.max(axis=0) - exact_y.min(axis=0) if len(series) else np.zeros(exact_y.shape[1])
    if set(exact.targets) <= set(exact.features) and len(series):
        target_series = series[:, [exact.features.index(t) for t in exact.targets]]
        span = np.maximum(span, target_series.max(axis=0) - target_series.min(axis=0))
    span = np.where(span > 0, span, 1.0)  # a flat series: judge in absolute units
    return DriftReport(
        bundle=exact.bundle.name,
        backend=exact.backend_name,
        precision=exact.precision,
        window=w,
        targets=list(exact.targets),
        samples=len(series),
        first_step=first,
        diff=diff.reshape(-1, len(exact.targets)),
        span=np.asarray(span, np.float64),
        tolerance=tolerance,
    )
