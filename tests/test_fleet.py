"""A fleet through bridged brokers, with the shipped configs: deploy/mosquitto/bridge.conf on two
device brokers, deploy/mosquitto/central.conf (TLS, passwords, central-acl) in the middle, two
`edge-lstm run` processes; and deploy/telegraf/edge-lstm.conf against real forecast payloads."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from daemon_harness import DaemonProcess, close, daemon_doc, publisher, reference, stop_process, write_toml
from fixtures_broker import Mosquitto

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DEVICES = ("dev-a", "dev-b")


def derived(name: str, replace: dict[str, str]) -> str:
    """A shipped mosquitto config with the site-specific strings swapped for the test's; a
    string the file no longer holds fails the test (the test must follow the file)."""
    text = (DEPLOY / "mosquitto" / name).read_text()
    for old, new in replace.items():
        assert old in text, f"deploy/mosquitto/{name} no longer holds {old!r}: update tests/test_fleet.py"
        text = text.replace(old, new)
    return text + "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"


def broker_from(text_of) -> Mosquitto:
    """A mosquitto whose whole config is `text_of(broker)` (port and data directory known first)."""
    b = Mosquitto()
    b.conf.write_text(text_of(b))
    return b.start()


class Client:
    """A paho client that records (topic, payload, retain), reconnecting on its own."""

    def __init__(self, broker: Mosquitto, topics: list[str], *, client_id: str = "", tls_ca: Path | None = None,
                 user: str | None = None, password: str | None = None, persistent: bool = False) -> None:
        self.messages: queue.Queue = queue.Queue()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent,
                             protocol=mqtt.MQTTv311)
        if tls_ca:
            self.c.tls_set(ca_certs=str(tls_ca))
        if user:
            self.c.username_pw_set(user, password)
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload), m.retain))
        self.c.on_connect = lambda c, u, f, rc, p: [c.subscribe(t, 1) for t in topics] if not rc.is_failure else None
        self.c.reconnect_delay_set(0.05, 0.5)
        self.c.connect_async(broker.host, broker.port, 30)
        self.c.loop_start()
        end = time.monotonic() + 30
        while not self.c.is_connected() and time.monotonic() < end:
            time.sleep(0.02)
        assert self.c.is_connected(), f"no connection to {broker.host}:{broker.port}:\n{broker.logs()[-2000:]}"
        self.log: list[tuple[str, bytes, bool]] = []

    def until(self, done, timeout: float = 60.0, what: str = "") -> list:
        """Collect (into self.log) until `done(self.log)`; fail after `timeout` s with the tail."""
        end = time.monotonic() + timeout
        while not done(self.log):
            if time.monotonic() > end:
                raise AssertionError(f"gave up waiting for {what}; last: {self.log[-8:]}")
            try:
                self.log.append(self.messages.get(timeout=0.2))
            except queue.Empty:
                pass
        return self.log

    def drain(self) -> None:
        """Move everything that has arrived into self.log."""
        while True:
            try:
                self.log.append(self.messages.get_nowait())
            except queue.Empty:
                return

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def preds(log, device: str) -> list[dict]:
    return [json.loads(p) for t, p, _ in log if t.startswith(f"edge/{device}/pred/")]


def events(log, device: str, name: str) -> list[dict]:
    return [e for t, p, _ in log if t == f"edge/{device}/events" and (e := json.loads(p))["event"] == name]


def last(log, topic: str) -> bytes | None:
    got = [p for t, p, _ in log if t == topic]
    return got[-1] if got else None


@pytest.mark.slow
@pytest.mark.broker
def test_two_devices_bridged_to_a_central_broker(broker_factory, tls_certs, tiny_bundle, tmp_path) -> None:
    """Forecasts from both devices reach the centre (exactly the device's numbers); a command
    from the centre reaches only its device; with the central broker down, every forecast made
    meanwhile waits in the device brokers and reaches a central subscriber after the restart."""
    made: list = []
    procs: list[DaemonProcess] = []
    passwords = {d: f"pw-{d}" for d in DEVICES} | {"operator": "op-pw"}
    try:
        def central_conf(b: Mosquitto) -> str:
            pw = b.dir / "passwd"
            pw.touch()
            for user, password in passwords.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True, capture_output=True)
            shutil.copy(DEPLOY / "mosquitto" / "central-acl", b.dir / "central-acl")
            for f in (pw, b.dir / "central-acl"):
                os.chmod(f, 0o644)  # mosquitto reads them as nobody
            return derived("central.conf", {
                "listener 8883": f"listener {b.port} 127.0.0.1",
                "/etc/mosquitto/certs/ca.crt": str(tls_certs / "ca.crt"),
                "/etc/mosquitto/certs/server.crt": str(tls_certs / "server.crt"),
                "/etc/mosquitto/certs/server.key": str(tls_certs / "server.key"),
                "/etc/mosquitto/passwd": str(pw),
                "/etc/mosquitto/central-acl": str(b.dir / "central-acl"),
                "/var/lib/mosquitto/": f"{b.dir}/",
                "autosave_interval 60": "autosave_interval 1",
            })

        central = broker_from(central_conf)
        made.append(central)

        def device_conf(dev: str):
            return lambda b: derived("bridge.conf", {
                "listener 1883 127.0.0.1": f"listener {b.port} 127.0.0.1",
                "/var/lib/mosquitto/": f"{b.dir}/",
                "autosave_interval 60": "autosave_interval 1",
                "central.example:8883": f"127.0.0.1:{central.port}",
                "/etc/mosquitto/certs/central-ca.crt": str(tls_certs / "ca.crt"),
                "remote_password CHANGE-ME": f"remote_password {passwords[dev]}",
                "keepalive_interval 60": "keepalive_interval 5",
                "restart_timeout 5 30": "restart_timeout 1 2",
                "dev01": dev,
            })

        device = {dev: broker_from(device_conf(dev)) for dev in DEVICES}
        made.extend(device.values())
        for dev, b in device.items():
            doc = daemon_doc(b, tiny_bundle, dev, source={"mqtt": {"topics": ["sensors/{stream}/raw"]}})
            procs.append(DaemonProcess(write_toml(tmp_path / f"{dev}.toml", doc)).start())

        ca = tls_certs / "ca.crt"
        watch = Client(central, ["edge/+/pred/#", "edge/+/events", "edge/+/status", "edge/+/bridge/state"],
                       client_id="fleet-watch", persistent=True, tls_ca=ca, user="operator", password="op-pw")
        made.append(watch)
        local = {dev: Client(b, ["edge/#"]) for dev, b in device.items()}
        made.extend(local.values())
        watch.until(lambda log: all(last(log, f"edge/{d}/status") == b"online" and
                                    last(log, f"edge/{d}/bridge/state") == b"1" for d in DEVICES),
                    what="both daemons online and both bridges up at the centre")

        # 1. forecasts from both devices at the centre, value for value
        samples = [("s1", 100.0 + 7 * i, float(i + 1)) for i in range(8)]
        for dev, b in device.items():
            pub = publisher(b)
            for stream, value, ts in samples:
                pub.publish(f"sensors/{stream}/raw", json.dumps({"ts": ts, "value": value}), qos=1)
            close(pub)
        watch.until(lambda log: all(len(preds(log, d)) >= 8 for d in DEVICES), what="8 forecasts per device")
        ref = reference(tiny_bundle, samples)
        for dev in DEVICES:
            got = preds(watch.log, dev)
            assert [p["seq"] for p in got] == sorted(seq for _, seq in ref)
            for p in got:
                want = ref[(p["stream"], p["seq"])]
                assert p["ts"] == want.ts
                # the same fp32 model on both sides; only the batching may differ (~1e-7 relative)
                np.testing.assert_allclose(np.asarray(p["forecast"], np.float32), want.values, rtol=1e-5)

        # 2. a command from the centre reaches only its device
        op = Client(central, [], tls_ca=ca, user="operator", password="op-pw")
        made.append(op)
        for dev in DEVICES:
            cmd = json.dumps({"cmd": "reset", "stream": "s1", "id": f"to-{dev}"})
            op.c.publish(f"edge/{dev}/cmd", cmd, qos=1).wait_for_publish(10)
            watch.until(lambda log: any(e["id"] == f"to-{dev}" for e in events(log, dev, "command")),
                        what=f"the command event of {dev}")
        for dev in DEVICES:
            local[dev].until(lambda log: any(t == f"edge/{dev}/cmd" for t, _, _ in log), what=f"the cmd on {dev}")
        time.sleep(0.5)  # room for a stray command to show up where it must not
        for dev in DEVICES:
            local[dev].drain()
            assert [e["id"] for e in events(watch.log, dev, "command")] == [f"to-{dev}"]
            assert all(e["ok"] for e in events(watch.log, dev, "command"))
            cmds = {t for t, _, _ in local[dev].log if t.endswith("/cmd")}
            assert cmds == {f"edge/{dev}/cmd"}, f"{dev}'s broker saw {cmds}"

        # 3. the central broker goes away; the devices keep forecasting; nothing is lost
        central.stop()
        outage = [("s1", 300.0 + i, 100.0 + i) for i in range(20)]
        for dev, b in device.items():
            pub = publisher(b)
            for stream, value, ts in outage:
                pub.publish(f"sensors/{stream}/raw", json.dumps({"ts": ts, "value": value}), qos=1)
            close(pub)
        for dev in DEVICES:  # made during the outage, seen on the device's own broker
            local[dev].until(lambda log: sum(p["ts"] >= 100 for p in preds(log, dev)) == 20,
                             what=f"20 local forecasts on {dev}")
        time.sleep(1.0)
        central.start()
        watch.until(lambda log: all(sum(p["ts"] >= 100 for p in preds(log, d)) >= 20 for d in DEVICES),
                    timeout=90, what="the 40 forecasts made during the outage, at the centre")
        for dev in DEVICES:
            got = sorted(p["ts"] for p in preds(watch.log, dev) if p["ts"] >= 100)
            assert got == [ts for _, _, ts in outage], f"{dev}: {got}"
        check_telegraf_against([p for t, p, _ in watch.log if "/pred/" in t],
                               [t for t, _, _ in watch.log if "/pred/" in t])
    finally:
        for p in procs:
            stop_process(p)
        for m in reversed(made):
            m.close()


# ----------------------------------------------------------------------------- Telegraf


def gjson(doc, path: str):
    """The value at a GJSON dotted path (keys and array indexes, as json_v2 uses them), or a KeyError."""
    for part in path.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def check_telegraf_against(payloads: list[bytes], topics: list[str]) -> None:
    """Each forecast topic is consumed and tagged, every non-optional JSON path resolves to a
    value of its declared type, and the optional ones resolve where the payload has them."""
    conf = tomllib.loads((DEPLOY / "telegraf" / "edge-lstm.conf").read_text())
    (consumer,) = conf["inputs"]["mqtt_consumer"]
    assert consumer["data_format"] == "json_v2" and consumer["persistent_session"] and consumer["client_id"]
    for topic in topics:
        assert any(mqtt.topic_matches_sub(sub, topic) for sub in consumer["topics"]), topic
        (parsing,) = consumer["topic_parsing"]
        assert mqtt.topic_matches_sub(parsing["topic"], topic)
        tags = parsing["tags"].split("/")
        assert len(tags) == len(parsing["topic"].split("/")) == len(topic.split("/"))
        named = {t: lv for t, lv in zip(tags, topic.split("/")) if t != "_"}
        assert set(named) == {"device", "stream"} and named["device"] == topic.split("/")[1]
    (spec,) = consumer["json_v2"]
    types = {"float": float, "int": int, "bool": bool, "string": str}
    for raw in payloads:
        doc = json.loads(raw)
        assert isinstance(gjson(doc, spec["timestamp_path"]), (int, float)) and spec["timestamp_format"] == "unix"
        for tag in spec["tag"]:
            assert isinstance(gjson(doc, tag["path"]), str)
        for field in spec["field"]:
            try:
                value = gjson(doc, field["path"])
            except (KeyError, IndexError):
                assert field.get("optional"), f"{field['path']} is missing from {doc}"
                continue
            want = types[field["type"]]
            assert isinstance(value, want) or (want is float and isinstance(value, int)), (field, value)
    assert payloads, "no payload to check"


def test_telegraf_config_reads_real_forecasts(tiny_bundle) -> None:
    """deploy/telegraf/edge-lstm.conf against forecast payloads the daemon's encoder makes
    (warming up and warm, horizon 1 and 3), on the daemon's default forecast topic."""
    from edge_lstm import config
    from edge_lstm.forecaster import Runtime
    from edge_lstm.payload import encode_forecast

    template = config.MqttSinkConfig().topic
    payloads, topics = [], []
    for horizon in (1, 3):
        rt = Runtime.open(tiny_bundle, backend="numpy", horizon=horizon)
        for i in range(8):
            f = rt.push("boiler", [110.0 + i], 1764072000.0 + i)
            payloads.append(encode_forecast(stream="boiler", ts=f.ts, seq=f.seq, forecast=f.values,
                                            targets=rt.targets, horizon=f.horizon, model="tiny-lstm",
                                            variant=rt.precision, latency_ms=0.2, warming_up=f.warming_up))
            topics.append(template.format(device="dev01", stream="boiler"))
    check_telegraf_against(payloads, topics)
    with pytest.raises(AssertionError):  # the check can fail: a path the payload lacks
        check_telegraf_against([json.dumps({"ts": 1.0, "model": "m", "variant": "v", "seq": 1}).encode()],
                               topics[:1])
