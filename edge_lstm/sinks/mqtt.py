"""Forecasts published to `edge/{device}/pred/{stream}` (template, QoS and retain configurable)."""

from __future__ import annotations

from edge_lstm.mqtt import MqttLink


class MqttSink:
    """Publishes encoded prediction payloads on a shared `MqttLink`."""

    def __init__(self, link: MqttLink, template: str, device: str, qos: int, retain: bool) -> None:
        self.link = link
        self.prefix, _, self.suffix = template.replace("{device}", device).partition("{stream}")
        self.qos = qos
        self.retain = retain
        self.failed = 0

    def topic(self, stream: str) -> str:
        """The prediction topic of one stream."""
        return f"{self.prefix}{stream}{self.suffix}"

    def send(self, stream: str, payload: bytes) -> None:
        """Publish one forecast (QoS 1 is queued by paho while the broker is away)."""
        if not self.link.publish(self.topic(stream), payload, self.qos, self.retain):
            self.failed += 1

    def flush(self) -> None:
        """Nothing to do: paho's network thread sends as soon as it can."""
