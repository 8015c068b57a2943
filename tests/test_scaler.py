"""Scaler specs, JSON files and the fitted MinMaxScaler recipe; bad ones say what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import datasets
from edge_lstm_export.scaler import ScalerError, fit_minmax, from_json, from_specs


def test_minmax_spec_matches_sklearn_formula() -> None:
    """minmax:MIN,MAX gives scaled = (x - MIN) / (MAX - MIN), targets reuse it."""
    s = from_specs(["minmax:104,622"], None, 1, 1)
    assert s.kind == "minmax"
    np.testing.assert_allclose((np.array([104.0, 622.0]) - s.x_offset) * s.x_scale, [0.0, 1.0])
    np.testing.assert_allclose(s.y_scale, s.x_scale)


def test_standard_spec_per_feature() -> None:
    """standard:MEAN,STD once per feature."""
    s = from_specs(["standard:10,2", "standard:0,4"], None, 2, 2)
    np.testing.assert_allclose(s.x_offset, [10, 0])
    np.testing.assert_allclose(s.x_scale, [0.5, 0.25])


@pytest.mark.parametrize(
    "specs, count, message",
    [
        (["minmax:1,2", "minmax:1,2"], 3, "got 2 scaler specs for 3 columns"),
        (["minmax:5,5"], 1, "min < max"),
        (["standard:0,0"], 1, "std > 0"),
        (["zscore:0,1"], 1, "unknown scaler kind 'zscore'"),
        (["minmax:a,b"], 1, "cannot read 'minmax:a,b'"),
    ],
)
def test_bad_specs(specs, count, message) -> None:
    """Wrong length, degenerate ranges and unknown kinds are named."""
    with pytest.raises(ScalerError, match=message):
        from_specs(specs, None, count, count)


def test_fit_on_csv_is_the_seed_recipe() -> None:
    """--fit-scaler on the airline CSV is MinMaxScaler over the whole series."""
    s, names = fit_minmax(datasets.AIRLINE_CSV, 1, 1)
    assert names == ["Passengers"]
    series = datasets.airline()
    lo, scale = datasets.minmax(series)
    np.testing.assert_allclose(s.x_offset, lo)
    np.testing.assert_allclose(s.x_scale, scale)


def test_csv_with_wrong_columns(tmp_path: Path) -> None:
    """A calibration/scaler CSV with the wrong column count or NaN is refused with the file name."""
    bad = tmp_path / "two.csv"
    bad.write_text("a,b\n1,2\n3,4\n5,6\n")
    with pytest.raises(ScalerError, match="two.csv: 2 numeric columns"):
        fit_minmax(bad, 1, 1)
    nan = tmp_path / "nan.csv"
    nan.write_text("a\n1\nnan\n3\n")
    with pytest.raises(ScalerError, match="nan.csv: NaN"):
        fit_minmax(nan, 1, 1)


def test_json_file(tmp_path: Path) -> None:
    """A JSON scaler file with per-feature lists; a wrong length names the key."""
    good = tmp_path / "s.json"
    good.write_text(json.dumps({"kind": "minmax", "x_min": [104], "x_max": [622]}))
    assert from_json(good, 1, 1).x_offset.tolist() == [104.0]
    good.write_text(json.dumps({"kind": "minmax", "x_min": [1, 2], "x_max": [3, 4]}))
    with pytest.raises(ScalerError, match="'x_min' has 2 values, the model has 1"):
        from_json(good, 1, 1)
