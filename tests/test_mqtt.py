"""The broker link and the MQTT source against a real mosquitto: protocols, QoS, TLS, auth,
status and last will, persistent sessions and resubscription."""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import textwrap
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_lstm import config
from edge_lstm.intake import Intake
from edge_lstm.mqtt import MqttLink
from edge_lstm.sources.mqtt import MqttSource

pytestmark = pytest.mark.broker


def make_cfg(broker, *, device="t1", mqtt_extra=None, environ=None, **sections):
    doc = {"device": {"id": device}, "model": {"bundle": "/b"},
           "mqtt": {"host": "127.0.0.1", "port": broker.port, "reconnect_min": 0.05, "reconnect_max": 0.5,
                    **(mqtt_extra or {})}}
    doc.update(sections)
    return config.from_dict(doc, environ=environ or {})


class Inbox:
    """An Intake whose accepted samples and refusals land in queues (acknowledged at once
    unless `ack=False`)."""

    def __init__(self, features=("v",), ack=True):
        self.samples: queue.Queue = queue.Queue()
        self.refusals: queue.Queue = queue.Queue()
        self.link = None
        self.ack = ack
        self.intake = Intake(list(features), self._accept, self.refusals.put)

    def _accept(self, item):
        self.samples.put(item)
        if self.ack and self.link is not None:
            self.link.ack(item.ack)

    def take(self, n, timeout=10.0):
        out = []
        for _ in range(n):
            out.append(self.samples.get(timeout=timeout))
        return out


def publisher(broker, *, protocol=mqtt.MQTTv311, client_id="", persistent=False, **tls):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                    clean_session=(not persistent) if protocol != mqtt.MQTTv5 else None)
    if tls:
        c.tls_set(**tls)
    c.reconnect_delay_set(0.05, 0.5)
    c.connect(broker.host, broker.port, 30)
    c.loop_start()
    return c


def start_link(cfg, inbox=None, *, status=True):
    link = MqttLink(cfg, status_topic=cfg.topic("status") if status else None)
    if inbox is not None:
        inbox.link = link
        MqttSource(link, cfg.source.mqtt.topics, cfg.source.mqtt.qos, inbox.intake).start()
    link.start()
    assert link.wait_connected(10), "link did not connect"
    time.sleep(0.15)  # SUBACK
    return link


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
@pytest.mark.parametrize("qos", [0, 1])
def test_samples_in_with_stream_from_topic(mqtt_broker, protocol, qos):
    """MQTT 5 and 3.1.1, QoS 0 and 1: samples arrive decoded, the stream id taken from the topic."""
    if protocol == "5" and mqtt_broker.kind != "mosquitto":
        pytest.skip("amqtt has no MQTT 5")
    cfg = make_cfg(mqtt_broker, device=f"p{protocol[0]}q{qos}", mqtt_extra={"protocol": protocol},
                   source={"mqtt": {"qos": qos, "topics": [f"t{protocol[0]}{qos}/{{stream}}/raw"]}})
    inbox = Inbox()
    link = start_link(cfg, inbox)
    pub = publisher(mqtt_broker)
    try:
        for i, stream in enumerate(["s1", "boiler-3", "s1"]):
            pub.publish(f"t{protocol[0]}{qos}/{stream}/raw", f'{{"ts": {i}, "value": {i * 1.5}}}', qos=qos).wait_for_publish(5)
        pub.publish(f"t{protocol[0]}{qos}/a/b/raw", b"1", qos=qos)  # not matched by sensors/+/raw
        got = inbox.take(3)
        assert [(s.stream, s.values, s.ts) for s in got] == [("s1", (0.0,), 0.0), ("boiler-3", (1.5,), 1.0),
                                                             ("s1", (3.0,), 2.0)]
        assert inbox.samples.empty() and inbox.refusals.empty()
    finally:
        pub.disconnect(); pub.loop_stop()
        link.stop()


def test_bad_payload_is_refused_not_accepted(mqtt_broker):
    """A payload the decoder refuses reaches the refusal handler with its topic, not the pipeline."""
    cfg = make_cfg(mqtt_broker, device="bad1", source={"mqtt": {"topics": ["bad1/{stream}/raw"]}})
    inbox = Inbox()
    link = start_link(cfg, inbox)
    pub = publisher(mqtt_broker)
    try:
        pub.publish("bad1/s1/raw", b"\xff\xfe", qos=1).wait_for_publish(5)
        pub.publish("bad1/s1/raw", b"2", qos=1).wait_for_publish(5)
        refusal = inbox.refusals.get(timeout=5)
        assert refusal.error.code == "not-utf8" and refusal.topic == "bad1/s1/raw" and refusal.source == "mqtt"
        assert inbox.take(1)[0].values == (2.0,)
    finally:
        pub.disconnect(); pub.loop_stop()
        link.stop()


def test_status_online_then_offline_retained(mqtt_broker, collect):
    """The status topic holds a retained "online" while connected and "offline" after a clean stop."""
    cfg = make_cfg(mqtt_broker, device="st1")
    link = start_link(cfg)
    late = collect(["edge/st1/status"])  # subscribes after the fact: sees the retained value
    assert late.take(1)[0] == ("edge/st1/status", b"online", True)
    link.stop()
    assert late.take(1)[0][1] == b"offline"
    again = collect(["edge/st1/status"])
    assert again.take(1)[0] == ("edge/st1/status", b"offline", True)


def test_last_will_when_the_process_dies(mqtt_broker, collect):
    """A daemon killed with SIGKILL leaves "offline" retained through its last will."""
    code = textwrap.dedent(f"""
        import sys, time
        from edge_lstm import config
        from edge_lstm.mqtt import MqttLink
        cfg = config.from_dict({{"device": {{"id": "will1"}}, "model": {{"bundle": "/b"}},
                                "mqtt": {{"host": "127.0.0.1", "port": {mqtt_broker.port}, "keepalive": 5}}}})
        link = MqttLink(cfg, status_topic=cfg.topic("status")); link.start()
        assert link.wait_connected(10); time.sleep(0.2); print("up", flush=True); time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        watch = collect(["edge/will1/status"])
        assert watch.take(1)[0][1] == b"online"
        os.kill(proc.pid, signal.SIGKILL)
        assert watch.take(1, timeout=10)[0][1] == b"offline"
    finally:
        proc.kill()
        proc.wait(5)


def test_wrong_password_is_refused_with_a_clear_log_line(broker_factory, caplog):
    """Wrong password: CONNACK refused and one log line naming broker, user, reason and the fix."""
    b = broker_factory(passwords={"device": "devpass"})
    for protocol in ("5", "3.1.1"):
        caplog.clear()
        cfg = make_cfg(b, device="auth1", mqtt_extra={"username": "device", "password_env": "PW", "protocol": protocol},
                       environ={"PW": "wrong"})
        link = MqttLink(cfg, status_topic=cfg.topic("status"))
        with caplog.at_level(logging.ERROR, logger="edge_lstm.mqtt"):
            link.start()
            end = time.monotonic() + 10
            while link.refusals == 0 and time.monotonic() < end:
                time.sleep(0.02)
            link.stop()
        assert not link.connected.is_set() and link.refusals >= 1
        lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert lines, caplog.text
        assert f"MQTT broker 127.0.0.1:{b.port} refused the connection" in lines[0]
        assert "user 'device'" in lines[0] and "$PW" in lines[0]
        assert "Not authorized" in lines[0] or "Bad user name or password" in lines[0]
    good = make_cfg(b, device="auth2", mqtt_extra={"username": "device", "password_env": "PW"}, environ={"PW": "devpass"})
    link = start_link(good)
    assert link.refusals == 0
    link.stop()


def test_tls_and_mutual_tls(broker_factory, tls_certs):
    """TLS with the test CA works; a listener that requires client certificates accepts ours."""
    d = tls_certs
    tls = f"cafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n"
    b = broker_factory(listener_opts=tls)
    m = broker_factory(listener_opts=tls + "require_certificate true\nuse_identity_as_username true\n")
    for broker, extra in ((b, {}), (m, {"cert_file": str(d / "client.crt"), "key_file": str(d / "client.key")})):
        cfg = make_cfg(broker, device="tls1", mqtt_extra={"tls": {"enabled": True, "ca_file": str(d / "ca.crt"), **extra}},
                       source={"mqtt": {"topics": ["tls/{stream}/raw"]}})
        config.check_files(cfg)
        inbox = Inbox()
        link = start_link(cfg, inbox)
        pub = publisher(broker, ca_certs=str(d / "ca.crt"), certfile=extra.get("cert_file"), keyfile=extra.get("key_file"))
        try:
            pub.publish("tls/s9/raw", b"4.5", qos=1).wait_for_publish(5)
            assert inbox.take(1)[0].values == (4.5,)
        finally:
            pub.disconnect(); pub.loop_stop()
            link.stop()


def test_persistent_session_keeps_qos1_samples_while_away(mqtt_broker):
    """With a fixed client id and a persistent session, QoS 1 samples sent while the daemon is
    away are delivered when it comes back (MQTT 5 and 3.1.1)."""
    protocols = ["5", "3.1.1"] if mqtt_broker.kind == "mosquitto" else ["3.1.1"]
    if mqtt_broker.kind != "mosquitto":
        pytest.skip("amqtt drops anonymous persistent sessions")
    for protocol in protocols:
        dev = f"away{protocol[0]}"
        cfg = make_cfg(mqtt_broker, device=dev, mqtt_extra={"protocol": protocol},
                       source={"mqtt": {"topics": [f"{dev}/{{stream}}/raw"]}})
        first = Inbox()
        link = start_link(cfg, first)
        link.stop()
        pub = publisher(mqtt_broker)
        for i in range(20):
            pub.publish(f"{dev}/s1/raw", f'{{"ts": {i}, "value": {i}}}', qos=1).wait_for_publish(5)
        pub.disconnect(); pub.loop_stop()
        back = Inbox()
        link = start_link(cfg, back)
        try:
            assert [s.ts for s in back.take(20)] == [float(i) for i in range(20)]
        finally:
            link.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_unacknowledged_samples_come_back(mqtt_broker, protocol):
    """With ack = "processed", a sample taken in but never finished (the daemon stopped or died
    first) is not acknowledged, so the broker delivers it again to the next session."""
    if mqtt_broker.kind != "mosquitto":
        pytest.skip("needs mosquitto")
    dev = f"unacked{protocol[0]}"
    cfg = make_cfg(mqtt_broker, device=dev, mqtt_extra={"protocol": protocol},
                   source={"mqtt": {"topics": [f"{dev}/{{stream}}/raw"]}})
    held = Inbox(ack=False)
    link = start_link(cfg, held)
    pub = publisher(mqtt_broker)
    for i in range(5):
        pub.publish(f"{dev}/s1/raw", f'{{"ts": {i}, "value": {i}}}', qos=1).wait_for_publish(5)
    first = held.take(5)
    link.ack(first[0].ack)  # only the first one was finished
    time.sleep(0.1)
    link.stop()
    pub.publish(f"{dev}/s1/raw", '{"ts": 5, "value": 5}', qos=1).wait_for_publish(5)
    pub.disconnect(); pub.loop_stop()
    again = Inbox()
    link = start_link(cfg, again)
    try:
        assert [s.ts for s in again.take(5)] == [1.0, 2.0, 3.0, 4.0, 5.0]
        assert again.samples.empty()
    finally:
        link.stop()


def test_resubscribes_when_the_broker_forgot_the_session(broker_factory):
    """A broker restarted without persistence has no session: the link subscribes again on connect."""
    b = broker_factory()
    cfg = make_cfg(b, device="resub", source={"mqtt": {"topics": ["rs/{stream}/raw"]}})
    inbox = Inbox()
    link = start_link(cfg, inbox)
    try:
        b.stop()
        time.sleep(0.3)
        b.start()
        end = time.monotonic() + 10
        while link.connects < 2 and time.monotonic() < end:
            time.sleep(0.02)
        assert link.connects == 2
        time.sleep(0.2)
        pub = publisher(b)
        pub.publish("rs/s1/raw", b"7", qos=1).wait_for_publish(5)
        pub.disconnect(); pub.loop_stop()
        assert inbox.take(1)[0].values == (7.0,)
    finally:
        link.stop()


def test_starts_before_its_broker(tmp_path):
    """The daemon may start first: the link keeps retrying with backoff until the broker is up."""
    from fixtures_broker import Mosquitto

    b = Mosquitto()
    try:
        cfg = make_cfg(b, device="early", source={"mqtt": {"topics": ["early/{stream}/raw"]}})
        inbox = Inbox()
        link = MqttLink(cfg)
        MqttSource(link, cfg.source.mqtt.topics, 1, inbox.intake).start()
        link.start()
        time.sleep(0.5)
        assert not link.connected.is_set()
        b.start()
        assert link.wait_connected(10)
        time.sleep(0.2)
        pub = publisher(b)
        pub.publish("early/s1/raw", b"1", qos=1).wait_for_publish(5)
        pub.disconnect(); pub.loop_stop()
        assert inbox.take(1)[0].stream == "s1"
        link.stop()
    finally:
        b.close()
