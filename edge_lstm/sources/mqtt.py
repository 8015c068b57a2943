"""Samples from MQTT topics; the stream id is the topic level marked `{stream}`."""

from __future__ import annotations

from collections.abc import Sequence

from edge_lstm.config import stream_level, subscription
from edge_lstm.intake import Intake
from edge_lstm.mqtt import MqttLink


class MqttSource:
    """Subscribes to `sensors/{stream}/raw`-style patterns on a shared `MqttLink`."""

    def __init__(self, link: MqttLink, patterns: Sequence[str], qos: int, intake: Intake) -> None:
        self.link = link
        self.patterns = list(patterns)
        self.qos = qos
        self.intake = intake
        self._open = False

    def start(self) -> None:
        """Subscribe (and re-subscribe on every reconnect)."""
        self._open = True
        for pattern in self.patterns:
            level = stream_level(pattern)
            self.link.subscribe(subscription(pattern), self.qos, self._handler(level))

    def _handler(self, level: int):
        def handle(topic: str, payload: bytes, token: int) -> None:
            if not self._open:
                return  # not acknowledged: the broker delivers it again to the next session
            stream = topic.split("/")[level]
            if not self.intake.offer(stream, payload, source="mqtt", topic=topic, ack=token):
                self.link.ack(token)  # refused or dropped: done with it

        return handle

    def stop(self) -> None:
        """Stop offering samples; later messages are left unacknowledged (the broker keeps
        them for the next session) and the link stays up for the forecasts still to send."""
        self._open = False
