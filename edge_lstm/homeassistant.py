"""Home Assistant MQTT discovery: each stream's forecast appears in HA as a sensor of this device.

For every stream the daemon forecasts, one retained discovery config per target is published on
`<prefix>/sensor/<node_id>/<object_id>_forecast/config`, when the stream is first seen; all of
them again when HA says `online` on `<prefix>/status` (its birth message), after every
reconnect, and after a model swap (units and the model name may change). A diagnostic sensor
shows the daemon's own status (`online`/`degraded`/`offline`).

- Ids: HA drops discovery topics whose node or object id holds anything but `[a-zA-Z0-9_-]`, so
  ids are sanitized; an id that had to change gets a short hash of the original, so `a.b` and
  `a_b` stay two sensors. `unique_id` is `<node_id>_<object_id>`: unique across devices.
- State: the forecast topic itself, non-retained (a retained state with `expire_after` is
  replayed at HA's restart and restarts the timer). The value is the first step of the
  target's forecast; a forecast still warming up shows as unknown (`None`), the whole
  payload (ts, seq, horizon steps, model) goes to the attributes.
- Availability: the daemon's retained status topic. `degraded` counts as unavailable: the
  daemon runs but forecasts stalled, so the last value shown may be stale (the diagnostic
  status sensor says which). Behind a mosquitto bridge, `bridge_state_topic` adds the bridge's
  notification topic (`1`/`0`), with `availability_mode: all`: when a device's broker dies, the
  central broker still holds the retained `online` of the daemon, only the bridge state turns `0`.
- Units: `homeassistant.units` in the config, else the bundle manifest's optional `units`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_lstm.fleet import AddOn, Host

log = logging.getLogger("edge_lstm.homeassistant")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
#: HA's availability check compares the templated status with "online"/"offline".
STATUS_TEMPLATE = "{{ 'online' if value == 'online' else 'offline' }}"


def topic_id(text: str) -> str:
    """`text` as a discovery node/object id (`[a-zA-Z0-9_-]` only); an id that had to change
    gets 6 hex digits of its original's hash, so two different ids never collide."""
    clean = _UNSAFE.sub("_", text)
    if clean != text or not clean:
        clean = f"{clean}_{hashlib.sha1(text.encode()).hexdigest()[:6]}"
    return clean


@dataclass(frozen=True)
class DiscoveryMessage:
    """One retained discovery config: its topic and JSON document."""

    topic: str
    config: dict

    def payload(self) -> bytes:
        """The config as compact JSON (UTF-8, units like `°C` kept as they are)."""
        return json.dumps(self.config, separators=(",", ":"), ensure_ascii=False).encode()


class Discovery:
    """Builds a device's discovery configs (pure: no I/O, so tests check every payload)."""

    def __init__(
        self,
        *,
        device: str,
        status_topic: str,
        prefix: str = "homeassistant",
        node_id: str = "",
        name: str = "",
        bridge_state_topic: str = "",
        expire_after: int = 0,
        state_class: str = "measurement",
        qos: int = 1,
        sw_version: str = "",
    ) -> None:
        self.prefix = prefix
        self.node_id = node_id or topic_id(f"edge-lstm-{device}")
        self.name = name or f"edge-lstm {device}"
        self.status_topic = status_topic
        self.bridge_state_topic = bridge_state_topic
        self.expire_after = expire_after
        self.state_class = state_class
        self.qos = qos
        self.sw_version = sw_version

    def _topic(self, component: str, object_id: str) -> str:
        return f"{self.prefix}/{component}/{self.node_id}/{object_id}/config"

    def _common(self, object_id: str, model: str) -> dict:
        device = {"identifiers": [self.node_id], "name": self.name, "manufacturer": "edge-lstm", "model": model}
        origin = {"name": "edge-lstm"}
        if self.sw_version:
            device["sw_version"] = origin["sw_version"] = self.sw_version
        return {"unique_id": f"{self.node_id}_{object_id}", "device": device, "origin": origin}

    def _availability(self) -> dict:
        checks: list[dict] = [{"topic": self.status_topic, "value_template": STATUS_TEMPLATE}]
        if self.bridge_state_topic:
            checks.append({"topic": self.bridge_state_topic, "payload_available": "1", "payload_not_available": "0"})
        return {"availability": checks, "availability_mode": "all"}

    def forecast_sensors(
        self,
        stream: str,
        state_topic: str,
        targets: Sequence[str],
        *,
        model: str,
        units: Mapping[str, str] | None = None,
        device_classes: Mapping[str, str] | None = None,
    ) -> list[DiscoveryMessage]:
        """One sensor per target of `stream`, reading the first forecast step from `state_topic`."""
        units, device_classes = units or {}, device_classes or {}
        out = []
        for i, target in enumerate(targets):
            label = stream if len(targets) == 1 else f"{stream} {target}"
            object_id = topic_id(stream if len(targets) == 1 else f"{stream}_{target}") + "_forecast"
            config = {
                "name": f"{label} forecast",
                **self._common(object_id, model),
                "state_topic": state_topic,
                "qos": self.qos,
                "value_template": (
                    f"{{{{ 'None' if value_json.warming_up | default(false) else value_json.forecast[0][{i}] }}}}"
                ),
                "json_attributes_topic": state_topic,
                "json_attributes_template": (
                    "{{ {'ts': value_json.ts, 'seq': value_json.seq, 'horizon': value_json.horizon, "
                    "'forecast': value_json.forecast, 'model': value_json.model} | tojson }}"
                ),
                **self._availability(),
            }
            if target in units:
                config["unit_of_measurement"] = units[target]
            if target in device_classes:
                config["device_class"] = device_classes[target]
            if self.state_class:
                config["state_class"] = self.state_class
            if self.expire_after:
                config["expire_after"] = self.expire_after
            out.append(DiscoveryMessage(self._topic("sensor", object_id), config))
        return out

    def anomaly_sensor(self, stream: str, state_topic: str, *, model: str) -> DiscoveryMessage:
        """A binary sensor on the forecast payload's `anomaly` flag (for forecasts that carry one)."""
        object_id = topic_id(stream) + "_anomaly"
        config = {
            "name": f"{stream} anomaly",
            **self._common(object_id, model),
            "state_topic": state_topic,
            "qos": self.qos,
            "value_template": "{{ 'ON' if value_json.anomaly | default(false) else 'OFF' }}",
            "device_class": "problem",
            **self._availability(),
        }
        if self.expire_after:
            config["expire_after"] = self.expire_after
        return DiscoveryMessage(self._topic("binary_sensor", object_id), config)

    def status_sensor(self, *, model: str) -> DiscoveryMessage:
        """The daemon's own status, always available (it is what tells `offline` apart)."""
        object_id = "status"
        config = {
            "name": "status",
            **self._common(object_id, model),
            "state_topic": self.status_topic,
            "qos": 1,
            "entity_category": "diagnostic",
            "icon": "mdi:heart-pulse",
        }
        return DiscoveryMessage(self._topic("sensor", object_id), config)


class HomeAssistant(AddOn):
    """The daemon add-on: publishes the discovery configs when and as often as HA needs them."""

    def __init__(self, host: Host) -> None:
        from edge_lstm import __version__

        cfg = host.cfg
        ha = cfg.homeassistant
        self.host = host
        self.ha = ha
        self.device = cfg.device_id
        self.birth_topic = f"{ha.prefix}/status"
        self.template = cfg.sink.mqtt.topic
        self.discovery = Discovery(
            device=self.device, status_topic=cfg.topic("status"), prefix=ha.prefix, node_id=ha.node_id,
            name=ha.name, bridge_state_topic=ha.bridge_state_topic.format(device=self.device),
            expire_after=ha.expire_after, state_class="" if ha.state_class == "none" else ha.state_class, qos=cfg.sink.mqtt.qos, sw_version=__version__,
        )
        if cfg.sink.mqtt.retain and ha.expire_after:
            log.warning("sink.mqtt.retain = true with homeassistant.expire_after: Home Assistant replays a retained "
                        "forecast at its restart as if it were fresh and restarts the expiry timer; publish "
                        "forecasts non-retained (the default)")
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self.published = 0

    def start(self) -> None:
        with self._lock:
            self._seen.update(self.host.runtime.streams())  # restored from a snapshot: known already
        link = self.host.link
        link.subscribe(self.birth_topic, 1, self._on_birth)
        link.on_connected.append(self.publish_all)

    def after_batch(self, batch: Sequence[Any], results: Sequence[Any]) -> None:
        seen = self._seen
        new = {item.stream for item in batch if item.stream not in seen}
        if new:
            with self._lock:
                new -= self._seen
                self._seen |= new
            for stream in sorted(new):
                self._publish(self._stream_messages(stream))

    def model_loaded(self) -> None:
        self.publish_all()

    def publish_all(self) -> None:
        """Every config again (paho thread at connect and HA birth; inference thread after a swap)."""
        with self._lock:
            streams = sorted(self._seen)
        messages = [self.discovery.status_sensor(model=self._model())]
        for stream in streams:
            messages.extend(self._stream_messages(stream))
        self._publish(messages)
        log.info("Home Assistant discovery: %d config(s) published under %s/", len(messages), self.ha.prefix)

    def _on_birth(self, topic: str, payload: bytes, token: int) -> None:
        if bytes(payload).strip() == b"online":
            self.publish_all()
        self.host.link.ack(token)

    def _model(self) -> str:
        bundle = self.host.runtime.bundle
        return bundle.name if bundle is not None else "model"

    def _stream_messages(self, stream: str) -> list[DiscoveryMessage]:
        rt = self.host.runtime
        bundle = rt.bundle
        units = {**(bundle.units if bundle is not None else {}), **self.ha.units}
        return self.discovery.forecast_sensors(
            stream, self.template.format(device=self.device, stream=stream), rt.targets,
            model=self._model(), units=units, device_classes=self.ha.device_classes,
        )

    def _publish(self, messages: list[DiscoveryMessage]) -> None:
        for m in messages:
            self.host.link.publish(m.topic, m.payload(), qos=1, retain=True)
        self.published += len(messages)
