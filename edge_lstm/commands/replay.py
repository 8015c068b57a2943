"""`edge-lstm replay`: publish a CSV series (or stdin) to a broker at a fixed rate."""

from __future__ import annotations

import json
import sys
import time

import click

from edge_lstm.commands import connect_or_exit, exit_with
from edge_lstm.errors import EdgeLstmError


@click.command()
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--broker", default="localhost", show_default=True, metavar="URL",
              help="mqtt://[user[:pass]@]host[:port] or mqtts://... (a bare host works too).")
@click.option("--topic", required=True, help="Topic to publish to, e.g. sensors/airline/raw.")
@click.option("--rate", type=float, default=10.0, show_default=True, help="Samples per second (0 = as fast as possible).")
@click.option("--column", "columns", multiple=True, metavar="NAME",
              help="CSV column holding a feature (repeat, in model order); default: every numeric column.")
@click.option("--qos", type=click.Choice(["0", "1"]), default="1", show_default=True)
@click.option("--ts", "ts_mode", type=click.Choice(["wall", "none"]), default="wall", show_default=True,
              help="Timestamp each sample with the wall clock, or send none.")
@click.option("--loop", is_flag=True, help="Start again at the end of the file (until Ctrl-C).")
@click.option("--ca", "ca_file", type=click.Path(dir_okay=False, exists=True), help="CA certificate for mqtts://.")
@click.option("--password-env", metavar="VAR", help="Environment variable holding the password.")
def replay(file: str, broker: str, topic: str, rate: float, columns: tuple[str, ...], qos: str, ts_mode: str,
           loop: bool, ca_file: str | None, password_env: str | None) -> None:
    """Publish the rows of a CSV FILE ('-' = stdin) as samples, RATE per second.

    Each row becomes {"ts": <now>, "value": v} (one column) or {"ts": ..., "values": [...]}.

    \b
    Examples:
      edge-lstm replay tests/data/airline-passengers.csv --broker localhost --topic sensors/airline/raw --rate 20
      cat readings.csv | edge-lstm replay - --topic sensors/boiler/raw --column temp --column rh
    """
    from edge_lstm.sources.replay import Pacer, csv_rows, open_text

    if "+" in topic or "#" in topic or not topic:
        click.echo(f"error: --topic {topic!r}: publish to one topic, without wildcards", err=True)
        sys.exit(2)
    client = connect_or_exit(broker, ca_file=ca_file, password_env=password_env)
    sent = 0
    t0 = time.monotonic()
    pacer = Pacer(rate)
    last = None
    try:
        while True:
            with open_text(file) as fh:
                for line, text in csv_rows(fh, columns, name=file):
                    try:
                        values = [float(v) for v in text.split(",")]
                    except ValueError:
                        click.echo(f"warning: {file}:{line}: not all numbers ({text!r}); skipped", err=True)
                        continue
                    doc: dict = {"ts": time.time()} if ts_mode == "wall" else {}
                    if len(values) == 1:
                        doc["value"] = values[0]
                    else:
                        doc["values"] = values
                    pacer.tick()
                    last = client.publish(topic, json.dumps(doc, separators=(",", ":")), qos=int(qos))
                    sent += 1
            if not loop or file == "-":
                break
    except KeyboardInterrupt:
        pass
    except EdgeLstmError as exc:
        exit_with(exc)
    finally:
        if last is not None and int(qos):
            try:
                last.wait_for_publish(10)
            except (RuntimeError, ValueError):
                pass
        client.disconnect()
        client.loop_stop()
    click.echo(f"published {sent} samples to {topic} in {time.monotonic() - t0:.1f} s", err=True)


if __name__ == "__main__":
    replay()
