"""Signed model rollout over MQTT, with real Ed25519 keys (cryptography and openssl), a real
mosquitto and real daemons: a good bundle is installed, swapped in and confirmed; a tampered
file, a wrong key, an unknown key, an unsigned offer and an older version are refused; a bundle
that fails parity is rolled back; a crash in the watch window rolls back at the next start."""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("cryptography", reason="signed rollouts need the rollout extra (cryptography)")
pytest.importorskip("onnx", reason="the test bundles are written by the export side")

from daemon_harness import DaemonProcess, close, daemon_doc, publisher, running, stop_process, write_toml  # noqa: E402
from edge_lstm import config  # noqa: E402
from edge_lstm.bundle_transfer import Offer, chunk_messages  # noqa: E402
from edge_lstm.cli import main  # noqa: E402
from edge_lstm.daemon import Daemon  # noqa: E402
from edge_lstm.forecaster import Forecast, Runtime  # noqa: E402
from edge_lstm.signing import key_id, load_private_key, make_release, parse_release, sign  # noqa: E402

WINDOW = 6


# ----------------------------------------------------------------------------- bundles and keys


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """`base` (tiny-lstm), `retrained` (its head bias moved a little: forecasts within a few
    percent), `broken` (the same weights with a target scaler off by 1000 passengers)."""
    from stacks import dense, recurrent

    from edge_lstm_export.bundle_writer import write_bundle
    from edge_lstm_export.scaler import Scaler
    from edge_lstm_export.stack import Stack

    rng = np.random.default_rng(7)
    base = Stack((recurrent("lstm", 1, 8, rng),), (dense(8, 1, rng),), window=WINDOW)
    head = base.head[0]
    retrained = dataclasses.replace(base, head=(dataclasses.replace(head, bias=head.bias + 0.01),))

    def scaler(y_min: float) -> Scaler:
        return Scaler("minmax", np.array([104.0]), np.array([1 / 518.0]), np.array([y_min]), np.array([1 / 518.0]))

    root = tmp_path_factory.mktemp("rollout-bundles")
    made = {
        "base": write_bundle(base, root / "tiny-lstm", name="tiny-lstm", features=["passengers"],
                             targets=["passengers"], scaler=scaler(104.0)),
        "retrained": write_bundle(retrained, root / "tiny-lstm-retrained", name="tiny-lstm-retrained",
                                  features=["passengers"], targets=["passengers"], scaler=scaler(104.0)),
        "broken": write_bundle(base, root / "tiny-lstm-broken", name="tiny-lstm-broken", features=["passengers"],
                               targets=["passengers"], scaler=scaler(1104.0)),
    }
    os.chmod(root, 0o755)
    return made


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    """A trusted pair from `edge-lstm keygen`, an untrusted pair from openssl."""
    d = tmp_path_factory.mktemp("keys")
    result = CliRunner().invoke(main, ["keygen", str(d / "release")])
    assert result.exit_code == 0, result.output
    assert (d / "release.key").stat().st_mode & 0o777 == 0o600
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(d / "other.key")], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(d / "other.key"), "-pubout", "-out", str(d / "other.pub")],
                   check=True)
    return {"key": d / "release.key", "pub": d / "release.pub", "other_key": d / "other.key",
            "other_pub": d / "other.pub"}


def store_with_base(tmp_path: Path, bundles) -> Path:
    store = tmp_path / "bundles"
    store.mkdir()
    shutil.copytree(bundles["base"], store / "tiny-lstm")
    return store


def rollout_doc(broker, store: Path, device: str, keys, **rollout) -> dict:
    return daemon_doc(broker, store / "tiny-lstm", device,
                      model={"bundle": str(store / "tiny-lstm"), "bundle_dir": str(store), "backend": "onnx"},
                      rollout={"enabled": True, "trusted_keys": [str(keys["pub"])], "watch": 5, **rollout})


def publish(broker, bundle: Path, key: Path, *args: str, to: str = "edge/+/bundle") -> str:
    result = CliRunner().invoke(main, ["publish-bundle", str(bundle), "--to", to, "--key", str(key),
                                       "--broker", f"{broker.host}:{broker.port}", *args])
    assert result.exit_code == 0, result.output
    return result.output


class Events:
    """Events and errors of one device, collected as they come."""

    def __init__(self, collect, broker, device: str) -> None:
        self.device = device
        self.col = collect([f"edge/{device}/events", f"edge/{device}/errors", f"edge/{device}/pred/#"], broker=broker)
        self.events: list[dict] = []
        self.errors: list[dict] = []
        self.preds: list[dict] = []

    def _pump(self, timeout: float) -> None:
        try:
            t, p, _ = self.col.messages.get(timeout=timeout)
        except queue.Empty:
            return
        doc = json.loads(p)
        (self.events if t.endswith("/events") else self.errors if t.endswith("/errors") else self.preds).append(doc)

    def rollout(self, outcome: str | None = None) -> list[dict]:
        return [e for e in self.events if e["event"] == "rollout" and (outcome is None or e["outcome"] == outcome)]

    def wait(self, done, timeout: float = 60.0, what: str = "") -> None:
        end = time.monotonic() + timeout
        while not done(self):
            if time.monotonic() > end:
                raise AssertionError(f"gave up waiting for {what}: events {self.events[-6:]}, errors {self.errors[-3:]}")
            self._pump(0.2)

    def settle(self, quiet: float = 1.0) -> None:
        """Take what arrives until `quiet` seconds pass with nothing."""
        end = time.monotonic() + quiet
        while time.monotonic() < end:
            n = len(self.events) + len(self.errors) + len(self.preds)
            self._pump(0.1)
            if len(self.events) + len(self.errors) + len(self.preds) != n:
                end = time.monotonic() + quiet


def feed(broker, device: str, values, start_ts: float) -> None:
    pub = publisher(broker)
    for i, v in enumerate(values):
        pub.publish(f"{device}/s1/raw", json.dumps({"ts": start_ts + i, "value": float(v)}), qos=1)
    close(pub)


SERIES = [112, 118, 132, 129, 121, 135, 148, 148, 136, 119, 104, 118, 115, 126, 141, 135, 125, 149, 170, 170]


# ----------------------------------------------------------------------------- the good path


@pytest.mark.broker
def test_good_rollout_swaps_confirms_and_survives_a_restart(broker_factory, collect, bundles, keys, tmp_path) -> None:
    """Discovered by its retained status, the device installs the retrained bundle under
    bundle_dir/<name>-v<version>, swaps it in (forecasts continue, from the new model, equal to
    a fresh runtime of it), confirms it after `watch` forecasts; the same retained offer again
    is a no-op; a restart runs the new bundle."""
    mqtt_broker = broker_factory()  # its own: '+' is filled with every device that has a status there
    store = store_with_base(tmp_path, bundles)
    dev = "ro-good"
    doc = rollout_doc(mqtt_broker, store, dev, keys)
    ev = Events(collect, mqtt_broker, dev)
    with running(doc) as d:
        feed(mqtt_broker, dev, SERIES[:12], 1.0)
        ev.wait(lambda e: len(e.preds) >= 12, what="12 forecasts from the base model")
        out = publish(mqtt_broker, bundles["retrained"], keys["key"], "--version", "2")  # '+' from the status
        assert f"edge/{dev}/bundle:" in out and out.count("/bundle:") == 1, out
        ev.wait(lambda e: e.rollout("installed"), what="installed")
        installed = ev.rollout("installed")[0]
        assert installed["bundle"] == "tiny-lstm-retrained" and installed["version"] == 2
        assert installed["checks"]["sha256"] == "ok"
        parity = installed["checks"]["parity"]
        assert parity["compared_streams"] == 1 and 0 < parity["worst"] < 0.25  # really compared, and close
        assert d.runtime.bundle.name == "tiny-lstm-retrained"
        assert (store / "current").resolve() == (store / "tiny-lstm-retrained-v2").resolve()
        assert not any((store / ".incoming").iterdir())
        feed(mqtt_broker, dev, SERIES[12:20], 13.0)
        ev.wait(lambda e: e.rollout("confirmed") and len(e.preds) >= 20, what="confirmed after 5 forecasts")
        after = [p for p in ev.preds if p["ts"] >= 13.0]
        assert {p["model"] for p in after} == {"tiny-lstm-retrained"}
        rt = Runtime.open(bundles["retrained"], backend="onnx")  # exact mode: the same last W samples
        want = {i + 1.0: rt.push("s1", [float(v)], i + 1.0) for i, v in enumerate(SERIES[:20])}
        for p in after:
            # the same fp32 ONNX model; the daemon re-primed the stream, a fresh runtime stepped it
            np.testing.assert_allclose(np.float32(p["forecast"]), want[p["ts"]].values, rtol=1e-5)

        ev.settle()
        n = len(ev.events)
        offer = collect([f"edge/{dev}/bundle"], broker=mqtt_broker).take(1)[0]  # the retained offer
        assert offer[2] and json.loads(offer[1])["format"] == "edge-lstm-offer"
        again = publisher(mqtt_broker)  # delivered again, as after every reconnect: a no-op
        again.publish(f"edge/{dev}/bundle", offer[1], qos=1).wait_for_publish(5)
        close(again)
        ev.settle(1.5)
        assert [e for e in ev.events[n:] if e["event"] in ("rollout", "model-loaded")] == []
        assert d.runtime.bundle.name == "tiny-lstm-retrained"
    d2 = Daemon(config.from_dict(doc, environ={}))
    assert d2.runtime.bundle.name == "tiny-lstm-retrained" and d2.cfg.model.bundle.endswith("tiny-lstm-retrained-v2")


@pytest.mark.broker
def test_refusals_leave_the_running_model_alone(mqtt_broker, collect, bundles, keys, tmp_path) -> None:
    """A tampered chunk, a signature by an untrusted key under the trusted key's id, an
    unknown key id, an unsigned offer, an older version without --rollback, and a bundle far
    off the running one (parity) are each refused with an error and an event; the daemon keeps
    forecasting with its own model and the bundle directory holds nothing new."""
    store = store_with_base(tmp_path, bundles)
    dev = "ro-refuse"
    ev = Events(collect, mqtt_broker, dev)
    topic = f"edge/{dev}/bundle"
    trusted, other = load_private_key(keys["key"]), load_private_key(keys["other_key"])
    with running(rollout_doc(mqtt_broker, store, dev, keys)) as d:
        feed(mqtt_broker, dev, SERIES[:10], 1.0)
        ev.wait(lambda e: len(e.preds) >= 10, what="forecasts")

        def send(offer: Offer, release, *, tamper: bool = False) -> None:
            pub = publisher(mqtt_broker)
            for i, (t, chunk) in enumerate(chunk_messages(bundles["retrained"], offer, release, topic)):
                if tamper and i == 0:
                    chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
                pub.publish(t, chunk, qos=1, retain=True)
            pub.publish(topic, offer.encode(), qos=1, retain=True)
            close(pub)

        def offer_for(version: int, key, *, claim=None, signed=True, rollback=False):
            raw = make_release(bundles["retrained"], version=version, rollback=rollback)
            return Offer(os.urandom(8).hex(), raw, sign(raw, key) if signed else None,
                         claim or key_id(key.public_key()), 4096), parse_release(raw)

        cases = [
            ("bad-hash", dict(version=5, key=trusted), True),
            ("bad-signature", dict(version=6, key=other, claim=key_id(trusted.public_key())), False),
            ("unknown-key", dict(version=7, key=other), False),
            ("unsigned", dict(version=8, key=trusted, signed=False), False),
        ]
        for code, kw, tamper in cases:
            send(*offer_for(**kw), tamper=tamper)
            ev.wait(lambda e: any(r.get("code") == code for r in e.rollout("refused")), what=code)
            assert any(r["code"] == "rollout-refused" for r in ev.errors), ev.errors

        publish(mqtt_broker, bundles["broken"], keys["key"], "--version", "9", to=topic)
        ev.wait(lambda e: e.rollout("rolled-back"), what="the parity rollback")
        rb = ev.rollout("rolled-back")[0]
        assert rb["reason"] == "parity" and rb["checks"]["parity"]["worst"] > 0.25, rb
        assert any(r["code"] == "rollout-rolled-back" for r in ev.errors)

        publish(mqtt_broker, bundles["retrained"], keys["key"], "--version", "3", to=topic)  # 3 > base's 0
        ev.wait(lambda e: e.rollout("installed"), what="v3 installed")
        publish(mqtt_broker, bundles["base"], keys["key"], "--version", "2", to=topic)  # older, no --rollback
        ev.wait(lambda e: any(r.get("code") == "old-version" for r in e.rollout("refused")), what="old-version")
        publish(mqtt_broker, bundles["base"], keys["key"], "--version", "2", "--rollback", to=topic)
        ev.wait(lambda e: len(e.rollout("installed")) == 2, what="the signed rollback installed")
        assert d.runtime.bundle.name == "tiny-lstm"
        assert sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) == \
            ["current", "tiny-lstm", "tiny-lstm-retrained-v3", "tiny-lstm-v2"]
        assert not any((store / ".incoming").iterdir())


@pytest.mark.broker
def test_a_non_finite_forecast_in_the_watch_window_rolls_back(mqtt_broker, collect, bundles, keys, tmp_path) -> None:
    """Inside the watch window a non-finite forecast (a model gone bad) swaps the previous
    bundle back in, points `current` at it again and says so."""
    store = store_with_base(tmp_path, bundles)
    dev = "ro-watch"
    ev = Events(collect, mqtt_broker, dev)
    with running(rollout_doc(mqtt_broker, store, dev, keys, watch=1000)) as d:
        feed(mqtt_broker, dev, SERIES[:8], 1.0)
        ev.wait(lambda e: len(e.preds) >= 8, what="forecasts")
        publish(mqtt_broker, bundles["retrained"], keys["key"], "--version", "4", to=f"edge/{dev}/bundle")
        ev.wait(lambda e: e.rollout("installed"), what="installed")
        (agent,) = [a for a in d.addons if type(a).__name__ == "RolloutAgent"]
        bad = Forecast("s1", 99.0, 99, np.array([[np.nan]], np.float32), False, 1)
        d.call_soon(lambda: agent.after_batch([], [bad]))
        ev.wait(lambda e: e.rollout("rolled-back"), what="rolled back")
        assert "non-finite" in ev.rollout("rolled-back")[0]["problem"]
        assert d.wait_idle() and d.runtime.bundle.name == "tiny-lstm"
        assert (store / "current").resolve() == (store / "tiny-lstm").resolve()
        assert not (store / "tiny-lstm-retrained-v4").exists()


@pytest.mark.slow
@pytest.mark.broker
def test_a_crash_in_the_watch_window_rolls_back_at_the_next_start(broker_factory, collect, bundles, keys,
                                                                   tmp_path) -> None:
    """`edge-lstm run` installs v2 and is SIGKILLed before `watch` forecasts; started again,
    it runs the previous bundle and reports the rollback (event and error)."""
    broker = broker_factory()
    store = store_with_base(tmp_path, bundles)
    dev = "ro-crash"
    cfg_path = write_toml(tmp_path / "d.toml", rollout_doc(broker, store, dev, keys, watch=50))
    ev = Events(collect, broker, dev)
    p = DaemonProcess(cfg_path).start()
    try:
        p.wait_log("receiving samples")
        publish(broker, bundles["retrained"], keys["key"], "--version", "2", to=f"edge/{dev}/bundle")
        ev.wait(lambda e: e.rollout("installed"), what="installed")
        p.kill()  # a crash: no clean shutdown
        assert json.loads((store / ".rollout" / "state.json").read_text())["watch"]["clean_stop"] is False
        p = DaemonProcess(cfg_path).start()
        p.wait_log("receiving samples")
        ev.wait(lambda e: e.rollout("rolled-back"), what="the rollback reported at start")
        rb = ev.rollout("rolled-back")[0]
        assert rb["reason"] == "crash" and rb["version"] == 2, rb
        assert any(r["code"] == "rollout-rolled-back" for r in ev.errors)
        assert "model tiny-lstm (" in p.log.read_text()
        assert (store / "current").resolve() == (store / "tiny-lstm").resolve()
    finally:
        stop_process(p)


def test_config_refuses_rollout_without_keys_or_with_a_bad_key(bundles, keys, tmp_path) -> None:
    """No trusted key, an unreadable key file, or a key that is not Ed25519: exit-2 errors."""
    from edge_lstm.errors import ConfigError
    from edge_lstm.rollout import RolloutAgent

    base = {"model": {"bundle": str(bundles["base"])}, "mqtt": {"host": "localhost"}}
    with pytest.raises(ConfigError, match="rollout.trusted_keys"):
        config.from_dict({**base, "rollout": {"enabled": True}})
    cfg = config.from_dict({**base, "rollout": {"enabled": True, "trusted_keys": [str(tmp_path / "none.pub")]}})
    with pytest.raises(ConfigError, match=r"rollout.trusted_keys\[0\]"):
        config.check_files(cfg)
    rsa = tmp_path / "rsa.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:1024", "-out",
                    str(tmp_path / "rsa.key")], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(tmp_path / "rsa.key"), "-pubout", "-out", str(rsa)], check=True)
    cfg.rollout.trusted_keys = [str(rsa)]

    class Host:  # only what the agent reads at construction
        pass

    host = Host()
    host.cfg = cfg
    with pytest.raises(ConfigError, match="expected an Ed25519"):
        RolloutAgent(host)
