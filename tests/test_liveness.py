"""Liveness (issue 10): no failure in a callback kills paho's network thread; the status goes
`degraded` (with reasons in the retained health document) when samples wait and nothing
progresses, and back to `online`; two daemons with one client id are told apart from a flaky
network and back off; a command flood is refused, not queued in front of inference."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from daemon_harness import close, daemon_doc, gather, publisher, running
from edge_lstm import config
from edge_lstm.daemon import open_runtime
from edge_lstm.mqtt import MqttLink

pytestmark = pytest.mark.broker


def on(msgs, suffix: str) -> list:
    """Payloads (JSON parsed where possible) of the messages whose topic ends with `suffix`."""
    out = []
    for t, p, _ in msgs:
        if t.endswith(suffix) or (suffix == "/pred" and "/pred/" in t):
            try:
                out.append(json.loads(p))
            except ValueError:
                out.append(p.decode())
    return out


def test_a_failing_handler_never_kills_the_network_thread(mqtt_broker, collect, tiny_bundle, caplog):
    """A handler that fails on real input (here one that expects a key the message lacks) is
    reported as internal-error on the errors topic with its topic, logged with its traceback,
    and the message is acknowledged (not redelivered to the next session); samples keep
    flowing through the same network thread."""
    doc = daemon_doc(mqtt_broker, tiny_bundle, "live1")
    col = collect(["edge/live1/errors", "edge/live1/pred/+"])
    seen = []

    def fragile(topic: str, payload: bytes, token: int) -> None:
        seen.append(payload)
        json.loads(payload)["expected"]  # KeyError on the message below

    with caplog.at_level(logging.ERROR, logger="edge_lstm.mqtt"):
        with running(doc) as d:
            d.link.subscribe("live1/extra/#", 1, fragile)
            assert d.link.wait_subscribed(10)
            thread = d.link._net_thread
            pub = publisher(mqtt_broker)
            pub.publish("live1/extra/x", b'{"other": 1}', qos=1)
            pub.publish("live1/s/raw", b'{"ts": 1, "value": 112}', qos=1)
            got = gather(col, lambda m: on(m, "/errors") and on(m, "/pred"))
            close(pub)
            assert thread.is_alive() and d.link._net_thread is thread  # never restarted: never died
            assert d.wait_idle() and d.stats()["internal_errors"] == 1
    err = on(got, "/errors")[0]
    assert err["code"] == "internal-error" and err["topic"] == "live1/extra/x" and err["source"] == "daemon"
    assert "KeyError: 'expected'" in err["problem"] and "acknowledged and dropped" in err["problem"]
    assert "Traceback" in caplog.text and "fragile" in caplog.text
    # the same persistent session again: had the message not been acknowledged, the broker
    # would deliver it first (to nobody: it would be counted as unmatched), before the marker
    with running(doc) as d:
        pub = publisher(mqtt_broker)
        pub.publish("live1/s/raw", b'{"ts": 2, "value": 118}', qos=1)
        gather(col, lambda m: on(m, "/pred"))
        close(pub)
        assert d.link.unmatched == 0 and seen == [b'{"other": 1}']


def test_status_degrades_when_inference_stalls_and_recovers(mqtt_broker, collect, tiny_bundle):
    """An engine call that hangs while samples wait turns the retained status `degraded` (the
    retained health document says why) and `online` again once it returns; no sample is lost."""
    doc = daemon_doc(mqtt_broker, tiny_bundle, "live2", pipeline={"stall_timeout": 1})
    rt = open_runtime(config.from_dict(doc, environ={}))
    release, hung = threading.Event(), threading.Event()
    step = rt.push_many

    def hanging(samples):  # a hung engine call on the stream "hang" (a fault injected in the runtime)
        if any(s.stream == "hang" for s in samples):
            hung.set()
            release.wait(60)
        return step(samples)

    rt.push_many = hanging
    col = collect(["edge/live2/status", "edge/live2/health", "edge/live2/pred/+"])
    with running(doc, runtime=rt) as d:
        pub = publisher(mqtt_broker)
        pub.publish("live2/hang/raw", b'{"ts": 1, "value": 112}', qos=1)
        # the other samples must wait in the backlog behind the hung call, not ride in its batch
        assert hung.wait(30)
        for i in range(3):
            pub.publish("live2/s/raw", json.dumps({"ts": i + 1, "value": 112.0}), qos=1)
        got = gather(col, lambda m: "degraded" in on(m, "/status") and any(
            isinstance(h, dict) and h["status"] == "degraded" for h in on(m, "/health")))
        doc_ = next(h for h in on(got, "/health") if h["status"] == "degraded")
        assert len(doc_["reasons"]) == 1 and "inference has made no progress for" in doc_["reasons"][0]
        assert "sample(s)/command(s) waiting" in doc_["reasons"][0] and doc_["since"] <= doc_["time"]
        assert d.stats()["status"] == "degraded"
        release.set()
        got += gather(col, lambda m: "online" in on(m, "/status") and len(on(got + m, "/pred")) >= 4)
        close(pub)
        assert d.wait_idle() and d.stats()["status"] == "online"
    assert on(got, "/status") == ["online", "degraded", "online", "offline"][:len(on(got, "/status"))]
    assert sorted(f["stream"] for f in on(got, "/pred")) == ["hang", "s", "s", "s"]


def test_a_stuck_message_handler_is_a_health_problem(mqtt_broker):
    """A message handler that does not return (intake stopped) is named by the link's health
    probe after stall_timeout; the probe clears once the handler returns."""
    cfg = config.from_dict({"device": {"id": "stuck1"}, "model": {"bundle": "/b"},
                            "mqtt": {"host": mqtt_broker.host, "port": mqtt_broker.port}}, environ={})
    link = MqttLink(cfg)
    release = threading.Event()
    link.subscribe("stuck1/#", 1, lambda topic, payload, token: release.wait(60))
    link.start()
    try:
        assert link.wait_subscribed(10)
        pub = publisher(mqtt_broker)
        pub.publish("stuck1/x", b"1", qos=1)
        end = time.monotonic() + 30
        while link.health(0.2) is None and time.monotonic() < end:
            time.sleep(0.05)
        assert "MQTT message handler has been stuck for" in link.health(0.2)
        release.set()
        end = time.monotonic() + 30
        while link.health(0.2) is not None and time.monotonic() < end:
            time.sleep(0.05)
        assert link.health(0.2) is None
        close(pub)
    finally:
        release.set()
        link.stop()


def test_a_dead_network_thread_is_restarted_and_reported(mqtt_broker, collect, tiny_bundle, caplog):
    """If paho's network thread ends anyway, the watchdog says so (degraded, with the reason),
    starts it again, and the daemon is back online and forecasting."""
    col = collect(["edge/live3/status", "edge/live3/health", "edge/live3/pred/+"])
    with caplog.at_level(logging.ERROR, logger="edge_lstm.mqtt"):
        with running(daemon_doc(mqtt_broker, tiny_bundle, "live3")) as d:
            d.link._client.loop_stop()  # the thread ends, as a crash in paho would end it
            got = gather(col, lambda m: on(m, "/status")[-1:] == ["online"] and "degraded" in on(m, "/status"))
            pub = publisher(mqtt_broker)
            pub.publish("live3/s/raw", b'{"ts": 1, "value": 112}', qos=1)
            gather(col, lambda m: on(m, "/pred"))
            close(pub)
    reasons = [r for h in on(got, "/health") if isinstance(h, dict) for r in h["reasons"]]
    assert any("network thread had ended (restarted)" in r for r in reasons), reasons
    assert "the MQTT network thread has ended; starting it again" in caplog.text


def test_two_clients_with_one_client_id_are_detected_and_back_off(mqtt_broker, caplog, monkeypatch):
    """Two links with the same client id steal the session from each other: a log line names
    the client id and the fix (mqtt.client_id), the reconnect delay backs off, and once the
    other one is gone the conflict clears."""
    monkeypatch.setattr("edge_lstm.mqtt.SHORT_SESSION", 2.0)
    doc = {"device": {"id": "twin"}, "model": {"bundle": "/b"},
           "mqtt": {"host": mqtt_broker.host, "port": mqtt_broker.port, "client_id": "twin-daemon",
                    "reconnect_min": 0.05, "reconnect_max": 1.0}}
    cfg = config.from_dict(doc, environ={})
    a, b = MqttLink(cfg), MqttLink(cfg)
    with caplog.at_level(logging.INFO, logger="edge_lstm.mqtt"):
        a.start()
        assert a.wait_connected(10)
        b.start()
        end = time.monotonic() + 30
        while not (a.problem or b.problem) and time.monotonic() < end:
            time.sleep(0.05)
        b.stop()
        loser = a if a.problem else b
        assert loser.problem and loser.takeovers >= 1 and loser._backoff > cfg.mqtt.reconnect_min
        line = next(r.getMessage() for r in caplog.records if "is in use by another client" in r.getMessage())
        assert "client id 'twin-daemon'" in line and "mqtt.client_id" in line and "reconnecting in" in line
        # b is gone: a's next connection lives long enough and the conflict clears
        end = time.monotonic() + 30
        while a.health(30) is not None and time.monotonic() < end:
            time.sleep(0.1)
        assert a.health(30) is None and a.connected.is_set()
        a.stop()


def test_a_command_flood_is_rate_limited_and_inference_goes_on(mqtt_broker, collect, tiny_bundle):
    """2,000 resets at once: at most commands.rate per second (plus one burst) are run, the rest
    are refused as rate-limited (counted, reported); samples sent during the flood are all
    forecast."""
    rate = 20.0
    doc = daemon_doc(mqtt_broker, tiny_bundle, "flood2", commands={"rate": rate},
                     pipeline={"error_rate": 5, "stats_interval": 0})
    col = collect(["edge/flood2/pred/+", "edge/flood2/errors"])
    with running(doc) as d:
        pub = publisher(mqtt_broker)
        pub.publish("flood2/s/raw", b'{"ts": 0, "value": 112}', qos=1)
        gather(col, lambda m: on(m, "/pred"))
        t0 = time.monotonic()
        for i in range(2000):
            pub.publish("edge/flood2/cmd", b'{"cmd": "reset", "stream": "s"}', qos=1)
            if i % 200 == 0:
                pub.publish("flood2/s/raw", json.dumps({"ts": i + 1, "value": 112.0}), qos=1)
        got = gather(col, lambda m: len(on(m, "/pred")) >= 10, timeout=60)
        end = time.monotonic() + 60
        while d.counts["commands"] + d.counts["rate_limited"] < 2000 and time.monotonic() < end:
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        close(pub)
        assert d.wait_idle()
        c = d.counts
    assert c["commands"] + c["rate_limited"] == 2000
    assert c["commands"] <= rate + rate * elapsed + 1  # the token bucket's bound, however slow the run
    assert c["rate_limited"] >= 2000 - (rate + rate * elapsed + 1)
    limited = [e for e in on(got + col.drain(0.3), "/errors") if e["code"] == "rate-limited"]
    assert limited and "commands.rate" in limited[0]["problem"] and limited[0]["topic"] == "edge/flood2/cmd"
    assert sorted(f["ts"] for f in on(got, "/pred")) == [i + 1 for i in range(0, 2000, 200)]
