"""Input/output scaling the model was trained with, folded into the step graph at export.

`scaled = (x - offset) * scale` on the way in and `y = scaled_y / scale + offset` on the way
out, per feature and per target. MinMax (sklearn's MinMaxScaler, the seed recipe) and
standard scaling are both this affine form, so the manifest records one shape for both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge_lstm.csvfile import read_columns
from edge_lstm.errors import ConfigError

if TYPE_CHECKING:
    from edge_lstm_export.stack import Stack


class ScalerError(ConfigError, ValueError):
    """Raised when a scaler spec, file or CSV cannot give one scale per feature/target."""


@dataclass(frozen=True)
class Scaler:
    """Per-feature and per-target affine scaling (see the module docstring)."""

    kind: str
    x_offset: np.ndarray
    x_scale: np.ndarray
    y_offset: np.ndarray
    y_scale: np.ndarray

    def fold(self, stack: "Stack") -> "Stack":
        """`stack` reading and writing sensor units: this scaling folded into its weights."""
        return stack.with_scaling(self.x_offset, self.x_scale, self.y_offset, self.y_scale)

    def manifest(self) -> dict:
        """The manifest's `scaler` entry: `scaled = (x - x_min) * x_scale` for every kind."""
        as_list = lambda a: [float(v) for v in a]  # noqa: E731
        return {
            "kind": self.kind,
            "x_min": as_list(self.x_offset),
            "x_scale": as_list(self.x_scale),
            "y_min": as_list(self.y_offset),
            "y_scale": as_list(self.y_scale),
        }


def _affine(kind: str, a: float, b: float, where: str) -> tuple[float, float]:
    if kind == "minmax":
        if not b > a:
            raise ScalerError(f"{where}: minmax needs min < max, got min={a} max={b}")
        return a, 1.0 / (b - a)
    if kind == "standard":
        if not b > 0:
            raise ScalerError(f"{where}: standard needs std > 0, got std={b}")
        return a, 1.0 / b
    raise ScalerError(f"{where}: unknown scaler kind {kind!r}; use minmax:MIN,MAX or standard:MEAN,STD")


def parse_specs(specs: list[str], count: int, what: str) -> tuple[str, np.ndarray, np.ndarray]:
    """Parse `kind:a,b` specs: one per column, or a single spec that applies to all `count`."""
    if len(specs) not in (1, count):
        raise ScalerError(
            f"{what}: got {len(specs)} scaler specs for {count} columns; "
            f"give one spec per column (in order) or one for all"
        )
    kinds, offsets, scales = set(), [], []
    for i, spec in enumerate(specs if len(specs) == count else specs * count):
        kind, _, nums = spec.partition(":")
        try:
            a, b = (float(v) for v in nums.split(","))
        except ValueError:
            raise ScalerError(
                f"{what} column {i}: cannot read {spec!r}; expected minmax:MIN,MAX or standard:MEAN,STD"
            ) from None
        off, sc = _affine(kind.strip(), a, b, f"{what} column {i}")
        kinds.add(kind.strip())
        offsets.append(off)
        scales.append(sc)
    if len(kinds) != 1:
        raise ScalerError(f"{what}: mixed scaler kinds {sorted(kinds)}; use one kind for all columns")
    return kinds.pop(), np.array(offsets), np.array(scales)


def from_specs(x_specs: list[str], y_specs: list[str] | None, features: int, targets: int) -> Scaler:
    """Scaler from `--scaler` (and optionally `--target-scaler`) specs.

    Without target specs the targets reuse the feature scaling, which holds when the model
    forecasts its own inputs (the seed recipe); otherwise pass `--target-scaler`.
    """
    kind, xo, xs = parse_specs(x_specs, features, "--scaler")
    if y_specs:
        _, yo, ys = parse_specs(y_specs, targets, "--target-scaler")
    elif targets == features:
        yo, ys = xo, xs
    elif features == 1 or len(set(zip(xo, xs))) == 1:
        yo, ys = np.full(targets, xo[0]), np.full(targets, xs[0])
    else:
        raise ScalerError(
            f"the model has {features} features and {targets} targets: say how targets are "
            f"scaled with --target-scaler (one spec per target)"
        )
    return Scaler(kind, xo, xs, yo, ys)


def from_json(path: Path, features: int, targets: int) -> Scaler:
    """Scaler from a JSON file: `{"kind": "minmax", "x_min": [...], "x_max": [...], "y_min": ..., "y_max": ...}`
    or `{"kind": "standard", "x_mean": [...], "x_std": [...], ...}` (y_* default to x_*)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ScalerError(f"{path}: cannot read scaler JSON ({exc})") from None
    kind = doc.get("kind")
    keys = {"minmax": ("min", "max"), "standard": ("mean", "std")}.get(kind)
    if keys is None:
        raise ScalerError(f"{path}: key 'kind' must be 'minmax' or 'standard', found {kind!r}")

    def column_specs(prefix: str, count: int) -> list[str] | None:
        a, b = doc.get(f"{prefix}_{keys[0]}"), doc.get(f"{prefix}_{keys[1]}")
        if a is None and b is None and prefix == "y":
            return None
        if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b):
            raise ScalerError(
                f"{path}: keys '{prefix}_{keys[0]}' and '{prefix}_{keys[1]}' must be lists of equal length"
            )
        if len(a) != count:
            raise ScalerError(f"{path}: '{prefix}_{keys[0]}' has {len(a)} values, the model has {count}")
        return [f"{kind}:{u},{v}" for u, v in zip(a, b)]

    return from_specs(column_specs("x", features), column_specs("y", targets), features, targets)


def read_csv_columns(path: Path, columns: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Numeric columns of a CSV with a header (see edge_lstm.csvfile), at least 2 rows."""
    try:
        return read_columns(path, columns, min_rows=2)
    except ConfigError as exc:
        raise ScalerError(str(exc)) from None


def fit_minmax(path: Path, features: int, targets: int, columns: list[str] | None = None,
               target_columns: list[str] | None = None) -> tuple[Scaler, list[str]]:
    """The classic recipe: a MinMaxScaler fitted on the CSV's numeric columns.

    The targets are scaled like the feature columns of the same name when `target_columns`
    names CSV columns (a model forecasting one of its inputs), else like the features (when
    the model forecasts all of them, or there is only one).
    """
    if target_columns and columns:
        # The CSV may hold a target column that is not a feature: read both sets.
        wanted = list(dict.fromkeys([*columns, *target_columns]))
        _, table = read_csv_columns(path, wanted)
        data, names_x = table[:, : len(columns)], list(columns)
        where = {c.casefold(): j for j, c in enumerate(wanted)}
    else:
        names_x, table = read_csv_columns(path, columns)
        data = table
        where = {c.casefold(): j for j, c in enumerate(names_x)}
    if data.shape[1] != features:
        raise ScalerError(
            f"{path}: {data.shape[1]} numeric columns {names_x}, the model reads {features} features; "
            f"name the feature columns with --feature-names"
        )
    specs = [f"minmax:{lo},{hi}" for lo, hi in zip(data.min(axis=0), data.max(axis=0))]
    y_specs = None
    if target_columns and all(c.casefold() in where for c in target_columns):
        ys = table[:, [where[c.casefold()] for c in target_columns]]
        y_specs = [f"minmax:{lo},{hi}" for lo, hi in zip(ys.min(axis=0), ys.max(axis=0))]
    return from_specs(specs, y_specs, features, targets), names_x

