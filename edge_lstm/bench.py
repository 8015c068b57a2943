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
    daemon_rss_mb: float | None = None  # with --e2e: the daemon process's peak RSS
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
            # Batches built up front (values as decoded JSON gives them; ts=None: arrival
            # order), so the time is push_many's own.
            batches = [[Sample(f"s{i}", series[k].tolist(), None) for i in range(n)] for k in range(8)]
            tick = iter(range(10**12))

            def many() -> None:
                rt.push_many(batches[next(tick) % 8])

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
    w = bundle.window or 12
    sc = bundle.manifest.get("scaler", {})
    scaled = (series[:w] - np.asarray(sc.get("x_min", 0.0))) * np.asarray(sc.get("x_scale", 1.0))
    window = np.ascontiguousarray(scaled[None], np.float32)
    try:
        from edge_lstm_export.keras_baseline import keras_baselines

        calls = keras_baselines(model_path, window)
    except ImportError:
        notes.append("keras baselines skipped: TensorFlow is not installed (workstation only)")
        return []
    rows = []
    for case, note, backend in (("keras-predict", "model.predict(window)", "keras"),
                                ("tf-function", "tf.function(model)(window)", "tensorflow")):
        progress(case)
        us = time_calls(calls[case], max(seconds, 2.0) if case == "keras-predict" else seconds, min_calls=30)
        rows.append(_row(case, backend, "fp32", "window", 1, us, window=w, note=note))
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
    baselines = [r for r in res.rows if r.case in ("floor", "window-onnx", "keras-predict", "tf-function")]
    ours = [r for r in res.rows if r.case == "push" and r.streams == 1 and r.precision == "fp32"]
    if baselines and ours:
        names = [f"{b.case}{f'(W={b.window})' if b.window else ''}" for b in baselines]
        lines += ["", "speed-up of one push (p50) over each baseline (baseline p50 / ours; < 1 = slower):",
                  f"{'ours':30}" + "".join(f"{n:>21}" for n in names)]
        for r in ours:
            label = f"push {r.backend}/{r.precision} {r.mode}"
            lines.append(f"{label:30}" + "".join(f"{b.p50_us / r.p50_us:>20.1f}x" for b in baselines))
    lines.append("")
    if res.daemon_rss_mb is not None:
        lines.append(f"daemon peak RSS {res.daemon_rss_mb:.0f} MB (the separate `edge-lstm run` process of --e2e)")
    lines.append(f"peak RSS {res.peak_rss_mb:.0f} MB (this process); bundle variants {res.bundle_bytes:,} bytes; "
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


def run_e2e(
    bundle_path: str | Path,
    *,
    broker: str | None = None,
    rate: float = 100.0,
    seconds: float = 10.0,
    qos: int = 1,
    backend: str = "auto",
    mode: str = "exact",
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[Row, float]:
    """Sample published -> forecast received, through a real broker and a daemon process.

    The daemon runs as its own process (`python -m edge_lstm run`), as on a device; this
    process publishes one stream at `rate` and times each forecast's arrival. Returns the
    latency row and the daemon's peak RSS in MB.
    """
    import json
    import signal
    import subprocess
    import sys
    import tempfile
    import threading
    from contextlib import ExitStack

    from edge_lstm.broker import LocalBroker
    from edge_lstm.config import parse_broker_url
    from edge_lstm.mqtt import connect_client

    bundle = Bundle.open(bundle_path)
    series = _series(bundle)
    with ExitStack() as stack:
        if broker is None:
            local = stack.enter_context(LocalBroker())
            url, kind = f"mqtt://{local.host}:{local.port}", local.kind
        else:
            url, kind = (broker if "://" in broker else f"mqtt://{broker}"), "given"
        target = parse_broker_url(url)
        device = f"bench-{os.getpid()}"
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-lstm-e2e-")))
        (work / "bench.toml").write_text(
            f'[device]\nid = "{device}"\n[model]\nbundle = "{Path(bundle.path).resolve()}"\nmode = "{mode}"\n'
            f'backend = "{backend}"\n[mqtt]\nhost = "{target.host}"\nport = {target.effective_port}\n'
            f'protocol = "{"3.1.1" if kind == "amqtt" else "5"}"\npersistent = false\n'
            f'[source.mqtt]\ntopics = ["{device}/{{stream}}/raw"]\nqos = {qos}\n[sink.mqtt]\nqos = {qos}\n'
            f'[commands]\nenabled = false\n[pipeline]\nstats_interval = 0\n')
        sent: dict[float, int] = {}
        lat: list[float] = []
        inside: list[float] = []  # the daemon's own share: sample received -> forecast handed to paho
        online = threading.Event()
        sub = connect_client(url, client_id=f"{device}-sub")
        stack.callback(lambda: (sub.disconnect(), sub.loop_stop()))

        def on_message(c, u, m) -> None:
            now = time.perf_counter_ns()
            if m.topic.endswith("/status"):
                if m.payload == b"online":
                    online.set()
                return
            doc = json.loads(m.payload)
            t0 = sent.get(doc["ts"])
            if t0 is not None:
                lat.append((now - t0) / 1e3)
                inside.append(doc.get("latency_ms", float("nan")) * 1e3)

        sub.on_message = on_message
        sub.subscribe([(f"edge/{device}/pred/#", qos), (f"edge/{device}/status", 1)])
        progress("e2e: starting the daemon")
        daemon = subprocess.Popen([sys.executable, "-m", "edge_lstm", "run", "--config", str(work / "bench.toml")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def stop_daemon() -> None:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(15)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait(5)

        stack.callback(stop_daemon)
        if not online.wait(30):
            stop_daemon()
            raise BackendUnavailableError(f"the daemon did not come online: {daemon.stderr.read().decode(errors='replace')[-400:]}")
        pub = connect_client(url, client_id=f"{device}-pub")
        stack.callback(lambda: (pub.disconnect(), pub.loop_stop()))
        n = int(rate * seconds)
        progress(f"e2e: publishing {n} samples at {rate:g}/s")
        start = time.perf_counter()
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            ts = float(i)
            sent[ts] = time.perf_counter_ns()
            pub.publish(f"{device}/e2e/raw", json.dumps({"ts": ts, "value": float(series[i % len(series), 0])}), qos=qos)
        end = time.monotonic() + 5
        while len(lat) < n and time.monotonic() < end:
            time.sleep(0.05)
        rss = _peak_rss_mb(daemon.pid)
    us = np.asarray(lat or [float("nan")])
    own = np.percentile(inside, [50, 99]) if inside else (float("nan"),) * 2
    row = _row("e2e", backend, "-", mode, 1, us, note=f"QoS {qos}, {rate:g} samples/s, broker {kind}, "
               f"{n - len(lat)} of {n} forecasts missing; inside the daemon p50 {own[0]:.0f} us, p99 {own[1]:.0f} us")
    row.steps_per_s = len(lat) / seconds
    return row, rss


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
