"""`edge-lstm publish-bundle` and `edge-lstm keygen`: signed model rollout to a fleet over MQTT."""

from __future__ import annotations

import secrets
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import click

from edge_lstm.bundle_transfer import DEFAULT_CHUNK, MAX_CHUNK, MIN_CHUNK, Offer, chunk_messages
from edge_lstm.errors import EdgeLstmError

#: Seconds without a new retained message after which the broker has sent them all.
RETAINED_QUIET = 1.0
#: QoS 1 publishes in flight at most (a large bundle is not queued whole in RAM).
IN_FLIGHT = 32


def expand(to: str, devices: tuple[str, ...], retained) -> list[str]:
    """The offer topics: `to` as it is, or with its one `+` level filled by each device (given,
    or found as the retained `.../<device>/status` topics next to it)."""
    levels = to.split("/")
    if "#" in to or any("+" in lv and lv != "+" for lv in levels) or levels.count("+") > 1:
        raise click.BadParameter("at most one '+' as a whole level, and no '#'", param_hint="--to")
    if "+" not in levels:
        if devices:
            raise click.BadParameter("--device needs a '+' level in --to to fill", param_hint="--to")
        return [to]
    i = levels.index("+")
    if not devices:
        status = "/".join(levels[: i + 1] + ["status"])
        found = retained([status])
        devices = tuple(sorted({t.split("/")[i] for t, p in found.items() if p}))
        if not devices:
            raise EdgeLstmError(f"no device found: no retained {status} on the broker; name them with --device ID")
    return ["/".join(levels[:i] + [d] + levels[i + 1:]) for d in devices]


@click.command("publish-bundle")
@click.argument("bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--to", "to", required=True, metavar="TOPIC",
              help="Offer topic of the devices' `rollout.topic`; a '+' level is filled with each --device, or "
                   "with every device that has a retained status next to it (edge/+/bundle: edge/<device>/status).")
@click.option("--key", type=click.Path(dir_okay=False, exists=True), help="Ed25519 private key, PEM (edge-lstm keygen).")
@click.option("--device", "devices", multiple=True, metavar="ID", help="A device to fill the '+' of --to with (repeatable).")
@click.option("--version", "release_version", type=click.IntRange(min=1), metavar="N",
              help="Release version, higher = newer; default: the UTC time as YYYYMMDDHHMMSS.")
@click.option("--rollback", is_flag=True, help="Sign the release as a rollback: devices on a newer version accept it.")
@click.option("--chunk-size", type=click.IntRange(MIN_CHUNK, MAX_CHUNK), default=DEFAULT_CHUNK, show_default=True,
              help="Bytes per chunk message.")
@click.option("--clear", is_flag=True, help="Remove the retained offer and its chunks from the topics instead "
                                             "(once the devices have installed it).")
@click.option("--broker", default="localhost", show_default=True, metavar="URL",
              help="mqtt://[user[:pass]@]host[:port] or mqtts://...")
@click.option("--ca", "ca_file", type=click.Path(dir_okay=False, exists=True), help="CA certificate for mqtts://.")
@click.option("--password-env", metavar="VAR", help="Environment variable holding the password.")
def publish_bundle(bundle_dir: Path, to: str, key: str | None, devices: tuple[str, ...], release_version: int | None,
                   rollback: bool, chunk_size: int, clear: bool, broker: str, ca_file: str | None,
                   password_env: str | None) -> None:
    """Send BUNDLE_DIR to devices as a signed release: retained, chunked messages.

    \b
    Examples:
      edge-lstm keygen release                      # once: release.key (keep it), release.pub (to devices)
      edge-lstm publish-bundle bundles/airline-lstm --to 'edge/+/bundle' --key release.key --broker central.lan
      edge-lstm publish-bundle bundles/airline-lstm --to edge/+/bundle --device pi-01 --key release.key
      edge-lstm publish-bundle bundles/airline-lstm --to 'edge/+/bundle' --clear   # after the rollout

    Every file is pinned by sha256 in a release document signed with Ed25519 (version and
    rollback flag included). Devices verify it, install, check and report on edge/<device>/events.
    """
    from edge_lstm.commands import connect_or_exit
    from edge_lstm.signing import key_id, load_private_key, make_release, parse_release, sign

    try:
        if not clear:
            if not key:
                raise click.UsageError("--key is required (or --clear)")
            sk = load_private_key(key)
            version = release_version or int(datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S"))
            raw = make_release(bundle_dir, version=version, rollback=rollback)
            release = parse_release(raw)
            offer = Offer(secrets.token_hex(8), raw, sign(raw, sk), key_id(sk.public_key()), chunk_size)
        client = connect_or_exit(broker, ca_file=ca_file, password_env=password_env)
        try:
            retained = _retained_reader(client)
            topics = expand(to, devices, retained)
            old = retained(topics)
            if clear:
                for topic in topics:
                    _publish_all(client, [(t, b"") for t in _stale_chunks(topic, old.get(topic), keep=None)]
                                 + [(topic, b"")])
                click.echo(f"cleared the offer and its chunks on {len(topics)} topic(s): {', '.join(topics)}")
                return
            for topic in topics:
                n = _publish_all(client, [*chunk_messages(bundle_dir, offer, release, topic),
                                          (topic, offer.encode())])
                _publish_all(client, [(t, b"") for t in _stale_chunks(topic, old.get(topic), keep=offer.transfer)])
                click.echo(f"{topic}: {release.label}, {len(release.files)} files, {release.total_bytes} bytes in {n - 1} "
                           f"chunk(s), signed by key {offer.key_id}")
            click.echo(f"watch the outcome: edge-lstm subscribe --broker {broker} '{_events_filter(to)}'")
        finally:
            client.disconnect()
            client.loop_stop()
    except EdgeLstmError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)


def _events_filter(to: str) -> str:
    levels = to.split("/")
    return "/".join(levels[:-1] + ["events"]) if len(levels) > 1 else "edge/+/events"


def _retained_reader(client):
    """`read(filters) -> {topic: payload}`: the retained messages the broker holds for them."""
    def read(filters: list[str]) -> dict[str, bytes]:
        got: dict[str, bytes] = {}
        last = [time.monotonic()]
        lock = threading.Lock()

        def on_message(c, u, m) -> None:
            if m.retain:
                with lock:
                    got[m.topic] = bytes(m.payload)
                    last[0] = time.monotonic()

        client.on_message = on_message
        for f in filters:
            client.subscribe(f, 1)
        last[0] = time.monotonic()
        while time.monotonic() - last[0] < RETAINED_QUIET:
            time.sleep(0.05)
        for f in filters:
            client.unsubscribe(f)
        client.on_message = None
        return got

    return read


def _stale_chunks(topic: str, old_offer: bytes | None, *, keep: str | None) -> list[str]:
    """The chunk topics of the offer that was retained on `topic` (unless it is `keep`)."""
    from edge_lstm.signing import parse_release

    if not old_offer:
        return []
    try:
        old = Offer.decode(old_offer)
        return [] if old.transfer == keep else old.chunk_topics(topic, parse_release(old.release))
    except EdgeLstmError:
        return []  # not ours to clean


def _publish_all(client, messages) -> int:
    """Publish (topic, payload) retained at QoS 1, at most IN_FLIGHT unacknowledged; wait for all."""
    pending: list = []
    n = 0

    def settle(item) -> None:
        topic, info = item
        info.wait_for_publish(60)
        if not info.is_published():
            raise EdgeLstmError(f"the broker did not acknowledge the publish on {topic} within 60 s")

    for topic, payload in messages:
        pending.append((topic, client.publish(topic, payload, qos=1, retain=True)))
        n += 1
        if len(pending) >= IN_FLIGHT:
            settle(pending.pop(0))
    for item in pending:
        settle(item)
    return n


@click.command()
@click.argument("name", type=click.Path(dir_okay=False, path_type=Path))
def keygen(name: Path) -> None:
    """Make an Ed25519 key pair for signed rollouts: NAME.key (private, mode 0600) and NAME.pub.

    \b
    Example:
      edge-lstm keygen release      # then: rollout.trusted_keys = ["/etc/edge-lstm/release.pub"]
    Same as: openssl genpkey -algorithm ed25519 -out release.key
             openssl pkey -in release.key -pubout -out release.pub
    """
    from edge_lstm.signing import generate_key_files, key_id, load_public_key

    try:
        private, public = generate_key_files(name)
    except EdgeLstmError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    click.echo(f"{private}  private key: keep it off the devices (sign with --key {private})")
    click.echo(f"{public}  public key {key_id(load_public_key(public))}: copy it to the devices (rollout.trusted_keys)")


if __name__ == "__main__":
    publish_bundle()
