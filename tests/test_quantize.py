"""Quantized variants (ONNX and TFLite) of the seed model, calibration data, the accuracy report."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

import datasets
from stacks import zoo

pytest.importorskip("ai_edge_litert")
pytest.importorskip("tensorflow")

from edge_lstm.errors import ConfigError  # noqa: E402
from edge_lstm_export.calibration import calibration_pairs, read_calibration_csv  # noqa: E402
from edge_lstm_export.emit_numpy import reference  # noqa: E402
from edge_lstm_export.emit_onnx import emit_onnx  # noqa: E402
from edge_lstm_export.quantize import (  # noqa: E402
    VariantFile,
    make_variants,
    onnx_dynamic_int8,
    onnx_op_counts,
)
from edge_lstm_export.stack import Stack  # noqa: E402
from edge_lstm_export.variant_report import VariantReport, evaluate_variants, format_table, open_step  # noqa: E402

pytestmark = pytest.mark.tensorflow

CHECKER = Path(__file__).parent / "check_bundle.py"  # the shared contract checker, vendored
WINDOW = 12
QUANTIZE = ("dynamic", "static", "fp16")


@dataclass
class Seed:
    device: Stack  # the seed model with the airline scaler folded in (passengers in and out)
    series: np.ndarray  # [144, 1] passengers
    cut: int  # first held-out row (last 20 %)
    bundle: Path
    files: list[VariantFile]
    pairs: list
    reports: dict[str, VariantReport]  # by file name


@pytest.fixture(scope="module")
def seed(keras_models, tmp_path_factory) -> Seed:
    """The Keras seed model (2x50 LSTM trained on airline, last 20 % held out) exported to a
    bundle with every ONNX and TFLite variant, measured by `evaluate_variants`.

    Calibration rolls the fp32 model over the whole series: the range the MinMax scaler was
    fitted on, i.e. the values the model is meant to see (the train-only case has its own test).
    """
    from edge_lstm_export.bundle_writer import add_variant, write_bundle
    from edge_lstm_export.readers.keras import read_keras
    from edge_lstm_export.scaler import Scaler

    source = keras_models["seed-lstm"]
    stack = read_keras(source.path)
    series = datasets.airline()[:, None]
    offset, scale = datasets.minmax(series)
    scaler = Scaler("minmax", offset, scale, offset, scale)
    device = stack.with_scaling(offset, scale, offset, scale)
    out = write_bundle(stack, tmp_path_factory.mktemp("q") / "seed", name="seed", features=["passengers"],
                       targets=["passengers"], scaler=scaler)
    pairs = calibration_pairs(device, series, window=WINDOW)
    made = make_variants(device, out, formats=("onnx", "tflite"), quantize=QUANTIZE, pairs=pairs)
    for vf in made.files:
        add_variant(out, vf.path.name, backend=vf.backend, precision=vf.precision)
    files = [VariantFile(out / "model.onnx", "onnx", "fp32"), *made.files]
    cut = int(round(len(series) * 0.8))
    reports = evaluate_variants(
        files,
        series=series,
        window=WINDOW,
        holdout_start=cut,
        source_windows=(source.windows / scale + offset).astype(np.float32),
        source_expected=source.expected / scale + offset,
        calibration=pairs,
        latency_calls=300,
    )
    return Seed(device, series, cut, out, files, pairs, {r.file: r for r in reports})


def test_every_requested_variant_is_written(seed):
    got = {(f.path.name, f.backend, f.precision) for f in seed.files}
    assert got == {
        ("model.onnx", "onnx", "fp32"),
        ("model.int8-dynamic.onnx", "onnx", "int8-dynamic"),
        ("model.int8-static.onnx", "onnx", "int8-static"),
        ("model.fp16.onnx", "onnx", "fp16"),
        ("model.tflite", "litert", "fp32"),
        ("model.int8-dynamic.tflite", "litert", "int8-dynamic"),
        ("model.int8-static.tflite", "litert", "int8-static"),
        ("model.fp16.tflite", "litert", "fp16"),
    }


def test_int8_files_are_at_most_40_percent_of_fp32_and_fp16_about_half(seed):
    for r in seed.reports.values():
        if r.precision.startswith("int8"):
            assert r.ratio_to_fp32 <= 0.40, r
        elif r.precision == "fp16":
            assert 0.45 <= r.ratio_to_fp32 <= 0.56, r
        else:
            assert r.ratio_to_fp32 == 1.0


def test_onnx_dynamic_graph_really_holds_int8_matmuls(seed):
    fp32 = onnx_op_counts(seed.bundle / "model.onnx")
    ops = onnx_op_counts(seed.bundle / "model.int8-dynamic.onnx")
    assert ops["MatMulInteger"] >= 2  # the recurrent kernels of both layers
    assert ops["MatMulInteger"] + ops["MatMul"] == fp32["MatMul"]
    assert ops["DynamicQuantizeLinear"] == 0  # rewritten per row (batch rows = single streams)
    big = _initializers(seed.bundle / "model.int8-dynamic.onnx", min_size=1024)
    assert big and all(t == TensorProto.INT8 for t in big.values()), big


def test_onnx_static_graph_is_qdq_with_int8_weights(seed):
    ops = onnx_op_counts(seed.bundle / "model.int8-static.onnx")
    assert ops["QuantizeLinear"] >= 3 and ops["DequantizeLinear"] >= 3
    big = _initializers(seed.bundle / "model.int8-static.onnx", min_size=1024)
    assert big and all(t == TensorProto.INT8 for t in big.values()), big


def test_onnx_fp16_graph_stores_float16(seed):
    types = set(_initializers(seed.bundle / "model.fp16.onnx", min_size=1).values())
    assert TensorProto.FLOAT16 in types and TensorProto.FLOAT not in types
    model = onnx.load(str(seed.bundle / "model.fp16.onnx"))
    assert [i.type.tensor_type.elem_type for i in (*model.graph.input, *model.graph.output)] == [TensorProto.FLOAT] * 4


def test_tflite_graphs_are_really_quantized_with_float32_io(seed):
    from ai_edge_litert.interpreter import Interpreter

    def dtypes(name: str) -> tuple[set, list]:
        it = Interpreter(model_path=str(seed.bundle / name))
        io = [d["dtype"] for d in (*it.get_input_details(), *it.get_output_details())]
        return {d["dtype"] for d in it.get_tensor_details()}, io

    for name in ("model.int8-dynamic.tflite", "model.int8-static.tflite", "model.fp16.tflite"):
        assert dtypes(name)[1] == [np.float32] * 4, name
    assert np.int8 in dtypes("model.int8-dynamic.tflite")[0]
    assert np.float16 in dtypes("model.fp16.tflite")[0]
    # full integer: the activations are int8 as well; only the edges stay float
    it = Interpreter(model_path=str(seed.bundle / "model.int8-static.tflite"))
    kinds = [d["dtype"] for d in it.get_tensor_details() if d["name"] not in ("x", "state", "y", "state_out")]
    assert sum(k == np.int8 for k in kinds) > 3 * sum(k == np.float32 for k in kinds), kinds


def test_forecast_rmse_of_quantized_variants_stays_near_fp32(seed):
    """Targets: int8 within 5 % of the fp32 forecast RMSE, fp16 within 0.5 %."""
    for r in seed.reports.values():
        limit = {"fp32": 1e-3, "fp16": 0.5, "int8-dynamic": 5.0, "int8-static": 5.0}[r.precision]
        assert abs(r.rmse_change_pct) <= limit, r
        assert 10 < r.rmse < 200 and 0 < r.mae <= r.rmse  # passengers, a real forecast


def test_error_against_keras_on_held_out_windows(seed):
    span = float(seed.series.max() - seed.series.min())  # 518 passengers
    for r in seed.reports.values():
        limit = {"fp32": 1e-5 * span, "fp16": 1e-3 * span, "int8-dynamic": 0.05 * span, "int8-static": 0.05 * span}
        assert r.max_abs_vs_source <= limit[r.precision], r
        assert r.p50_step_us > 0


def test_batch_rows_equal_single_streams_for_every_variant(seed):
    """The bundle contract: a stream's answer does not depend on its batch-mates."""
    rng = np.random.default_rng(0)
    x = rng.uniform(100, 650, (6, 1)).astype(np.float32)
    s = np.stack([p[1][0] for p in seed.pairs[::150][:6]]).astype(np.float32)
    for f in seed.files:
        engine = open_step(f.path, f.backend, f.precision)
        y, so = (a.copy() for a in engine.step(x, s))
        for i in range(len(x)):
            yi, si = engine.step(x[i : i + 1], s[i : i + 1])
            assert np.abs(yi[0] - y[i]).max() <= 1e-5 * max(1.0, float(np.abs(y[i]).max())), f
            assert np.abs(si[0] - so[i]).max() <= 1e-5, f


def test_bundle_with_every_variant_passes_the_shared_checker(seed):
    res = subprocess.run([sys.executable, str(CHECKER), str(seed.bundle)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_report_table_lists_every_variant(seed):
    table = format_table(list(seed.reports.values()), "passengers")
    for name in seed.reports:
        assert name in table
    assert "RMSE chg" in table and "outside the calibration range" not in table


def test_calibrating_on_the_training_part_only_is_flagged(seed, tmp_path):
    """The held-out years climb above every training value: static int8 clamps there, and
    the report says how much of the held-out input lies outside the calibrated range."""
    pairs = calibration_pairs(seed.device, seed.series[: seed.cut], window=WINDOW)
    made = make_variants(seed.device, tmp_path, formats=("tflite",), quantize=("static",), pairs=pairs)
    static = [f for f in made.files if f.precision == "int8-static"]
    reports = evaluate_variants(
        static + [f for f in made.files if f.precision == "fp32"],
        series=seed.series, window=WINDOW, holdout_start=seed.cut, calibration=pairs, latency_calls=50,
    )
    assert reports[0].outside_calibration > 0.1
    assert reports[1].outside_calibration is None  # fp32 is not calibrated
    assert "outside the calibration range" in format_table(reports)


# -- calibration data --------------------------------------------------------------------------


def test_calibration_pairs_are_the_states_the_step_model_receives():
    stack = zoo()["lstm2"]
    series = np.sin(np.arange(40, dtype=np.float32) / 3.0)[:, None]
    pairs = calibration_pairs(stack, series, window=stack.window, max_pairs=10_000)
    windows = len(series) - stack.window + 1
    assert len(pairs) == windows * stack.window
    assert all(x.shape == (1, 1) and s.shape == (1, stack.state_size) for x, s in pairs)
    # exact mode: the first step of every window starts from zero state
    zero = sum(not s.any() for _, s in pairs)
    assert zero == windows
    # the pair at step t of window 0 holds the reference state after t samples
    ref = reference(stack, np.float32)
    state = np.zeros((1, stack.state_size), np.float32)
    for t in range(3):
        x, s = pairs[t * windows]
        np.testing.assert_allclose(s, state, atol=1e-6)
        np.testing.assert_array_equal(x, series[t : t + 1])
        _, state = ref.step(series[t : t + 1], state)


def test_continuous_calibration_carries_one_stream_and_subsamples_evenly():
    stack = zoo()["lstm2"]
    series = np.cos(np.arange(300, dtype=np.float32) / 7.0)[:, None]
    seen = []
    pairs = calibration_pairs(stack, series, window=None, max_pairs=50, progress=lambda d, t: seen.append((d, t)))
    assert len(pairs) == 50
    assert seen[-1] == (300, 300) and len(seen) == 300
    assert sum(not s.any() for _, s in pairs) == 1  # only the very first step is cold
    again = calibration_pairs(stack, series, window=None, max_pairs=50)  # deterministic
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(pairs, again))


def test_progress_bar_goes_to_stderr(capsys):
    stack = zoo()["lstm2"]
    calibration_pairs(stack, np.zeros((30, 1), np.float32), window=stack.window, progress=True)
    assert "calibrating" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("series", "message"),
    [
        (np.array([[1.0], [np.nan]] + [[2.0]] * 20), r"row 2 .*NaN"),
        (np.zeros((30, 2)), r"2 value\(s\) per row, the model reads 1"),
        (np.zeros((5, 1)), r"5 row\(s\), calibration needs at least 13"),
    ],
)
def test_bad_calibration_series_is_refused_with_the_reason(series, message):
    stack = zoo()["lstm2"]
    with pytest.raises(ConfigError, match=message) as err:
        calibration_pairs(stack, series, window=stack.window, source="cal.csv")
    assert "cal.csv" in str(err.value) and err.value.exit_code == 2


def test_calibration_csv_with_the_wrong_columns_names_file_and_columns(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("Month,Passengers\n" + "".join(f"1949-{i:02d},{100 + i}\n" for i in range(1, 30)))
    got = read_calibration_csv(csv, ["Passengers"], features=1, window=12)
    assert got.shape == (29, 1) and got.dtype == np.float32
    with pytest.raises(ConfigError, match=r"train\.csv.*temperature") as err:
        read_calibration_csv(csv, ["temperature"], features=1, window=12)
    assert err.value.exit_code == 2
    with pytest.raises(ConfigError, match="at least 41"):
        read_calibration_csv(csv, ["Passengers"], features=1, window=40)


# -- what cannot be made -----------------------------------------------------------------------


def test_requests_that_cannot_be_made_are_refused_or_noted(tmp_path):
    stack = zoo()["lstm2"]
    with pytest.raises(ConfigError, match="unknown kind 'int4'"):
        make_variants(stack, tmp_path, quantize=("int4",))
    with pytest.raises(ConfigError, match="--calibration"):
        make_variants(stack, tmp_path, quantize=("static",))
    with pytest.raises(ConfigError, match="unknown format"):
        make_variants(stack, tmp_path, formats=("coreml",))
    made = make_variants(stack, tmp_path, formats=("onnx",), quantize=("fp16", "int16x8"))
    assert [f.precision for f in made.files] == ["fp16"]
    assert any("int16x8" in n and "TFLite-only" in n for n in made.notes)


def test_dynamic_int8_of_a_model_too_small_to_shrink_says_so(tmp_path):
    src = emit_onnx(zoo()["lstm2"], tmp_path / "tiny.onnx")  # 8 and 6 units: no 1024-weight matrix
    with pytest.raises(ConfigError, match="would not make this model smaller"):
        onnx_dynamic_int8(src, tmp_path / "tiny.int8.onnx")


def _initializers(path: Path, min_size: int) -> dict[str, int]:
    model = onnx.load(str(path))
    return {
        i.name: i.data_type
        for i in model.graph.initializer
        if numpy_helper.to_array(i).size >= min_size
    }
