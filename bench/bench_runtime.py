"""What the runtime costs on top of the bare engine: a benchmark script, not a test.

Measured side by side in one run, per backend (p50 / p99 in microseconds, one thread):

- the bare engine step at batch 1 (inputs written into the engine's own buffers, the state
  fed back by hand: the fastest loop a hand-written program could run) versus `Runtime.push`
  in continuous mode; the target is push p50 <= 1.5x the bare step;
- `push` in exact mode (W staggered rows, one batched call of W rows) versus continuous, and
  the bare engine at batch W, which is what exact mode must pay at least;
- `push_many` throughput (stream-steps per second) at 1, 64, 1,024 and 8,192 streams, next to
  the bare engine at the same batch; the target is >= 500,000 stream-steps/s at 1,024.

The variants are timed in interleaved blocks, so a noisy neighbour slows them all alike;
compare p50s (p99s move with the machine's load).

    python bench/bench_runtime.py                       # a seed-shaped 2x50 LSTM, random weights
    python bench/bench_runtime.py --backends onnx,litert,numpy   # litert: TensorFlow builds the .tflite
    python bench/bench_runtime.py --bundle bundles/airline --backends onnx
"""

from __future__ import annotations

import os

# One thread means one thread for NumPy's BLAS too (set before numpy loads OpenBLAS).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from edge_lstm.bundle import Bundle  # noqa: E402
from edge_lstm.errors import EdgeLstmError  # noqa: E402
from edge_lstm.forecaster import Runtime, Sample  # noqa: E402

STREAM_COUNTS = (1, 64, 1024, 8192)


def seed_bundle(out: Path, window: int = 12, tflite: bool = False) -> Path:
    """The seed's model shape (LSTM 50 -> LSTM 50 -> Dense 1, one feature), random weights.

    Timing does not depend on the weights' values; building it needs only the export package
    (numpy + onnx); the TFLite variant (`tflite=True`) needs TensorFlow.
    """
    from edge_lstm_export.bundle_writer import write_bundle
    from edge_lstm_export.stack import Dense, Recurrent, Stack

    rng = np.random.default_rng(0)
    layers, width = [], 1
    for k in range(2):
        layers.append(
            Recurrent("lstm", 50, rng.normal(0, 0.3, (width, 200)), rng.normal(0, 0.3, (50, 200)),
                      rng.normal(0, 0.1, 200), name=f"lstm{k}")
        )
        width = 50
    stack = Stack(tuple(layers), (Dense(rng.normal(0, 0.3, (50, 1)), rng.normal(0, 0.1, 1), name="dense"),), window=window)
    out = write_bundle(stack, out, name="seed-2x50-random", features=["value"], targets=["value"])
    if tflite:
        from edge_lstm_export.bundle_writer import add_variant
        from edge_lstm_export.emit_tflite import emit_tflite

        emit_tflite(stack, out / "model.tflite")
        add_variant(out, "model.tflite", backend="litert", precision="fp32")
    return out


def interleaved(fns: dict[str, Callable[[], object]], calls: int, block: int = 200, warm: int = 300) -> dict[str, np.ndarray]:
    """Time each function `calls` times (ns per call), round-robin in blocks of `block` calls."""
    for fn in fns.values():
        for _ in range(warm):
            fn()
    times: dict[str, list[int]] = {name: [] for name in fns}
    clock = time.perf_counter_ns
    for _ in range(max(1, calls // block)):
        for name, fn in fns.items():
            out = times[name]
            for _ in range(block):
                t0 = clock()
                fn()
                out.append(clock() - t0)
    return {name: np.array(v, np.float64) / 1000.0 for name, v in times.items()}


def bare_step(rt: Runtime, batch: int) -> Callable[[], object]:
    """The engine alone at `batch`: write x into its input buffer, run, feed the state back."""
    engine = rt._engine
    x, state = engine.buffers(batch)
    x[...] = 1.0
    state[...] = 0.0
    value = [0.0]

    def step() -> None:
        value[0] = (value[0] + 0.37) % 5.0
        xb, sb = engine.buffers(batch)
        xb[0, 0] = value[0]
        _, so = engine.run(batch)
        sb[...] = so

    return step


def pusher(rt: Runtime, stream: str = "s") -> Callable[[], object]:
    """`rt.push` of one stream, with a new timestamp and value each call."""
    n = [0]

    def push() -> object:
        n[0] += 1
        return rt.push(stream, [(n[0] * 0.37) % 5.0], ts=float(n[0]))

    return push


def throughput(rt: Runtime, streams: int, seconds: float) -> tuple[float, float]:
    """p50 (us) of `push_many` over `streams` streams (fresh timestamps each call), and of the
    bare engine at the same batch, timed alternately for about `seconds`."""
    engine_fn = bare_step(rt, streams * rt._rows)
    names = [f"s{i}" for i in range(streams)]
    t = [0]

    def batch() -> list[Sample]:
        t[0] += 1
        ts = float(t[0])
        v = [(t[0] * 0.37) % 5.0]
        return [Sample(name, v, ts) for name in names]

    rt.push_many(batch())
    many, bare = [], []
    clock = time.perf_counter_ns
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(many) < 5:
        samples = batch()
        t0 = clock()
        res = rt.push_many(samples)
        many.append(clock() - t0)
        t0 = clock()
        engine_fn()
        bare.append(clock() - t0)
    assert len(res) == streams and not isinstance(res[0], Exception), res[0]
    return float(np.median(many)) / 1000.0, float(np.median(bare)) / 1000.0


def bench_backend(bundle: Bundle, backend: str, calls: int, seconds: float, counts: tuple[int, ...]) -> dict:
    cont = Runtime.open(bundle, backend=backend, mode="continuous")
    exact = Runtime.open(bundle, backend=backend, mode="exact")
    w = exact.window
    timings = interleaved(
        {
            "engine step B=1": bare_step(cont, 1),
            "push continuous": pusher(cont),
            f"engine step B={w}": bare_step(exact, w),
            f"push exact W={w}": pusher(exact),
        },
        calls,
    )
    rows = {name: (float(np.percentile(v, 50)), float(np.percentile(v, 99))) for name, v in timings.items()}
    many = {}
    for n in counts:
        rt = Runtime.open(bundle, backend=backend, mode="continuous")
        p50, bare = throughput(rt, n, seconds)
        many[n] = {"push_many_us": p50, "engine_us": bare, "steps_per_s": n / p50 * 1e6}
    rt = Runtime.open(bundle, backend=backend, mode="exact")
    p50, bare = throughput(rt, 1024, seconds)
    exact_many = {"push_many_us": p50, "engine_us": bare, "steps_per_s": 1024 / p50 * 1e6}
    return {
        "backend": cont.backend_name,
        "precision": cont.precision,
        "window": w,
        "latency": rows,
        "push_many": many,
        "exact_push_many_1024": exact_many,
    }


def report(result: dict) -> str:
    lat, w = result["latency"], result["window"]
    eng, push = lat["engine step B=1"][0], lat["push continuous"][0]
    cont, ex = lat["push continuous"][0], lat[f"push exact W={w}"][0]
    lines = [f"== {result['backend']} ({result['precision']}), one thread ==", f"{'what':<28}{'p50 us':>10}{'p99 us':>10}"]
    lines += [f"{name:<28}{p50:>10.2f}{p99:>10.2f}" for name, (p50, p99) in lat.items()]
    lines.append(f"push / engine step: {push / eng:.2f}x (target <= 1.5x)")
    lines.append(f"exact / continuous push: {ex / cont:.2f}x (target <= 1.5x; engine alone B={w}/B=1: "
                 f"{lat[f'engine step B={w}'][0] / eng:.2f}x)")
    lines.append(f"{'push_many streams':<20}{'call us':>10}{'engine us':>11}{'overhead us/stream':>20}{'stream-steps/s':>16}")
    for n, m in result["push_many"].items():
        over = (m["push_many_us"] - m["engine_us"]) / n
        lines.append(f"{n:<20}{m['push_many_us']:>10.1f}{m['engine_us']:>11.1f}{over:>20.3f}{m['steps_per_s']:>16,.0f}")
    m = result["exact_push_many_1024"]
    lines.append(f"{'1024 (exact)':<20}{m['push_many_us']:>10.1f}{m['engine_us']:>11.1f}"
                 f"{(m['push_many_us'] - m['engine_us']) / 1024:>20.3f}{m['steps_per_s']:>16,.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, help="bundle directory (default: a seed-shaped random model)")
    ap.add_argument("--backends", default="onnx,numpy", help="comma-separated: onnx, litert, numpy")
    ap.add_argument("--calls", type=int, default=20000, help="timed calls per latency variant")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per push_many size")
    ap.add_argument("--streams", default=",".join(map(str, STREAM_COUNTS)), help="push_many stream counts")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        bundle = Bundle.open(args.bundle or seed_bundle(Path(tmp) / "seed", tflite="litert" in backends))
        print(f"bundle {bundle.name}: window {bundle.window}, state {bundle.state_size}")
        results = []
        for backend in backends:
            try:
                result = bench_backend(bundle, backend, args.calls, args.seconds,
                                       tuple(int(n) for n in args.streams.split(",")))
            except EdgeLstmError as exc:
                print(f"== {backend}: skipped ({exc})")
                continue
            results.append(result)
            print(report(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
