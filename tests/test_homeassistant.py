"""Home Assistant MQTT discovery: every payload the daemon publishes passes HA's documented
schema (tests/data/ha_mqtt_discovery_schema.json), its templates read a real forecast, and a
real daemon on mosquitto publishes the configs retained, again on HA's birth message."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from daemon_harness import close, daemon_doc, gather, publisher, running
from edge_lstm.homeassistant import STATUS_TEMPLATE, Discovery, topic_id

SCHEMA = json.loads((Path(__file__).parent / "data" / "ha_mqtt_discovery_schema.json").read_text())


# ----------------------------------------------------------------------------- the validator


def _type_problem(kind, value) -> str | None:
    if isinstance(kind, dict):
        return None if value in kind["enum"] else f"{value!r} is not one of {kind['enum']}"
    ok = {
        "string": lambda v: isinstance(v, str) and v != "",
        "template": lambda v: isinstance(v, str) and "{{" in v and "}}" in v,
        "publish_topic": lambda v: isinstance(v, str) and v and "+" not in v and "#" not in v,
        "subscribe_topic": lambda v: isinstance(v, str) and v and all(
            lv in ("+", "#") or ("+" not in lv and "#" not in lv) for lv in v.split("/")) and "#" not in v[:-1],
        "positive_int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "qos": lambda v: v in (0, 1, 2) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "list": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }[kind]
    return None if ok(value) else f"{value!r} is not a {kind} ({SCHEMA['types'][kind]})"


def _keys(doc: dict, allowed: dict, where: str) -> list[str]:
    out = []
    for key, value in doc.items():
        if key not in allowed:
            out.append(f"{where}: key {key!r} is not in HA's schema")
        elif (p := _type_problem(allowed[key], value)) is not None:
            out.append(f"{where}.{key}: {p}")
    return out


def problems(topic: str, config: dict) -> list[str]:
    """What HA's discovery would refuse (or edge-lstm's own rules forbid) in one config."""
    m = re.fullmatch(SCHEMA["topic"]["regex"], topic)
    if m is None:
        return [f"topic {topic!r} does not match HA's discovery topic regex (ids: [a-zA-Z0-9_-] only)"]
    comp = m["component"]
    if comp not in SCHEMA["components"]:
        return [f"component {comp!r} is not one edge-lstm publishes"]
    spec = SCHEMA["components"][comp]
    common = SCHEMA["entity_common"]
    out = _keys(config, {**common["allowed"], **spec["allowed"]}, comp)
    for key in spec["required"] + common["project_required"]:
        if key not in config:
            out.append(f"{comp}: required key {key!r} is missing")
    for a, b in common["exclusive"]:
        if a in config and b in config:
            out.append(f"{comp}: {a!r} and {b!r} exclude each other")
    dev = config.get("device", {})
    out += _keys(dev, SCHEMA["device"]["allowed"], "device")
    if not any(dev.get(k) for k in SCHEMA["device"]["one_of_required"]):
        out.append("device: needs 'identifiers' or 'connections'")
    origin = config.get("origin", {})
    out += _keys(origin, SCHEMA["origin"]["allowed"], "origin")
    out += [f"origin: required key {k!r} is missing" for k in SCHEMA["origin"]["required"] if k not in origin]
    for i, item in enumerate(config.get("availability", [])):
        out += _keys(item, SCHEMA["availability_item"]["allowed"], f"availability[{i}]")
        out += [f"availability[{i}]: {k!r} is missing" for k in SCHEMA["availability_item"]["required"] if k not in item]
    return out


# ----------------------------------------------------------------------------- pure payloads


def discovery(**kw) -> Discovery:
    base = dict(device="dev.01", status_topic="edge/dev.01/status", bridge_state_topic="edge/dev.01/bridge/state",
                expire_after=300, sw_version="0.1.0")
    return Discovery(**{**base, **kw})


def every_message(d: Discovery) -> list:
    return [
        *d.forecast_sensors("boiler", "edge/dev.01/pred/boiler", ["passengers"], model="m",
                            units={"passengers": "°C"}, device_classes={"passengers": "temperature"}),
        *d.forecast_sensors("room 2/a", "edge/dev.01/pred/room 2/a", ["temp", "hum"], model="m"),
        d.anomaly_sensor("boiler", "edge/dev.01/pred/boiler", model="m"),
        d.status_sensor(model="m"),
    ]


def test_every_payload_passes_the_schema() -> None:
    """Forecast sensors (one and two targets, odd stream ids), the anomaly binary sensor and the
    status sensor all validate; unique ids are distinct and carry the device's node id."""
    messages = every_message(discovery())
    assert len(messages) == 5
    for m in messages:
        assert problems(m.topic, m.config) == [], (m.topic, m.config)
        assert m.config["unique_id"].startswith("edge-lstm-dev_01_")
        json.loads(m.payload())  # and it is JSON
    assert len({m.config["unique_id"] for m in messages}) == len({m.topic for m in messages}) == 5
    boiler = messages[0].config
    assert boiler["unit_of_measurement"] == "°C" and boiler["device_class"] == "temperature"
    assert boiler["availability_mode"] == "all" and len(boiler["availability"]) == 2
    assert boiler["expire_after"] == 300 and "°C".encode() in messages[0].payload()


def test_the_validator_catches_broken_payloads() -> None:
    """A payload without unique_id, a topic with a bad id, both availability forms, a device
    without identifiers, a bad state class: each fails (so the test above can fail)."""
    good = discovery().forecast_sensors("boiler", "edge/d/pred/boiler", ["passengers"], model="m")[0]
    assert problems(good.topic, good.config) == []

    def broken(**change) -> dict:
        doc = json.loads(good.payload())
        for k, v in change.items():
            if v is None:
                doc.pop(k)
            else:
                doc[k] = v
        return doc

    assert any("unique_id" in p for p in problems(good.topic, broken(unique_id=None)))
    assert problems("homeassistant/sensor/edge.dev01/boiler_forecast/config", good.config)
    assert problems("homeassistant/sensor/edge/dev01/boiler_forecast/config", good.config)
    assert any("exclude" in p for p in problems(good.topic, broken(availability_topic="edge/d/status")))
    assert any("identifiers" in p for p in problems(good.topic, broken(device={"name": "x"})))
    assert any("state_class" in p for p in problems(good.topic, broken(state_class="sometimes")))
    assert any("state_topic" in p for p in problems(good.topic, broken(state_topic=None)))
    assert any("expire_after" in p for p in problems(good.topic, broken(expire_after=-5)))


def test_topic_ids_are_safe_and_distinct() -> None:
    """Ids outside [a-zA-Z0-9_-] are rewritten with a hash suffix; clean ones stay as they are."""
    assert topic_id("boiler_1-a") == "boiler_1-a"
    assert re.fullmatch(r"[A-Za-z0-9_-]+", topic_id("room 2/a.b#"))
    assert topic_id("a.b") != topic_id("a_b") and topic_id("a.b") != topic_id("a b")
    assert discovery(node_id="").node_id == topic_id("edge-lstm-dev.01")


def test_templates_read_a_real_forecast_payload(tiny_bundle) -> None:
    """HA's templates are Jinja: rendered on a forecast the daemon's encoder made, the value
    is the first step of the target, unknown while warming up; degraded counts as offline."""
    jinja2 = pytest.importorskip("jinja2")
    from edge_lstm.forecaster import Runtime
    from edge_lstm.payload import encode_forecast

    rt = Runtime.open(tiny_bundle, backend="numpy", horizon=3)
    env = jinja2.Environment()
    sensor = discovery().forecast_sensors("s", "t", rt.targets, model="m")[0].config
    value = env.from_string(sensor["value_template"])
    attrs = env.from_string(sensor["json_attributes_template"])
    for i in range(8):
        f = rt.push("s", [120.0 + i], float(i))
        doc = json.loads(encode_forecast(stream="s", ts=f.ts, seq=f.seq, forecast=f.values, targets=rt.targets,
                                         horizon=f.horizon, model="m", variant="fp32", latency_ms=0.1,
                                         warming_up=f.warming_up))
        shown = value.render(value_json=doc)
        if f.warming_up:
            assert shown == "None"
        else:
            assert float(shown) == pytest.approx(float(f.values[0, 0]), rel=1e-6)
            assert json.loads(attrs.render(value_json=doc))["forecast"] == doc["forecast"]
    assert not f.warming_up
    status = env.from_string(STATUS_TEMPLATE)
    assert [status.render(value=v) for v in ("online", "degraded", "offline")] == ["online", "offline", "offline"]
    anomaly = env.from_string(discovery().anomaly_sensor("s", "t", model="m").config["value_template"])
    assert anomaly.render(value_json={"anomaly": True}) == "ON" and anomaly.render(value_json={}) == "OFF"


# ----------------------------------------------------------------------------- a real daemon


@pytest.mark.broker
def test_daemon_publishes_retained_configs_and_again_on_ha_birth(broker_factory, collect, tiny_bundle, tmp_path) -> None:
    """With [homeassistant] on: a config per stream appears, retained, when the stream first
    forecasts, with the bundle's unit (the config overrides it per target); HA's `online` on
    homeassistant/status brings every config again; forecasts stay non-retained."""
    broker = broker_factory()
    bundle = tmp_path / "units-lstm"
    shutil.copytree(tiny_bundle, bundle)
    mf = json.loads((bundle / "manifest.json").read_text())
    mf["units"] = {"passengers": "thousand passengers"}
    (bundle / "manifest.json").write_text(json.dumps(mf))
    from check_bundle import problems as bundle_problems

    assert bundle_problems(bundle) == []  # an optional key: still a valid format_version 1 bundle

    doc = daemon_doc(broker, bundle, "dev.01", homeassistant={"enabled": True, "expire_after": 120})
    col = collect(["homeassistant/#", "edge/dev.01/pred/#"], broker=broker)
    pub = publisher(broker)
    with running(doc):
        for i in range(3):
            for stream in ("boiler", "attic.2"):
                pub.publish(f"dev.01/{stream}/raw", json.dumps({"ts": i, "value": 100.0 + i}), qos=1)

        def configs(msgs) -> dict:
            return {t: json.loads(p) for t, p, _ in msgs if t.endswith("/config")}

        got = gather(col, lambda m: len(configs(m)) >= 3 and sum("/pred/" in t for t, _, _ in m) >= 6)
        found = configs(got)
        for topic, config in found.items():
            assert problems(topic, config) == [], (topic, config)
        sensors = {c["state_topic"]: c for c in found.values() if "forecast" in c["name"]}
        assert set(sensors) == {"edge/dev.01/pred/boiler", "edge/dev.01/pred/attic.2"}
        assert {c["unit_of_measurement"] for c in sensors.values()} == {"thousand passengers"}
        assert all(c["expire_after"] == 120 and c["availability"][0]["topic"] == "edge/dev.01/status"
                   for c in sensors.values())
        assert not any(r for t, _, r in got if "/pred/" in t)  # forecasts are not retained

        late = collect(["homeassistant/#"], broker=broker)  # HA restarting: the configs are retained
        assert set(configs(gather(late, lambda m: len(configs(m)) >= 3))) == set(found)
        late.drain()
        col.drain()
        ha = publisher(broker)
        ha.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
        again = configs(gather(col, lambda m: len(configs(m)) >= 3))
        assert set(again) == set(found)
        close(ha)
    close(pub)


def test_config_units_override_and_checks(tiny_bundle) -> None:
    """`homeassistant.units` beats the manifest; a bad node id or a stdout sink is refused."""
    from edge_lstm import config
    from edge_lstm.errors import ConfigError

    base = {"model": {"bundle": str(tiny_bundle)}, "sink": {"kind": "mqtt"}}
    cfg = config.from_dict({**base, "homeassistant": {"enabled": True, "units": {"passengers": "k"}}})
    assert cfg.homeassistant.units == {"passengers": "k"}
    with pytest.raises(ConfigError, match="homeassistant.node_id"):
        config.from_dict({**base, "homeassistant": {"enabled": True, "node_id": "edge.dev01"}})
    with pytest.raises(ConfigError, match="sink.kind"):
        config.from_dict({"model": {"bundle": str(tiny_bundle)}, "sink": {"kind": "stdout"},
                          "homeassistant": {"enabled": True}})
    with pytest.raises(ConfigError, match="homeassistant.units.passengers.*a string"):
        config.from_dict({**base, "homeassistant": {"units": {"passengers": 3}}})


def test_units_in_the_manifest_are_optional_and_checked(tmp_path) -> None:
    """`write_bundle(units=...)` (export --unit) records them; the bundle still passes the
    shared checker; a manifest whose units are not strings is refused on open."""
    pytest.importorskip("onnx", reason="writing a bundle needs the export side")
    import numpy as np
    from check_bundle import problems as bundle_problems
    from stacks import dense, recurrent

    from edge_lstm.bundle import Bundle
    from edge_lstm.errors import BundleError
    from edge_lstm_export.bundle_writer import write_bundle
    from edge_lstm_export.stack import Stack

    rng = np.random.default_rng(3)
    stack = Stack((recurrent("gru", 2, 4, rng),), (dense(4, 2, rng),), window=4)
    path = write_bundle(stack, tmp_path / "b", name="b", features=["t", "h"], targets=["t", "h"], units={"t": "°C"})
    assert Bundle.open(path).units == {"t": "°C"} and bundle_problems(path) == []
    with pytest.raises(ValueError, match="not targets"):
        write_bundle(stack, tmp_path / "c", name="c", features=["t", "h"], targets=["t", "h"], units={"x": "m"})
    mf = json.loads((path / "manifest.json").read_text())
    mf["units"] = {"t": 3}
    (path / "manifest.json").write_text(json.dumps(mf))
    with pytest.raises(BundleError, match="'units' must map"):
        Bundle.open(path)
