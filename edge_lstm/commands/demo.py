"""`edge-lstm demo`: the whole product on one machine, in under 30 seconds.

A broker (mosquitto if installed, else the embedded amqtt), the daemon on the shipped airline
bundle, a replay of the airline series as a live sensor, and a subscriber printing actual
versus forecast as the forecasts arrive. Everything it starts, it stops.
"""

from __future__ import annotations

import csv
import json
import math
import queue
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import click
import numpy as np

DEMO = Path(__file__).resolve().parent.parent / "demo"
STREAM = "airline"
TRAIN_SHARE = 0.8  # the shipped model was trained on the first 80 % of the months (demo_model.py)


def _series(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r["Month"] for r in rows], np.array([float(r["Passengers"]) for r in rows])


def _epoch(month: str) -> float:
    year, mon = (int(p) for p in month.split("-"))
    return datetime(year, mon, 1, tzinfo=timezone.utc).timestamp()


def _scores(actual: np.ndarray, forecast: np.ndarray) -> tuple[float, float]:
    err = actual - forecast
    return float(np.mean(np.abs(err))), float(math.sqrt(np.mean(err**2)))


@click.command()
@click.option("--rate", default=20.0, show_default=True, help="Samples replayed per second.")
@click.option("--mode", type=click.Choice(["exact", "continuous"]), default="exact", show_default=True)
@click.option("--backend", default="auto", show_default=True, help="auto, onnx, litert or numpy.")
@click.option("--bundle", type=click.Path(path_type=Path), default=DEMO / "airline", show_default=False,
              help="Bundle to run (default: the shipped airline model).")
@click.option("--broker", default=None, metavar="URL", help="Use this broker instead of starting one (mqtt://host:port).")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=Path("edge-lstm-demo.png"),
              show_default=True, help="Where to save actual vs forecast (when matplotlib is installed).")
@click.option("--no-plot", is_flag=True, help="Do not draw the plot.")
def demo(rate: float, mode: str, backend: str, bundle: Path, broker: str | None, plot_path: Path, no_plot: bool) -> None:
    """Run the whole pipeline locally on the airline series and show forecast vs actual.

    \b
    Starts a broker (mosquitto if installed, else the embedded pure-Python amqtt), the edge
    daemon on the bundle shipped with edge-lstm (LSTM 50 -> LSTM 50 -> Dense 1 on windows of
    12 months, trained on the first 80 %: 1949-01 to 1958-07), replays the 144 months as a
    live sensor over MQTT, and prints each forecast as it arrives, then scores them (all
    months, and the held-out 1958-08 to 1960-12). Ends by itself; Ctrl-C stops everything.
    Continuous mode shows what the bundle's drift check warns of: this model wants exact.

    \b
    Examples:
      edge-lstm demo
      edge-lstm demo --mode continuous     # what the drift warning is about: this model wants exact
      edge-lstm demo --rate 50 --backend numpy
      edge-lstm demo --backend litert      # with the litert extra: pip install -e '.[litert]'
    """
    from contextlib import ExitStack

    from edge_lstm import config
    from edge_lstm.broker import LocalBroker
    from edge_lstm.daemon import Daemon
    from edge_lstm.drift import continuous_mode_warning, recorded
    from edge_lstm.mqtt import connect_client

    months, values = _series(DEMO / "airline-passengers.csv")
    with ExitStack() as stack:
        if broker is None:
            local = stack.enter_context(LocalBroker())
            url, protocol = f"mqtt://{local.host}:{local.port}", ("5" if local.kind == "mosquitto" else "3.1.1")
            click.echo(f"broker   {local.kind} on {local.host}:{local.port}" + (f" (pid {local.pid})" if local.pid else ""))
        else:
            url, protocol = broker if "://" in broker else f"mqtt://{broker}", "3.1.1"
        target = config.parse_broker_url(url)
        cfg = config.from_dict({
            "device": {"id": "demo"},
            "model": {"bundle": str(Path(bundle).resolve()), "mode": mode, "backend": backend},
            "mqtt": {"host": target.host, "port": target.port, "protocol": protocol, "persistent": False,
                     "client_id": f"edge-lstm-demo-{time.time_ns() % 10**9}"},
            "source": {"kind": "mqtt"}, "sink": {"kind": "mqtt"},
            "commands": {"enabled": False}, "pipeline": {"stats_interval": 0},
        }, source="<demo>")
        daemon = Daemon(cfg)
        daemon.start(connect_timeout=10)
        stack.callback(daemon.stop)
        rt = daemon.runtime
        click.echo(f"daemon   model {rt.bundle.name} ({rt.backend_name}/{rt.precision}), {mode} mode, window {rt.window}")

        inbox: queue.Queue = queue.Queue()
        sub = connect_client(url, protocol="3.1.1")
        stack.callback(lambda: (sub.disconnect(), sub.loop_stop()))
        subscribed = threading.Event()
        sub.on_subscribe = lambda *a: subscribed.set()
        sub.on_message = lambda c, u, m: inbox.put(json.loads(m.payload))
        sub.subscribe(f"edge/{cfg.device_id}/pred/#", 1)
        subscribed.wait(10)

        pub = connect_client(url, protocol="3.1.1")
        stack.callback(lambda: (pub.disconnect(), pub.loop_stop()))
        stop = threading.Event()
        stack.callback(stop.set)

        def replay() -> None:
            for month, value in zip(months, values):
                if stop.wait(1.0 / rate if rate > 0 else 0):
                    return
                pub.publish(f"sensors/{STREAM}/raw", json.dumps({"ts": _epoch(month), "value": value}), qos=1)

        threading.Thread(target=replay, name="demo-replay", daemon=True).start()
        click.echo(f"sensor   replaying {len(values)} months to sensors/{STREAM}/raw at {rate:g}/s\n")
        click.echo(f"{'month':8} {'actual':>7} {'forecast':>9} {'error':>7}   next month   (forecast made the month before)")
        forecasts = np.full(len(values), np.nan)  # forecasts[t]: made after month t, for month t+1
        warming = np.zeros(len(values), bool)  # warming[t]: forecasts[t] saw less than a window
        latency = []
        by_ts = {_epoch(m): i for i, m in enumerate(months)}
        deadline = time.monotonic() + 30 + len(values) / max(rate, 1)
        got = 0
        while got < len(values) and time.monotonic() < deadline:
            try:
                msg = inbox.get(timeout=1.0)
            except queue.Empty:
                continue
            t = by_ts.get(msg["ts"])
            if t is None:
                continue
            got += 1
            forecasts[t] = msg["forecast"][0][0]
            warming[t] = bool(msg.get("warming_up"))
            latency.append(msg.get("latency_ms", 0.0))
            prev = forecasts[t - 1] if t else math.nan
            warm = "   (warming up)" if warming[t] else ""
            made = f"{prev:9.1f} {values[t] - prev:+7.1f}" if not math.isnan(prev) else f"{'-':>9} {'-':>7}"
            click.echo(f"{months[t]:8} {values[t]:7.0f} {made}   {forecasts[t]:8.1f}{warm}")
        stop.set()

        pred = np.r_[np.nan, forecasts[:-1]]  # pred[t]: forecast for month t
        pred_warm = np.r_[True, warming[:-1]]  # ...made before a full window had been seen
        ok = ~pred_warm & ~np.isnan(pred)
        cut = int(len(values) * TRAIN_SHARE)
        held = ok & (np.arange(len(values)) >= cut)
        click.echo(f"\n{got} forecasts for {len(values)} samples; daemon latency p50 {np.median(latency):.2f} ms per sample")
        for label, mask in ((f"all months ({months[int(np.argmax(ok))]} on)", ok),
                            (f"held-out ({months[cut]} to {months[-1]}, not trained on)", held)):
            if mask.any():
                mae, rmse = _scores(values[mask], pred[mask])
                naive_mae, naive_rmse = _scores(values[mask], np.r_[np.nan, values[:-1]][mask])
                click.echo(f"{label:46} MAE {mae:6.1f}  RMSE {rmse:6.1f}   "
                           f"(repeat-last-month: MAE {naive_mae:.1f}, RMSE {naive_rmse:.1f})")
        warning = continuous_mode_warning(recorded(rt.bundle)) if mode == "continuous" else None
        if warning:
            click.echo(f"warning: {warning}", err=True)
        if not no_plot:
            _plot(plot_path, months, values, pred, pred_warm, cut)
        if got < len(values):
            raise SystemExit(1)


def _plot(path: Path, months: list[str], values: np.ndarray, pred: np.ndarray, warm: np.ndarray, cut: int) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        click.echo("(no plot: pip install matplotlib to get one)")
        return
    fig, ax = plt.subplots(figsize=(10, 4))
    x = np.arange(len(values))
    ax.plot(x, values, label="actual", color="black")
    full = np.where(warm, np.nan, pred)
    first = int(np.argmax(~warm))  # the warm-up line ends where the real forecasts start
    ax.plot(x[: first + 1], np.r_[pred[:first], pred[first]], color="grey", linestyle="--",
            label="warm-up (less than a window seen; not scored)")
    ax.plot(x, full, label="forecast (one month ahead, edge-lstm)", color="tab:orange")
    ax.axvline(cut - 0.5, color="grey", linestyle=":", label="end of training data")
    ax.set_xticks(x[::12], [m[:4] for m in months[::12]])
    ax.set_ylabel("passengers (thousands)")
    ax.set_title("edge-lstm demo: airline passengers, forecast as each month arrives")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    click.echo(f"plot saved to {path}")
