"""The drift report: continuous vs exact mode over a series, against the reference by hand."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import datasets
from edge_lstm.csvfile import read_series
from edge_lstm.drift import continuous_mode_warning, drift_report
from edge_lstm.errors import ConfigError
from edge_lstm_export.bundle_writer import write_bundle
from edge_lstm_export.emit_numpy import reference
from test_runtime import random_stack

W = 6


def by_hand(stack, series: np.ndarray) -> np.ndarray:
    """|continuous - exact| per step from the float64 reference, from the first exact forecast on."""
    ref = reference(stack)
    state = np.zeros((1, stack.state_size))
    cont = []
    for x in series:
        y, state = ref.step(x[None, None].astype(np.float64), state)
        cont.append(y[0])
    windows = np.stack([series[i - W + 1 : i + 1] for i in range(W - 1, len(series))])[:, :, None]
    exact = ref.run_window(windows.astype(np.float64))
    return np.abs(np.array(cont)[W - 1 :] - exact)


def bundle_of(tmp_path, stack, name="m"):
    return write_bundle(stack, tmp_path / name, name=name, features=["value"], targets=["value"])


def test_the_report_measures_what_the_reference_says(tmp_path):
    stack = random_stack(units=(8,), window=W, seed=11)
    series = np.sin(np.arange(80) / 5.0).astype(np.float32)
    report = drift_report(bundle_of(tmp_path, stack), series, backend="numpy")
    want = by_hand(stack, series)
    assert report.steps == len(series) - W + 1 and report.first_step == W - 1
    np.testing.assert_allclose(report.diff, want, atol=1e-5)
    np.testing.assert_allclose(report.max_abs, want.max(axis=0), atol=1e-5)
    np.testing.assert_allclose(report.mean_abs, want.mean(axis=0), atol=1e-5)
    assert report.worst_step == W - 1 + int(np.argmax(want[:, 0]))
    text = report.table()
    assert "value" in text and f"{want.max():.6g}"[:5] in text
    last = text.splitlines()[-1]  # the verdict: safe, or a warning with the measured share of the range
    assert last.startswith("verdict: ") if report.safe else f"up to {report.relative.max():.0%} of the range" in last
    assert report.backend == "numpy" and report.window == W


def test_a_memoryless_model_is_safe(tmp_path):
    """A GRU whose update gate is shut and recurrent weights zero forgets everything: both
    modes give the same forecasts."""
    stack = random_stack("gru", units=(8,), window=W, seed=12)
    layer = stack.recurrent[0]
    bias = layer.bias.copy()
    bias[: layer.units] = -40.0  # z = 0: h = candidate(x) only
    layer = replace(layer, recurrent_kernel=np.zeros_like(layer.recurrent_kernel), bias=bias,
                    recurrent_bias=np.zeros_like(layer.recurrent_bias))
    stack = replace(stack, recurrent=(layer,))
    report = drift_report(bundle_of(tmp_path, stack), datasets.airline() / 100.0, backend="onnx")
    assert report.max_abs.max() < 1e-6 and report.safe
    assert "safe" in report.table() and continuous_mode_warning(report.summary()) is None


def test_a_long_memory_model_drifts_and_the_verdict_says_use_exact(tmp_path):
    stack = random_stack(units=(8,), window=W, seed=13)
    layer = stack.recurrent[0]
    bias = layer.bias.copy()
    u = layer.units
    bias[u : 2 * u] = 6.0  # forget gate open: the cell state integrates the whole series
    bias[:u] = 2.0
    stack = replace(stack, recurrent=(replace(layer, bias=bias),))
    series = (0.8 + 0.1 * np.sin(np.arange(120) / 7.0)).astype(np.float32)
    report = drift_report(bundle_of(tmp_path, stack), series, backend="numpy")
    assert not report.safe and "use mode = \"exact\"" in report.table()
    summary = report.summary("wave.csv")
    assert summary["safe"] is False and summary["max_relative"] == [float(report.relative[0])]
    warning = continuous_mode_warning(json.loads(json.dumps(summary)))  # as read back from report.json
    assert warning and f"up to {report.relative[0]:.0%} of the range of" in warning and "wave.csv" in warning
    assert report.table().splitlines()[-1] == f"warning: {continuous_mode_warning(report.summary())}"
    segments = report.segments()
    assert len(segments) == 4 and segments[0][0] == W - 1 and segments[-1][1] == len(series) - 1
    assert max(seg[2].max() for seg in segments) == report.max_abs.max()
    np.testing.assert_allclose(report.diff, by_hand(stack, series), atol=1e-5)


def test_a_series_shorter_than_the_window_has_nothing_to_compare(tmp_path):
    report = drift_report(bundle_of(tmp_path, random_stack(window=W)), np.ones(W - 1), backend="numpy")
    assert report.steps == 0 and not report.safe and "nothing to compare" in report.table()


def test_bad_series_are_config_errors(tmp_path):
    bundle = bundle_of(tmp_path, random_stack(window=W))
    with pytest.raises(ConfigError, match="1 feature"):
        drift_report(bundle, np.ones((10, 2)), backend="numpy")
    with pytest.raises(ConfigError, match="NaN"):
        drift_report(bundle, np.array([1.0, np.nan] * 5), backend="numpy")


def test_read_series_by_name_or_by_numeric_columns(tmp_path):
    named = tmp_path / "named.csv"
    named.write_text("ts,b,a\n1,10,20\n2,11,21\n")
    assert read_series(named, ["a", "b"]).tolist() == [[20.0, 10.0], [21.0, 11.0]]
    airline = read_series(datasets.AIRLINE_CSV, ["passengers"])  # the header says "Passengers"
    np.testing.assert_array_equal(airline[:, 0], datasets.airline())
    with pytest.raises(ConfigError, match="numeric column"):
        read_series(named, ["x", "y"])
    assert read_series(named, ["p", "q", "r"]).tolist() == [[1, 10, 20], [2, 11, 21]]  # 3 numeric columns, in order
    broken = tmp_path / "broken.csv"
    broken.write_text("month,value\n1,10\n2,oops\n")
    with pytest.raises(ConfigError, match="line 3"):
        read_series(broken, ["value"])
    with pytest.raises(ConfigError, match="cannot read"):
        read_series(tmp_path / "missing.csv", ["value"])
