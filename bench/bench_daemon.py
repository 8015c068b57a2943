"""Find the highest sample rate one edge-lstm daemon sustains on this machine without loss.

    python bench/bench_daemon.py                       # tiny LSTM, 1000 streams, 10 s per step
    python bench/bench_daemon.py --model seed --streams 2000 --seconds 20
    python bench/bench_daemon.py --bundle bundles/airline

Starts its own mosquitto on a free port, the daemon as a separate process (`edge-lstm run`),
and the load generator (`bench/loadgen.py`, MQTT QoS 1) as a third. For each offered rate
(streams x per-stream rate) it checks that the generator kept its schedule, the broker
acknowledged every sample, the daemon forecast every one of them (from its stats topic:
nothing dropped, refused or duplicated) and caught up within `--drain` seconds of the end.
The rate doubles until a step fails, then bisects. Not a test: the figure depends on the
machine and on what else runs on it (this is a 2-core box shared with other work).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_lstm.broker import free_port, wait_port
from edge_lstm.errors import EdgeLstmError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def start_broker(workdir: Path) -> tuple[subprocess.Popen, int]:
    """mosquitto on a free loopback port (as `nobody` when run as root)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 1000000\nlog_dest none\n")
    kw = {"user": "nobody"} if os.geteuid() == 0 else {}
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    try:
        wait_port(port, proc)
    except EdgeLstmError:
        proc.kill()
        raise
    return proc, port


def make_bundle(model: str, out: Path) -> Path:
    """A random-weight bundle: `tiny` (LSTM 8, window 6) or `seed` (LSTM 50 x 2, window 12)."""
    import numpy as np

    sys.path.insert(0, str(REPO / "tests"))
    from stacks import dense, recurrent, seed_like

    from edge_lstm_export.bundle_writer import write_bundle
    from edge_lstm_export.scaler import Scaler
    from edge_lstm_export.stack import Stack

    rng = np.random.default_rng(0)
    stack = seed_like(rng) if model == "seed" else Stack((recurrent("lstm", 1, 8, rng),), (dense(8, 1, rng),), window=6)
    scaler = Scaler("minmax", np.array([104.0]), np.array([1 / 518.0]), np.array([104.0]), np.array([1 / 518.0]))
    return write_bundle(stack, out / f"bench-{model}", name=f"bench-{model}", features=["v"], targets=["v"], scaler=scaler)


class Stats:
    """Follows the daemon's stats topic."""

    def __init__(self, port: int, device: str) -> None:
        self.q: queue.Queue = queue.Queue()
        self.latest: dict = {}
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.c.on_message = lambda c, u, m: self.q.put(json.loads(m.payload))
        self.c.connect("127.0.0.1", port)
        self.c.subscribe(f"edge/{device}/stats", 0)
        self.c.loop_start()

    def poll(self, wait: float = 0.0) -> list[dict]:
        out = []
        try:
            out.append(self.q.get(timeout=wait) if wait else self.q.get_nowait())
            while True:
                out.append(self.q.get_nowait())
        except queue.Empty:
            pass
        if out:
            self.latest = out[-1]
        return out

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def run_step(port: int, stats: Stats, device: str, streams: int, rate: float, seconds: float, drain: float) -> dict:
    """Offer streams x rate samples/s for `seconds`; report whether the daemon kept up."""
    stats.poll(2.0)
    start = dict(stats.latest)
    gen = subprocess.run(
        [sys.executable, str(HERE / "loadgen.py"), "--port", str(port), "--topic", "bench/{stream}/raw",
         "--streams", str(streams), "--rate", str(rate), "--seconds", str(seconds), "--qos", "1"],
        capture_output=True, text=True, timeout=seconds * 4 + 60,
    )
    if gen.returncode:
        raise RuntimeError(gen.stderr)
    g = json.loads(gen.stdout)
    done_at = time.monotonic()
    want = start.get("forecasts", 0) + g["sent"]
    samples: list[dict] = []
    caught_up = None
    while time.monotonic() - done_at < drain + 30:
        samples += stats.poll(0.5)
        if stats.latest.get("forecasts", 0) >= want:
            caught_up = time.monotonic() - done_at
            break
    last = stats.latest
    delta = {k: last.get(k, 0) - start.get(k, 0) for k in ("forecasts", "dropped", "refused", "duplicates", "rejected")}
    p50 = [s["p50_ms"] for s in samples if s.get("p50_ms") is not None]
    p99 = [s["p99_ms"] for s in samples if s.get("p99_ms") is not None]
    ok = (g["behind_s"] < 0.5 and g["acked"] == g["sent"] and delta["forecasts"] == g["sent"]
          and delta["dropped"] == delta["refused"] == delta["duplicates"] == 0
          and caught_up is not None and caught_up <= drain)
    return {"offered_per_s": g["offered_per_s"], "achieved_per_s": g["achieved_per_s"], "sent": g["sent"],
            "forecasts": delta["forecasts"], "dropped": delta["dropped"], "gen_behind_s": g["behind_s"],
            "catch_up_s": None if caught_up is None else round(caught_up, 2),
            "queue_max": last.get("queue_max"), "p50_ms": round(statistics.median(p50), 2) if p50 else None,
            "p99_ms": max(p99) if p99 else None, "ok": ok}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, help="bundle to run (default: a generated one, see --model)")
    ap.add_argument("--model", choices=("tiny", "seed"), default="tiny")
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--start", type=float, default=2000.0, help="first offered rate, samples/s in total")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each step")
    ap.add_argument("--drain", type=float, default=2.0, help="seconds the daemon may take to catch up")
    ap.add_argument("--bisect", type=int, default=3, help="bisection steps after the first failure")
    ap.add_argument("--sink-qos", type=int, choices=(0, 1), default=1)
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    os.chmod(work, 0o755)
    broker, port = start_broker(work)
    daemon = None
    stats = None
    try:
        bundle = args.bundle.resolve() if args.bundle else make_bundle(args.model, work)
        device = "bench"
        (work / "bench.toml").write_text(
            f'[device]\nid = "{device}"\n[model]\nbundle = "{bundle}"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nreceive_maximum = 5000\n'
            f'[source.mqtt]\ntopics = ["bench/{{stream}}/raw"]\nqos = 1\n'
            f'[sink.mqtt]\nqos = {args.sink_qos}\n'
            f'[pipeline]\nqueue_size = 50000\nstats_interval = 1\n[log]\nlevel = "warning"\n'
        )
        daemon = subprocess.Popen([sys.executable, "-m", "edge_lstm.commands.run", "--config", str(work / "bench.toml")],
                                  cwd=REPO, stderr=(work / "daemon.log").open("wb"))
        stats = Stats(port, device)
        if not stats.poll(15):
            raise RuntimeError("the daemon published no stats:\n" + (work / "daemon.log").read_text())
        print(f"bundle {bundle.name}, {args.streams} streams, {args.seconds:g} s per step, cores {os.cpu_count()}, "
              f"load average {os.getloadavg()[0]:.2f}")
        print(f"{'offered/s':>10} {'sent':>8} {'forecasts':>9} {'dropped':>7} {'catch-up s':>10} {'queue hw':>9} "
              f"{'p50 ms':>7} {'p99 ms':>7}  ok")
        good, bad = 0.0, None
        rate = args.start
        steps = 0
        while True:
            r = run_step(port, stats, device, args.streams, rate / args.streams, args.seconds, args.drain)
            print(f"{r['offered_per_s']:>10.0f} {r['sent']:>8} {r['forecasts']:>9} {r['dropped']:>7} "
                  f"{str(r['catch_up_s']):>10} {str(r['queue_max']):>9} {str(r['p50_ms']):>7} {str(r['p99_ms']):>7}  "
                  f"{'yes' if r['ok'] else 'NO'}", flush=True)
            if r["ok"]:
                good = rate
            else:
                bad = rate
            if bad is None:
                rate *= 2
                continue
            steps += 1
            if steps > args.bisect or bad - good < 0.05 * bad:
                break
            rate = (good + bad) / 2
        print(f"highest sustained rate without loss: {good:.0f} samples/s "
              f"({good / args.streams:.2f} per stream for {args.streams} streams)")
    finally:
        if stats is not None:
            stats.close()
        if daemon is not None:
            daemon.terminate()
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
