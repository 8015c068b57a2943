"""Sample payloads in, prediction payloads out.

A sample arrives as bytes (an MQTT payload, a serial line, a CSV row) and becomes a `Reading`:
one value per model feature, plus an optional timestamp. Everything a sensor might get wrong is
refused here with a `PayloadError` that says what was found and what was expected, so that a
bad payload is counted and reported and never reaches any stream's state.

Accepted forms (F = the model's feature count, names from the bundle manifest):

- JSON object ``{"ts": 1764072000.0, "value": 21.3}`` (F = 1)
- JSON object ``{"ts": 1764072000.0, "values": [21.3, 40.1]}``
- JSON object keyed by feature name ``{"ts": 1764072000.0, "temp": 21.3, "rh": 40.1}``
- JSON array ``[21.3, 40.1]`` or JSON number ``21.3``
- plain text ``21.3`` or ``21.3,40.1`` (whitespace around values is ignored)

``ts`` is optional (seconds since the epoch, a number); without it the runtime orders samples
by arrival and cannot drop QoS 1 redeliveries, so senders should include it.

Hostile input gets the same treatment as a sensor's mistake: whatever the bytes, `decode`
returns a `Reading` or raises `PayloadError`, never anything else (tests fuzz it). Numbers must
lie in the float32 range the models compute in (a 400-digit integer is refused, not turned into
inf or an OverflowError); duplicate keys are refused (which one would the sender mean?); a
leading UTF-8 byte-order mark is ignored; plain-text values are ASCII decimals.
"""

from __future__ import annotations

import json
import math
import re
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_lstm.errors import EdgeLstmError

#: Default payload size limit in bytes; a sensor sample is a few dozen bytes.
MAX_PAYLOAD = 4096
#: Default stream-id length limit in characters; the id becomes an MQTT topic level.
MAX_STREAM_ID = 64

#: Keys of a JSON sample object that are not feature names.
RESERVED_KEYS = ("ts", "value", "values")
#: Largest magnitude a value may have: the engines compute in float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: A plain-text value: an ASCII decimal (float() alone would also take '1_000' or other scripts' digits).
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_NON_FINITE_WORDS = {"nan", "inf", "infinity"}


class PayloadError(EdgeLstmError, ValueError):
    """Raised when a sample payload or stream id is refused; no stream state was touched.

    `code` is a short stable identifier (``not-utf8``, ``not-json``, ``too-large``,
    ``non-finite``, ``out-of-range``, ``wrong-count``, ``bad-ts``, ``future-ts``, ``bad-value``,
    ``bad-shape``, ``unknown-key``, ``duplicate-key``, ``empty``, ``bad-stream-id``) used for
    counting and on the errors topic.
    """

    def __init__(self, code: str, problem: str, *, stream: str | None = None) -> None:
        where = f"stream {stream!r}: " if stream is not None else ""
        super().__init__(f"{where}{problem}")
        self.code = code
        self.problem = problem
        self.stream = stream


@dataclass(frozen=True, slots=True)
class Reading:
    """One decoded sample: values in feature order, and the sender's timestamp if it gave one."""

    values: tuple[float, ...]
    ts: float | None = None


def validate_stream_id(stream: str, *, max_len: int = MAX_STREAM_ID) -> str:
    """Return `stream` if it is safe as one MQTT topic level, else raise PayloadError.

    A stream id is published as `edge/<device>/pred/<stream>`, so it must not hold the topic
    separators or wildcards (``/ + #``), control characters, or be empty or overlong.
    """
    if not isinstance(stream, str):
        raise PayloadError("bad-stream-id", f"stream id must be text, found {type(stream).__name__}")
    if not stream:
        raise PayloadError("bad-stream-id", "stream id is empty")
    if len(stream) > max_len:
        raise PayloadError(
            "bad-stream-id",
            f"stream id is {len(stream)} characters long, the limit is {max_len} "
            f"(starts {stream[:16]!r})",
        )
    for ch in stream:
        if ch in "/+#":
            raise PayloadError(
                "bad-stream-id",
                f"stream id {stream!r} contains {ch!r}, which is an MQTT topic separator or "
                "wildcard; use letters, digits, '-', '_' or '.'",
            )
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            raise PayloadError(
                "bad-stream-id",
                f"stream id {stream!r} contains the control character U+{ord(ch):04X}",
            )
    return stream


def decode(
    payload: bytes,
    features: Sequence[str],
    *,
    max_bytes: int = MAX_PAYLOAD,
    stream: str | None = None,
    strict_keys: bool = True,
) -> Reading:
    """Decode one sample payload for a model with the given feature names.

    `stream` only labels error messages. With `strict_keys`, a JSON object holding keys that
    are neither reserved (`ts`, `value`, `values`) nor feature names is refused, so a typo in a
    feature name is reported instead of silently dropped.
    """
    if len(payload) > max_bytes:
        raise PayloadError(
            "too-large", f"payload is {len(payload)} bytes, the limit is {max_bytes}", stream=stream
        )
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(
            "not-utf8",
            f"payload is not UTF-8 text (byte 0x{payload[exc.start]:02x} at offset {exc.start})",
            stream=stream,
        ) from None
    body = text.removeprefix("\ufeff").strip()
    if not body:
        raise PayloadError("empty", "payload is empty", stream=stream)
    if body[0] in "{[":
        return _decode_json(body, features, stream=stream, strict_keys=strict_keys)
    return _decode_text(body, features, stream=stream)


def _reject_constant(name: str) -> float:
    raise PayloadError("non-finite", f"payload holds {name}; values must be finite numbers")


def _parse_number(text: str) -> float:
    """Every JSON number becomes a float at once, checked against the float32 range: a
    400-digit integer or 1e999 is refused here, never overflowed or turned into inf later."""
    v = float(text)
    if not -FLOAT32_MAX <= v <= FLOAT32_MAX:
        shown = text if len(text) <= 24 else f"{text[:12]}... ({len(text)} characters)"
        raise PayloadError(
            "out-of-range",
            f"payload holds the number {shown}; numbers must lie within ±{FLOAT32_MAX:.4g} "
            "(the float32 range the model computes in)",
        )
    return v


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        twice = sorted({k for k, _ in pairs if k in seen or seen.add(k)})
        raise PayloadError(
            "duplicate-key", f"payload repeats the key(s) {twice}; send each key once"
        )
    return doc


# One decoder, built once (json.loads with hooks would build one per call).
_JSON = json.JSONDecoder(
    parse_constant=_reject_constant, parse_int=_parse_number, parse_float=_parse_number,
    object_pairs_hook=_unique_keys,
)


def parse_json(text: str, *, stream: str | None = None, what: str = "payload") -> Any:
    """Parse JSON text under the payload rules (finite float32-range numbers, unique keys,
    bounded nesting); PayloadError for anything else, whatever the text."""
    try:
        return _JSON.decode(text)
    except PayloadError as exc:
        raise PayloadError(exc.code, exc.problem.replace("payload", what, 1), stream=stream) from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise PayloadError("not-json", f"{what} is not valid JSON: {msg}", stream=stream) from None


def _decode_json(
    body: str, features: Sequence[str], *, stream: str | None, strict_keys: bool
) -> Reading:
    doc = parse_json(body, stream=stream)
    if isinstance(doc, list):
        return Reading(_numbers(doc, features, "the JSON array", stream), None)
    ts = _ts(doc.get("ts"), stream)
    keys = [k for k in doc if k != "ts"]
    if "values" in doc or "value" in doc:
        if "values" in doc and "value" in doc:
            raise PayloadError(
                "bad-shape", "payload has both 'value' and 'values'; send one of them", stream=stream
            )
        key = "values" if "values" in doc else "value"
        extra = [k for k in keys if k != key]
        if extra and strict_keys:
            raise PayloadError(
                "unknown-key",
                f"payload has unexpected keys {extra} beside {key!r}; {_sample_forms(features)}",
                stream=stream,
            )
        raw = doc[key]
        if key == "value" and isinstance(raw, list):
            raise PayloadError(
                "bad-shape", "'value' holds a list; use 'values' for several values", stream=stream
            )
        if key == "values" and not isinstance(raw, list):
            raw_kind = _kind(raw)
            raise PayloadError(
                "bad-shape",
                f"'values' must be a list of numbers, found {raw_kind}",
                stream=stream,
            )
        items = raw if isinstance(raw, list) else [raw]
        return Reading(_numbers(items, features, f"{key!r}", stream), ts)
    missing = [f for f in features if f not in doc]
    unknown = [k for k in keys if k not in features]
    if unknown and (strict_keys or missing):
        raise PayloadError(
            "unknown-key",
            f"payload has unexpected keys {unknown}; {_sample_forms(features)}",
            stream=stream,
        )
    if missing:
        raise PayloadError(
            "wrong-count",
            f"payload lacks the features {missing}; the model needs {list(features)}",
            stream=stream,
        )
    return Reading(tuple(number(doc[f], f"feature {f!r}", stream) for f in features), ts)


def _sample_forms(features: Sequence[str]) -> str:
    """The JSON sample forms, for an unknown-key error: one form per payload, never mixed."""
    return (f"send one of {{\"value\": x}}, {{\"values\": [...]}} or the feature names "
            f"{list(features)} as keys, each with an optional \"ts\"")


def _decode_text(body: str, features: Sequence[str], *, stream: str | None) -> Reading:
    parts = [p.strip() for p in body.split(",")]
    values = []
    for i, part in enumerate(parts):
        what = f"value {i + 1}"
        if part.lower().lstrip("+-") in _NON_FINITE_WORDS:
            raise PayloadError(
                "non-finite", f"{what} is {part!r}; values must be finite", stream=stream
            )
        if not _DECIMAL.fullmatch(part):
            shown = part if len(part) <= 32 else part[:32] + "..."
            raise PayloadError(
                "bad-value",
                f"{what} is {shown!r}, not a number (plain-text payloads are decimal numbers "
                "separated by commas, e.g. '21.3,40.1'; JSON must start with '{' or '[')",
                stream=stream,
            )
        values.append(_in_range(float(part), what, stream))
    _check_count(len(values), features, stream)
    return Reading(tuple(values), None)


def _kind(x: Any) -> str:
    if isinstance(x, bool):
        return f"the boolean {json.dumps(x)}"
    if isinstance(x, str):
        shown = x if len(x) <= 32 else x[:32] + "..."
        return f"the string {shown!r}"
    if x is None:
        return "null"
    if isinstance(x, dict):
        return "an object"
    if isinstance(x, list):
        return "a list"
    return f"{x!r}"


def number(x: Any, what: str, stream: str | None = None) -> float:
    """`x` as a float if it is a JSON number within the float32 range, else PayloadError.

    Booleans are not numbers here (JSON `true` is not 1), and no input raises anything else:
    a huge Python int is refused, not overflowed.
    """
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise PayloadError("bad-value", f"{what} must be a number, found {_kind(x)}", stream=stream)
    try:
        v = float(x)
    except OverflowError:
        v = math.inf if x > 0 else -math.inf
    if math.isnan(v) or (math.isinf(v) and isinstance(x, float)):
        raise PayloadError("non-finite", f"{what} is not a finite number", stream=stream)
    return _in_range(v, what, stream)


def _in_range(v: float, what: str, stream: str | None) -> float:
    if not -FLOAT32_MAX <= v <= FLOAT32_MAX:
        raise PayloadError(
            "out-of-range",
            f"{what} is {v:.4g}; numbers must lie within ±{FLOAT32_MAX:.4g} (the float32 range "
            "the model computes in)",
            stream=stream,
        )
    return v


def _numbers(items: list, features: Sequence[str], what: str, stream: str | None) -> tuple:
    _check_count(len(items), features, stream)
    return tuple(number(x, f"{what} item {i + 1}", stream) for i, x in enumerate(items))


def _check_count(n: int, features: Sequence[str], stream: str | None) -> None:
    if n != len(features):
        raise PayloadError(
            "wrong-count",
            f"payload has {n} value{'s' if n != 1 else ''}, the model needs {len(features)} "
            f"({', '.join(features)})",
            stream=stream,
        )


def _ts(x: Any, stream: str | None) -> float | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise PayloadError(
            "bad-ts",
            f"'ts' must be a number (seconds since the epoch), found {_kind(x)}",
            stream=stream,
        )
    try:
        v = float(x)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v):
        raise PayloadError("bad-ts", "'ts' is not a finite number", stream=stream)
    return v


def _short(values: Any) -> list:
    """float32 values as the shortest decimal that reads back to the same float32."""
    arr = np.asarray(values, np.float32)
    return [[float(str(v)) for v in row] for row in arr.reshape(len(arr), -1)]


def encode_forecast(
    *,
    stream: str,
    ts: float | None,
    seq: int,
    forecast: Any,
    targets: Sequence[str],
    horizon: int,
    model: str,
    variant: str,
    latency_ms: float,
    warming_up: bool = False,
) -> bytes:
    """The prediction payload of DESIGN.md, as compact JSON bytes.

    `forecast` is the [H, O] float32 array; each value is written as the shortest decimal
    that reads back to the same float32, so a subscriber that casts to float32 gets the
    runtime's exact numbers.
    """
    doc = {
        "stream": stream,
        "ts": ts,
        "seq": seq,
        "forecast": _short(forecast),
        "targets": list(targets),
        "horizon": horizon,
        "model": model,
        "variant": variant,
        "latency_ms": round(latency_ms, 3),
    }
    doc["warming_up"] = bool(warming_up)  # always there, true or false, as README and DESIGN show
    return json.dumps(doc, separators=(",", ":")).encode()


def encode_error(
    code: str,
    problem: str,
    *,
    stream: str | None = None,
    topic: str | None = None,
    source: str | None = None,
    count: int | None = None,
) -> bytes:
    """An errors-topic payload: what was refused, where it came from, and how often so far."""
    doc: dict[str, Any] = {"code": code, "problem": problem, "time": round(time.time(), 3)}
    if stream is not None:
        doc["stream"] = stream
    if topic is not None:
        doc["topic"] = topic
    if source is not None:
        doc["source"] = source
    if count is not None:
        doc["count"] = count
    return json.dumps(doc, separators=(",", ":")).encode()
