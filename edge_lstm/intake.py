"""The door every sample comes through, whatever its source.

A source hands `Intake.offer` a stream id and raw bytes; the intake checks the stream id,
decodes the payload for the current model's features, and passes either an `Incoming` sample
to the pipeline or a `PayloadError` to the refusal handler (counted and published on the
errors topic). So the rules for bad input live in one place and a refused sample never gets
near a stream's state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge_lstm.payload import MAX_PAYLOAD, MAX_STREAM_ID, PayloadError, decode, validate_stream_id


@dataclass(frozen=True, slots=True)
class Incoming:
    """A decoded sample on its way to the inference thread."""

    stream: str
    values: tuple[float, ...]
    ts: float | None
    received: float  # time.perf_counter() at arrival, for the latency figures
    ack: int = 0  # MQTT ack token: acknowledged once the forecast is out (0 = none)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused sample: the error and where it came from."""

    error: PayloadError
    source: str
    topic: str | None = None


class Intake:
    """Validates and decodes raw samples; thread-safe (sources call it from their own threads)."""

    def __init__(
        self,
        features: Sequence[str],
        accept: Callable[[Incoming], bool | None],
        refuse: Callable[[Refusal], None],
        *,
        max_payload: int = MAX_PAYLOAD,
        max_stream_id: int = MAX_STREAM_ID,
        strict_keys: bool = True,
    ) -> None:
        self.features = list(features)
        self.accept = accept
        self.refuse = refuse
        self.max_payload = max_payload
        self.max_stream_id = max_stream_id
        self.strict_keys = strict_keys

    def offer(
        self,
        stream: str | bytes,
        payload: bytes,
        *,
        source: str,
        topic: str | None = None,
        ts: float | None = None,
        ack: int = 0,
    ) -> bool:
        """Decode one sample and pass it on; False if it was refused or not queued.

        `ts`, if given, overrides a timestamp-less payload (serial lines carry it apart).
        `ack` travels with the sample so that it is acknowledged once processed.
        """
        received = time.perf_counter()
        try:
            if isinstance(stream, bytes):
                try:
                    stream = stream.decode("utf-8")
                except UnicodeDecodeError:
                    raise PayloadError("bad-stream-id", "stream id is not UTF-8 text") from None
            validate_stream_id(stream, max_len=self.max_stream_id)
            reading = decode(
                payload,
                self.features,
                max_bytes=self.max_payload,
                stream=stream,
                strict_keys=self.strict_keys,
            )
        except PayloadError as exc:
            self.refuse(Refusal(exc, source, topic))
            return False
        return self.accept(
            Incoming(stream, reading.values, reading.ts if reading.ts is not None else ts, received, ack)
        ) is not False

    def refuse_error(self, error: PayloadError, *, source: str, topic: str | None = None) -> None:
        """Report a refusal found by the source itself (a malformed serial line, say)."""
        self.refuse(Refusal(error, source, topic))
