"""`edge-lstm bench` produces every case it promises, as a table and as JSON (timings are
measured by the benchmark itself, not asserted here: machines are shared and noisy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_lstm.bench import run_e2e
from edge_lstm.cli import main

DEMO = Path(__file__).resolve().parent.parent / "edge_lstm" / "demo" / "airline"


@pytest.fixture(autouse=True)
def keep_cpu_affinity():
    """`bench` pins its process to one CPU; the in-process CLI runs must not pin pytest."""
    import os

    before = os.sched_getaffinity(0)
    yield
    os.sched_setaffinity(0, before)


KEYS = {"case", "backend", "precision", "mode", "streams", "p50_us", "p99_us", "steps_per_s"}


def test_bench_rows_json_and_table(tmp_path: Path) -> None:
    """Floor, every backend x precision of the bundle (bare step, push in both modes) and
    push_many per stream count, each with the JSON keys the issue names."""
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["bench", str(DEMO), "--seconds", "0.05", "--streams", "1,16", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["rows"]
    assert all(KEYS <= set(r) for r in rows)
    cases = {(r["case"], r["backend"], r["precision"], r["mode"], r["streams"]) for r in rows}
    assert ("floor", "onnx", "fp32", "-", 1) in cases
    for backend, precision in (("onnx", "fp32"), ("onnx", "int8-dynamic"), ("numpy", "fp32")):
        assert ("step", backend, precision, "-", 1) in cases
        for mode in ("continuous", "exact"):
            assert ("push", backend, precision, mode, 1) in cases
    for mode in ("continuous", "exact"):
        assert {("push_many", "onnx", "fp32", mode, n) for n in (1, 16)} <= cases
    assert all(r["p50_us"] > 0 and r["p99_us"] >= r["p50_us"] for r in rows)
    assert "speed-up of one push" in res.output and "floor" in res.output


@pytest.mark.broker
def test_e2e_through_a_daemon_process() -> None:
    """--e2e: samples through a real broker and a daemon process; every forecast comes back."""
    row, rss = run_e2e(DEMO, rate=200, seconds=1.0)
    assert row.case == "e2e" and row.calls == 200
    assert "0 of 200 forecasts missing" in row.note
    assert 10 < rss < 500


@pytest.mark.tensorflow
def test_keras_baselines(keras_models) -> None:
    """With --keras, Keras predict and tf.function are timed in the same run."""
    model = keras_models["seed-lstm"]
    res = CliRunner().invoke(main, ["bench", str(DEMO), "--seconds", "0.05", "--streams", "1", "--keras", str(model.path)])
    assert res.exit_code == 0, res.output
    assert "keras-predict(W=12)" in res.output and "tf-function(W=12)" in res.output
