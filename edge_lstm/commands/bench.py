"""`edge-lstm bench`: latency, throughput and memory against the naive way, in one run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edge_lstm.errors import ConfigError


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--streams", default="1,64,1024,8192", show_default=True, help="Stream counts for push_many throughput.")
@click.option("--seconds", default=1.0, show_default=True, help="Measuring time per case.")
@click.option("--threads", default=1, show_default=True, help="Engine threads (the run is pinned to one CPU when 1).")
@click.option("--keras", "keras_model", type=click.Path(path_type=Path), help="Also time Keras predict / tf.function on this .keras file (needs TensorFlow).")
@click.option("--e2e", is_flag=True, help="Also time sample-published -> forecast-received through a broker and a daemon process.")
@click.option("--broker", default=None, metavar="URL", help="Broker for --e2e (default: start a local one).")
@click.option("--rate", default=100.0, show_default=True, help="Samples per second for --e2e.")
@click.option("--qos", type=click.Choice(["0", "1"]), default="1", show_default=True, help="QoS for --e2e.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write every row as JSON here.")
@click.option("--plot", "plot_out", type=click.Path(path_type=Path), help="Draw latency and throughput to this PNG (needs matplotlib).")
def bench(bundle: Path, streams: str, seconds: float, threads: int, keras_model, e2e: bool, broker, rate: float,
          qos: str, json_out, plot_out) -> None:
    """Measure per-sample latency and stream-steps per second, beside the baselines.

    \b
    Every installed backend x precision in the bundle is timed at one stream (bare step,
    push in continuous and exact mode); push_many at each stream count; and, in the same run,
    onnxruntime's empty call, the whole-window model re-run per sample (bundles exported with
    --baseline-windows), and Keras predict / tf.function when --keras is given.

    \b
    Examples:
      edge-lstm bench bundles/airline
      edge-lstm bench bundles/airline --streams 1,64,1024,8192 --json out.json --plot latency.png
      edge-lstm bench bundles/airline --e2e --broker localhost
    """
    from edge_lstm import bench as b

    try:
        counts = [int(s) for s in streams.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--streams: expected comma-separated integers such as 1,64,1024, found {streams!r}") from None
    e2e_row = None
    if e2e:  # first, before pinning: the broker and the daemon get their own CPUs, as on a device
        e2e_row, daemon_rss = b.run_e2e(bundle, broker=broker, rate=rate, qos=int(qos),
                                        progress=lambda m: click.echo(m, err=True))
    pinned = b.pin_to_one_cpu() if threads == 1 else "not pinned (threads > 1)"
    cases = ["floor", "backends", *(f"push_many {n}" for n in counts)]
    with click.progressbar(length=len(cases) * 2 + 8, label="benchmarking", file=sys.stderr) as bar:
        res = b.run_bench(bundle, streams=counts, seconds=seconds, threads=threads, keras_model=keras_model,
                          progress=lambda _: bar.update(1))
    res.notes.insert(0, pinned)
    if e2e_row is not None:
        res.rows.append(e2e_row)
        res.daemon_rss_mb = daemon_rss
        res.notes.append(f"e2e: {e2e_row.note}")
    click.echo(b.table(res))
    if json_out:
        json_out.write_text(json.dumps(res.as_dict(), indent=2) + "\n")
        click.echo(f"wrote {json_out}")
    if plot_out:
        click.echo(f"wrote {plot_out}" if b.plot(res, plot_out) else "no plot: matplotlib is not installed (pip install matplotlib)")
