"""`edge-lstm subscribe`: watch forecasts (and any other topic) live, readable or as JSON lines."""

from __future__ import annotations

import json
import queue
import sys
import threading
from datetime import datetime, timezone

import click

from edge_lstm.commands import connect_or_exit


def describe(topic: str, payload: bytes) -> str:
    """One human-readable line for a message; prediction payloads are spelled out."""
    try:
        doc = json.loads(payload)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "forecast" in doc and "stream" in doc:
        ts = doc.get("ts")
        if ts is None:  # the sample came without a timestamp (arrival order): nothing to show
            when = ""
        elif isinstance(ts, (int, float)) and 0 <= ts < 32503680000:
            when = "  ts " + datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
        else:
            when = f"  ts {ts}"
        steps = doc["forecast"]
        targets = doc.get("targets") or [f"y{i}" for i in range(len(steps[0]) if steps else 0)]
        values = "  ".join(
            f"{name} {steps[0][j]:.6g}" if len(steps) == 1 else f"{name} {[round(s[j], 6) for s in steps]}"
            for j, name in enumerate(targets)
        )
        warm = "  (warming up)" if doc.get("warming_up") else ""
        return (f"{topic}  {doc['stream']} #{doc.get('seq')}{when}  {values}{warm}  "
                f"[{doc.get('model')} {doc.get('variant')}, {doc.get('latency_ms')} ms]")
    text = payload.decode("utf-8", "replace")
    return f"{topic}  {text}"


def as_json(topic: str, payload: bytes, retain: bool) -> str:
    """One JSON line: topic, retain flag, and the payload (parsed if it is JSON, else text)."""
    try:
        body = json.loads(payload)
    except ValueError:
        body = payload.decode("utf-8", "replace")
    return json.dumps({"topic": topic, "retain": retain, "payload": body}, separators=(",", ":"))


@click.command()
@click.argument("topics", nargs=-1, required=True)
@click.option("--broker", default="localhost", show_default=True, metavar="URL",
              help="mqtt://[user[:pass]@]host[:port] or mqtts://... (a bare host works too).")
@click.option("--json", "json_lines", is_flag=True, help="Print one JSON object per message.")
@click.option("--qos", type=click.Choice(["0", "1"]), default="1", show_default=True, help="Subscription QoS.")
@click.option("--count", type=int, default=0, help="Exit after this many messages (0 = run until Ctrl-C).")
@click.option("--timeout", type=float, default=0.0, help="Exit 1 if no message arrives for this many seconds (0 = wait forever).")
@click.option("--ca", "ca_file", type=click.Path(dir_okay=False, exists=True), help="CA certificate for mqtts://.")
@click.option("--password-env", metavar="VAR", help="Environment variable holding the password.")
def subscribe(topics: tuple[str, ...], broker: str, json_lines: bool, qos: str, count: int, timeout: float,
              ca_file: str | None, password_env: str | None) -> None:
    """Print messages from TOPICS (wildcards allowed), forecasts spelled out.

    \b
    Examples:
      edge-lstm subscribe --broker localhost 'edge/+/pred/#'
      edge-lstm subscribe --broker mqtts://reader@broker.lan --ca ca.crt --password-env PW 'edge/#' --json
      edge-lstm subscribe 'edge/pi-01/stats' --count 1
    """

    client = connect_or_exit(broker, ca_file=ca_file, password_env=password_env)
    inbox: queue.Queue = queue.Queue()
    client.on_message = lambda c, u, m: inbox.put((m.topic, bytes(m.payload), bool(m.retain)))
    acked: set[int] = set()
    changed = threading.Condition()

    def on_subscribe(c, u, mid, reason_codes, props) -> None:
        with changed:
            acked.add(mid)
            changed.notify_all()

    client.on_subscribe = on_subscribe
    mids = {client.subscribe(t, int(qos))[1] for t in topics}
    with changed:
        if not changed.wait_for(lambda: mids <= acked, timeout=10.0):
            click.echo(f"error: the broker did not confirm the subscription to {', '.join(topics)} within 10 s", err=True)
            sys.exit(1)
    click.echo(f"subscribed to {', '.join(topics)}", err=True)  # scripts can wait for this line
    seen = 0
    try:
        while not count or seen < count:
            try:
                topic, payload, retain = inbox.get(timeout=timeout or None)
            except queue.Empty:
                click.echo(f"error: no message on {', '.join(topics)} for {timeout:g} s", err=True)
                sys.exit(1)
            click.echo(as_json(topic, payload, retain) if json_lines else describe(topic, payload))
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()


if __name__ == "__main__":
    subscribe()
