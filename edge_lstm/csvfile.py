"""Series from CSV files with a header row: the one reader for export, verify and the tools.

Columns are picked by name (case-insensitively) or, when no names are given, every numeric
column (a leading date or label column is skipped). Every problem is a ConfigError naming the
file, the line or column, and what was found.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from edge_lstm.errors import ConfigError


def is_number(cell: str) -> bool:
    """Whether a CSV cell reads as a number (a header or a date does not)."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def read_columns(path: str | Path, columns: list[str] | None = None, *, min_rows: int = 1) -> tuple[list[str], np.ndarray]:
    """(column names as in the header, float64 [T, C]) for `columns`, or for every numeric column."""
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            rows = [r for r in csv.reader(fh) if r]
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    if len(rows) < 1 + min_rows:
        raise ConfigError(f"{path}: needs a header row and at least {min_rows} data row(s), found {len(rows)} line(s)")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if columns:
        folded = [h.casefold() for h in header]
        missing = [c for c in columns if c not in header and c.casefold() not in folded]
        if missing:
            raise ConfigError(f"{path}: no column {missing[0]!r}; the header has {header}")
        idx = [header.index(c) if c in header else folded.index(c.casefold()) for c in columns]
    else:
        idx = [j for j, cell in enumerate(body[0]) if is_number(cell)]
        if not idx:
            raise ConfigError(f"{path}: no numeric column in the first data row {body[0]}")
    names = [header[j] for j in idx]
    try:
        data = np.array([[float(r[j]) for j in idx] for r in body], np.float64)
    except (ValueError, IndexError):
        for line, r in enumerate(body, start=2):
            try:
                [float(r[j]) for j in idx]
            except (ValueError, IndexError):
                raise ConfigError(f"{path}: line {line} has no number in column(s) {names}: {r}") from None
        raise
    if not np.isfinite(data).all():
        line = int(np.flatnonzero(~np.isfinite(data).all(axis=1))[0]) + 2
        raise ConfigError(f"{path}: NaN or infinite value on line {line} (columns {names}); fill or drop missing values first")
    return names, data


def read_series(path: str | Path, features: list[str]) -> np.ndarray:
    """The `features` columns in that order, [T, F]; a CSV whose header does not name them but
    holds exactly len(features) numeric columns (a leading date column is fine) is read in order."""
    try:
        return read_columns(path, features)[1]
    except ConfigError as named:
        if "no column" not in str(named):
            raise
        try:
            names, data = read_columns(path)
        except ConfigError:
            raise named from None
        if data.shape[1] != len(features):
            raise ConfigError(
                f"{path}: no column(s) named {features} in the header, and {data.shape[1]} numeric column(s) "
                f"{names} where the model reads {len(features)}; name the columns {features}"
            ) from None
        return data
