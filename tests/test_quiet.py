"""Export's output: the frameworks' chatter about themselves is dropped, real warnings stay."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

import datasets
from edge_lstm_export.quiet import framework_chatter_filtered, kept_lines

# Lines TensorFlow 2.21, LiteRT 2.3 and the TFLite converter wrote to descriptor 2 during one
# `edge-lstm export ... --formats onnx,tflite --quantize dynamic,static,fp16` on this machine.
SEEN = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796405285.403149   15869 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1796405285.518795   15869 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
I0000 00:00:1796405319.974612   15869 reader.cc:83] Reading SavedModel from: /tmp/tmpm46hfuj6
fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, output_inference_type: FLOAT32
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
"""
# What must survive: TensorFlow's own warnings and errors, and anything that is not chatter.
REAL = """\
W0000 00:00:1796405319.974303   15869 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.
E0000 00:00:1796405319.974303   15869 op_kernel.cc:1] Out of memory while allocating 1 GB
Segmentation fault in the user's own custom layer
"""


def test_chatter_lines_are_dropped_and_others_kept() -> None:
    """The classifier drops exactly the chatter seen on this machine, nothing else."""
    assert kept_lines(SEEN) == []
    assert kept_lines(SEEN + REAL) == REAL.splitlines()


def test_native_writes_are_filtered_python_writes_stay_live(capfd, caplog) -> None:
    """Inside the filter, C-level writes to descriptor 2 are held and replayed without the
    chatter; Python's stderr and logging still print, and onnxruntime's quantizer advice
    (logged on the root logger) is dropped while other root warnings show."""
    with framework_chatter_filtered():
        os.write(2, (SEEN + REAL).encode())
        print("calibrating", file=sys.stderr, flush=True)
        logging.getLogger().warning("Please consider to run pre-processing before quantization. Refer to ...")
        logging.getLogger().warning("a real warning from the root logger")
        inside = capfd.readouterr().err
    assert "calibrating" in inside  # live, not held back
    after = capfd.readouterr().err
    err = inside + after
    for line in REAL.splitlines():
        assert line in err, line
    for line in SEEN.splitlines():
        assert line not in err, line
    logged = [r.getMessage() for r in caplog.records]
    assert logged == ["a real warning from the root logger"], logged
    # the filter is gone afterwards: descriptor 2 and the root logger are back to normal
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    assert "XNNPACK" in capfd.readouterr().err
    assert not logging.getLogger().filters


@pytest.mark.slow
@pytest.mark.tensorflow
def test_export_prints_no_framework_chatter(keras_models, tmp_path) -> None:
    """A fresh `edge-lstm export` process (TensorFlow imported there for the first time, the
    TFLite converter and onnxruntime's quantizer run) prints our table and nothing of the
    frameworks' chatter."""
    model = keras_models["seed-lstm"]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run(
        [sys.executable, "-m", "edge_lstm", "export", str(model.path), "--out", str(tmp_path / "b"),
         "--fit-scaler", str(datasets.AIRLINE_CSV), "--formats", "onnx,tflite", "--quantize", "dynamic,static"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "litert/int8-static" in out.stdout and "keras.predict" in out.stdout
    chatter = [line for line in out.stderr.splitlines() if line.strip() and line.strip() != "calibrating"]
    assert chatter == [], chatter
