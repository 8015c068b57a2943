"""The door every sample comes through, whatever its source.

A source hands `Intake.offer` a stream id and raw bytes; the intake checks the stream id,
decodes the payload for the current model's features, and passes either an `Incoming` sample
to the pipeline or a `PayloadError` to the refusal handler (counted and published on the
errors topic). So the rules for bad input live in one place and a refused sample never gets
near a stream's state.

A timestamp further ahead of this device's clock than `max_future_skew` seconds is refused
(`future-ts`): accepted, it would become the stream's clock, and every later sample with a
true timestamp would be dropped as out of order until the device's clock caught up with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

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
        max_future_skew: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.features = list(features)
        self.accept = accept
        self.refuse = refuse
        self.max_payload = max_payload
        self.max_stream_id = max_stream_id
        self.strict_keys = strict_keys
        self.max_future_skew = max_future_skew  # seconds; 0 = no check
        self.clock = clock

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
            if reading.ts is not None:
                ts = reading.ts
            if ts is not None and self.max_future_skew and ts > self.clock() + self.max_future_skew:
                raise future_ts_error(ts, self.clock(), self.max_future_skew, stream)
        except PayloadError as exc:
            self.refuse(Refusal(exc, source, topic))
            return False
        return self.accept(Incoming(stream, reading.values, ts, received, ack)) is not False

    def refuse_error(self, error: PayloadError, *, source: str, topic: str | None = None) -> None:
        """Report a refusal found by the source itself (a malformed serial line, say)."""
        self.refuse(Refusal(error, source, topic))


def future_ts_error(ts: float, now: float, skew: float, stream: str | None) -> PayloadError:
    """The `future-ts` refusal: how far ahead `ts` is, of which clock, and what to change."""
    unit = next((name for name, f in (("milliseconds", 1e3), ("microseconds", 1e6), ("nanoseconds", 1e9))
                 if abs(ts / f - now) < 366 * 86400), None)
    hint = (f"it looks like {unit} since the epoch: send seconds" if unit else
            "fix the sender's clock, or this device's clock if it is the one that is wrong "
            "(no real-time clock, NTP not yet synchronised)")
    return PayloadError(
        "future-ts",
        f"'ts' {ts!r} is {duration(ts - now)} ahead of this device's clock ({now:.3f}, "
        f"{_iso(now)}); the limit is pipeline.max_future_skew = {skew:g} s: {hint}, or raise the key",
        stream=stream,
    )


def duration(seconds: float) -> str:
    """`seconds` for people: '42 s', '3.5 h', '12 days', '3.2e+10 years'."""
    for limit, div, name in ((120, 1, "s"), (7200, 60, "min"), (172800, 3600, "h"), (3 * 365 * 86400, 86400, "days")):
        if seconds < limit:
            return f"{seconds / div:.3g} {name}"
    return f"{seconds / (365.25 * 86400):.3g} years"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
