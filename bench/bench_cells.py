"""Which ONNX form of a recurrent cell steps fastest on onnxruntime? (issue: export emitter)

Times the seed-sized model (LSTM 50 -> LSTM 50 -> Dense 1, and a GRU 50 twin) written with
the fused-MatMul cell and with ONNX's LSTM/GRU operators, at batch 1, 12 (exact mode, W=12)
and 1024, one intra-op thread, both through plain `run` and IOBinding.

    python bench/bench_cells.py [--repeat 5000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort

from edge_lstm_export.emit_onnx import build_step_graph
from edge_lstm_export.stack import Dense, Recurrent, Stack


def seed_stack(kind: str, units: int = 50) -> Stack:
    rng = np.random.default_rng(0)
    g = 4 if kind == "lstm" else 3

    def rec(fin: int) -> Recurrent:
        return Recurrent(kind, units, rng.normal(0, 0.3, (fin, g * units)), rng.normal(0, 0.3, (units, g * units)),
                         rng.normal(0, 0.1, g * units), rng.normal(0, 0.1, g * units) if kind == "gru" else None)

    return Stack((rec(1), rec(units)), (Dense(rng.normal(size=(units, 1)), rng.normal(size=1)),))


def session(model_bytes: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def time_calls(fn, repeat: int) -> tuple[float, float]:
    for _ in range(min(500, repeat)):
        fn()
    t = np.empty(repeat)
    for i in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        t[i] = time.perf_counter_ns() - t0
    return float(np.percentile(t, 50) / 1e3), float(np.percentile(t, 99) / 1e3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5000)
    args = ap.parse_args()
    print(f"onnxruntime {ort.__version__}; us per call, p50 / p99")
    print(f"{'model':6} {'cell':7} {'batch':>5}  {'run p50/p99':>16}  {'iobinding p50/p99':>18}")
    for kind in ("lstm", "gru"):
        stack = seed_stack(kind)
        for batch in (1, 12, 1024):
            for cell in ("matmul", "op"):
                sess = session(build_step_graph(stack, cell).SerializeToString())
                x = np.random.default_rng(1).normal(size=(batch, 1)).astype(np.float32)
                s = np.zeros((batch, stack.state_size), np.float32)
                run = time_calls(lambda: sess.run(["y", "state_out"], {"x": x, "state": s}), args.repeat // (1 + batch // 64))
                io = sess.io_binding()
                bufs = [np.zeros_like(s), np.zeros_like(s)]
                y = np.zeros((batch, 1), np.float32)
                io.bind_cpu_input("x", x)
                bindings = []
                for a, b in ((0, 1), (1, 0)):
                    ib = sess.io_binding()
                    ib.bind_cpu_input("x", x)
                    ib.bind_cpu_input("state", bufs[a])
                    ib.bind_output("y", "cpu", 0, np.float32, y.shape, y.ctypes.data)
                    ib.bind_output("state_out", "cpu", 0, np.float32, bufs[b].shape, bufs[b].ctypes.data)
                    bindings.append(ib)
                k = [0]

                def bound() -> None:
                    sess.run_with_iobinding(bindings[k[0]])
                    k[0] ^= 1

                iob = time_calls(bound, args.repeat // (1 + batch // 64))
                print(f"{kind:6} {cell:7} {batch:5}  {run[0]:7.1f} / {run[1]:7.1f}  {iob[0]:8.1f} / {iob[1]:8.1f}")


if __name__ == "__main__":
    main()
