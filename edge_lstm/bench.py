"""`edge-lstm bench`: step latency and throughput, side by side with the naive way, in one run.

Machines here are shared and noisy, so every figure that matters is a ratio to a baseline
measured in the same process minutes apart: onnxruntime's empty call with the same tensors
(`floor`), the whole window re-run per sample (`window-onnx`, the seed recipe's way, from the
bundle's baseline models), and, where TensorFlow is installed, Keras `model.predict(window)`
and `tf.function(model)(window)` per sample.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge_lstm.backends.onnx_backend import OnnxStep
from edge_lstm.backends.registry import BACKENDS, open_backend
from edge_lstm.bundle import Bundle
from edge_lstm.errors import BackendUnavailableError, BundleError
from edge_lstm.forecaster import Runtime, Sample


@dataclass
class Row:
    """One measured case. Latencies are per call; `steps_per_s` counts stream-steps."""

    case: str  # step | push | push_many | floor | window-onnx | keras-predict | tf-function | e2e
    backend: str
    precision: str
    mode: str
    streams: int
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    steps_per_s: float
    calls: int
    window: int | None = None
    note: str = ""


@dataclass
class BenchResult:
    """All rows of one run, with what the run was made on."""

    rows: list[Row] = field(default_factory=list)
    bundle: str = ""
    bundle_bytes: int = 0
    peak_rss_mb: float = 0.0
    machine: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {**asdict(self), "rows": [asdict(r) for r in self.rows]}


def time_calls(fn: Callable[[], object], seconds: float, max_calls: int = 200_000, min_calls: int = 20) -> np.ndarray:
    """Per-call times in microseconds: a warm-up, then calls for about `seconds`."""
    warm_end = time.perf_counter() + min(0.2, seconds / 5)
    while time.perf_counter() < warm_end:
        fn()
    times = []
    clock = time.perf_counter_ns
    end = clock() + int(seconds * 1e9)
    while (len(times) < max_calls and clock() < end) or len(times) < min_calls:
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return np.asarray(times, np.float64) / 1e3


def _row(case: str, backend: str, precision: str, mode: str, streams: int, us: np.ndarray, **extra) -> Row:
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return Row(case, backend, precision, mode, streams, float(p50), float(p90), float(p99), float(us.max()),
               float(streams / (np.mean(us) / 1e6)), len(us), **extra)


def floor_model(features: int, outputs: int, state_size: int) -> bytes:
    """An ONNX model with the step's tensors and no work: the cost of calling the engine at all."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Identity", ["state"], ["state_out"])]
    if outputs == features:
        nodes.append(helper.make_node("Identity", ["x"], ["y"]))
    else:
        nodes.append(helper.make_node("Slice", ["state", "starts", "ends", "axes"], ["y"]))
    inits = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("starts", 0), ("ends", outputs), ("axes", 1))]
    graph = helper.make_graph(
        nodes, "floor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", state_size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs]),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, ["batch", state_size])],
        inits if outputs != features else [],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _series(bundle: Bundle, length: int = 4096) -> np.ndarray:
    """Plausible sensor values: a slow sine through the scaler's range (or around zero)."""
    sc = bundle.manifest.get("scaler", {})
    lo = np.asarray(sc.get("x_min", [0.0] * len(bundle.features)), np.float64)
    span = 1.0 / np.asarray(sc.get("x_scale", [1.0] * len(bundle.features)), np.float64)
    t = np.arange(length)[:, None]
    return (lo + span * (0.5 + 0.4 * np.sin(t / 7.0 + np.arange(len(lo))))).astype(np.float32)


def pin_to_one_cpu() -> str:
    """Run on one CPU so numbers mean one thread; returns what was done."""
    try:
        cpu = sorted(os.sched_getaffinity(0))[-1]
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError) as exc:
        return f"not pinned ({exc})"


def run_bench(
    bundle_path: str | Path,
    *,
    streams: Iterable[int] = (1, 64, 1024, 8192),
    seconds: float = 1.0,
    threads: int = 1,
    keras_model: str | Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> BenchResult:
    """Measure every installed backend x precision, throughput by stream count, and baselines."""
    bundle = Bundle.open(bundle_path)
    features, width = len(bundle.features), bundle.state_size
    series = _series(bundle)
    res = BenchResult(bundle=str(bundle.path), bundle_bytes=sum(v.bytes for v in bundle.variants))
    res.machine = {"python": platform.python_version(), "machine": platform.machine(),
                   "processor": _cpu_name(), "cpus": os.cpu_count(), "threads": threads}

    x1 = series[:1]
    s1 = np.zeros((1, width), np.float32)
    progress("floor")
    floor = OnnxStep(floor_model(features, len(bundle.targets), width), threads=threads, source="floor")
    res.rows.append(_row("floor", "onnx", "fp32", "-", 1, time_calls(lambda: floor.step(x1, s1), seconds)))

    for backend in BACKENDS:
        for precision in sorted({v.precision for v in bundle.variants if v.backend == backend}):
            try:
                engine = open_backend(bundle, backend, precision, threads)
            except (BackendUnavailableError, BundleError) as exc:
                res.notes.append(f"{backend}/{precision}: skipped ({exc})")
                continue
            progress(f"{backend}/{precision}")
            res.rows.append(_row("step", backend, precision, "-", 1, time_calls(lambda: engine.step(x1, s1), seconds)))
            for mode in ("continuous", "exact"):
                rt = Runtime.open(bundle, backend=backend, precision=precision, mode=mode, threads=threads)
                clock = iter(range(10**12))
                values = [series[i % len(series)] for i in range(64)]
                res.rows.append(_row("push", backend, precision, mode, 1, time_calls(
                    lambda: rt.push("s1", values[(n := next(clock)) % 64], ts=float(n)), seconds)))

    default = open_backend(bundle, "auto", None, threads)
    for mode in ("continuous", "exact"):
        for n in streams:
            progress(f"push_many {mode} {n}")
            rt = Runtime.open(bundle, backend=default.name, precision=default.precision, mode=mode, threads=threads)
            names = [f"s{i}" for i in range(n)]
            tick = iter(range(10**12))

            def many() -> None:
                k = next(tick)
                v = series[k % len(series)]
                rt.push_many([Sample(name, v, float(k)) for name in names])

            us = time_calls(many, seconds, min_calls=5)
            res.rows.append(_row("push_many", default.name, default.precision, mode, n, us))

    for base in bundle.manifest.get("baselines", []):
        progress(f"window-onnx {base['window']}")
        res.rows.append(_window_row(bundle, base, series, seconds, threads))
    if keras_model is not None:
        res.rows.extend(_keras_rows(Path(keras_model), bundle, series, seconds, progress, res.notes))
    res.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def _window_row(bundle: Bundle, base: dict, series: np.ndarray, seconds: float, threads: int) -> Row:
    import onnxruntime as ort

    path = bundle.path / base["file"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    w = int(base["window"])
    window = np.ascontiguousarray(np.resize(series, (w, series.shape[1]))[None], np.float32)
    us = time_calls(lambda: sess.run(["y"], {"x": window}), seconds)
    return _row("window-onnx", "onnx", "fp32", "window", 1, us, window=w, note="session.run per sample")


def _keras_rows(model_path: Path, bundle: Bundle, series: np.ndarray, seconds: float, progress, notes: list) -> list[Row]:
    try:
        import keras
        import tensorflow as tf
    except ImportError:
        notes.append("keras baselines skipped: TensorFlow is not installed (workstation only)")
        return []
    model = keras.saving.load_model(str(model_path), compile=False)
    w = bundle.window or 12
    sc = bundle.manifest.get("scaler", {})
    scaled = (series[:w] - np.asarray(sc.get("x_min", 0.0))) * np.asarray(sc.get("x_scale", 1.0))
    window = np.ascontiguousarray(scaled[None], np.float32)
    rows = []
    progress("keras-predict")
    us = time_calls(lambda: model.predict(window, verbose=0), max(seconds, 2.0), min_calls=30)
    rows.append(_row("keras-predict", "keras", "fp32", "window", 1, us, window=w, note="model.predict(window)"))
    fn = tf.function(model)
    tensor = tf.constant(window)
    progress("tf-function")
    us = time_calls(lambda: fn(tensor), seconds, min_calls=30)
    rows.append(_row("tf-function", "tensorflow", "fp32", "window", 1, us, window=w, note="tf.function(model)(window)"))
    return rows


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def table(res: BenchResult) -> str:
    """The printed report: every row, then our step against each baseline as a ratio."""
    lines = [f"{'case':13} {'backend':10} {'precision':13} {'mode':10} {'streams':>7} {'p50 us':>9} "
             f"{'p99 us':>9} {'max us':>9} {'steps/s':>12}"]
    for r in res.rows:
        label = f"{r.case}{f'(W={r.window})' if r.window else ''}"
        lines.append(f"{label:13} {r.backend:10} {r.precision:13} {r.mode:10} {r.streams:7d} {r.p50_us:9.1f} "
                     f"{r.p99_us:9.1f} {r.max_us:9.1f} {r.steps_per_s:12,.0f}")
    ours = [r for r in res.rows if r.case == "push" and r.streams == 1]
    if ours:
        best = min(ours, key=lambda r: r.p50_us if r.mode == "continuous" else float("inf"))
        lines.append("")
        lines.append(f"ours: push {best.backend}/{best.precision} continuous, p50 {best.p50_us:.1f} us per sample")
        for r in res.rows:
            if r.case in ("floor", "window-onnx", "keras-predict", "tf-function"):
                ratio = r.p50_us / best.p50_us
                what = "faster than" if ratio >= 1 else "slower than"
                lines.append(f"  {max(ratio, 1 / ratio):9.1f}x {what} {r.case}{f'(W={r.window})' if r.window else ''} ({r.p50_us:.1f} us)")
    lines.append("")
    lines.append(f"peak RSS {res.peak_rss_mb:.0f} MB; bundle variants {res.bundle_bytes:,} bytes; "
                 f"{res.machine.get('processor', '?')}, {res.machine.get('threads')} thread(s)")
    lines.extend(f"note: {n}" for n in res.notes)
    return "\n".join(lines)


def plot(res: BenchResult, path: str | Path) -> bool:
    """Latency per 1-stream case and throughput vs streams as a PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    single = [r for r in res.rows if r.streams == 1 and r.case != "push_many"]
    labels = [f"{r.case} {r.backend}/{r.precision} {r.mode if r.mode not in ('-', 'window') else ''}".strip() for r in single]
    ys = np.arange(len(single))
    left.barh(ys, [r.p50_us for r in single], color="tab:blue", label="p50")
    left.errorbar([r.p50_us for r in single], ys, xerr=[[0] * len(single), [r.p99_us - r.p50_us for r in single]],
                  fmt="none", ecolor="black", capsize=3, label="to p99")
    left.set_yticks(ys, labels, fontsize=7)
    left.set_xscale("log")
    left.set_xlabel("microseconds per sample (log)")
    left.set_title("one stream: latency per sample")
    left.legend(fontsize=7)
    for mode, colour in (("continuous", "tab:green"), ("exact", "tab:orange")):
        pts = sorted((r.streams, r.steps_per_s) for r in res.rows if r.case == "push_many" and r.mode == mode)
        if pts:
            right.plot(*zip(*pts), marker="o", color=colour, label=mode)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("streams per call")
    right.set_ylabel("stream-steps per second")
    right.set_title("push_many throughput")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
