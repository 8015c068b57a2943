"""Sample payload decoding, prediction encoding and stream-id rules (edge_lstm.payload)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_lstm.errors import EdgeLstmError
from edge_lstm.payload import PayloadError, Reading, decode, encode_error, encode_forecast, validate_stream_id

ONE = ["passengers"]
TWO = ["temp", "rh"]


@pytest.mark.parametrize(
    "payload, features, expected",
    [
        (b"21.3", ONE, Reading((21.3,), None)),
        (b" 21.3 \n", ONE, Reading((21.3,), None)),
        (b"21.3,40.1", TWO, Reading((21.3, 40.1), None)),
        (b"21.3, 40.1", TWO, Reading((21.3, 40.1), None)),
        (b'{"ts": 1764072000.5, "value": 431}', ONE, Reading((431.0,), 1764072000.5)),
        (b'{"value": 431}', ONE, Reading((431.0,), None)),
        (b'{"ts": 7, "values": [21.3, 40.1]}', TWO, Reading((21.3, 40.1), 7.0)),
        (b'{"passengers": 431}', ONE, Reading((431.0,), None)),
        (b'{"rh": 40.1, "ts": 3, "temp": 21.3}', TWO, Reading((21.3, 40.1), 3.0)),
        (b"[21.3, 40.1]", TWO, Reading((21.3, 40.1), None)),
        (b'{"ts": null, "value": -1e-3}', ONE, Reading((-0.001,), None)),
        (b'\xef\xbb\xbf{"value": 431}', ONE, Reading((431.0,), None)),  # a UTF-8 byte-order mark
        (b"-0", ONE, Reading((0.0,), None)),
        (b'{"value": 3.4e38}', ONE, Reading((3.4e38,), None)),  # the float32 range's edge
    ],
)
def test_accepted_forms(payload, features, expected):
    """Every documented form decodes to values in feature order and the sender's ts."""
    assert decode(payload, features) == expected


@pytest.mark.parametrize(
    "payload, features, code, words",
    [
        (b"\xff\xfe21.3", ONE, "not-utf8", "not UTF-8"),
        (b"21.\xe93", ONE, "not-utf8", "offset 3"),
        (b'{"value": 1', ONE, "not-json", "not valid JSON"),
        (b"[1, 2", TWO, "not-json", "not valid JSON"),
        (b"nan", ONE, "non-finite", "finite"),
        (b"21.3,inf", TWO, "non-finite", "value 2"),
        (b'{"value": NaN}', ONE, "non-finite", "NaN"),
        (b'{"values": [1, Infinity]}', TWO, "non-finite", "Infinity"),
        (b'{"value": 1e999}', ONE, "out-of-range", "the number 1e999"),
        (b'{"value": 1' + b"0" * 400 + b"}", ONE, "out-of-range", "(401 characters)"),
        (b'{"values": [1, -1' + b"0" * 400 + b"]}", TWO, "out-of-range", "float32 range"),
        (b'{"ts": 1' + b"0" * 400 + b', "value": 1}', ONE, "out-of-range", "numbers must lie within"),
        (b'{"value": 3.5e38}', ONE, "out-of-range", "3.5e38"),
        (b"1e39", ONE, "out-of-range", "value 1 is 1e+39"),
        (b"1" + b"0" * 400, ONE, "out-of-range", "value 1 is inf"),
        (b"-Infinity", ONE, "non-finite", "'-Infinity'"),
        (b"1_000", ONE, "bad-value", "'1_000', not a number"),
        ("\u0661\u0662".encode(), ONE, "bad-value", "not a number"),
        (b'{"value": 1, "value": 2}', ONE, "duplicate-key", "repeats the key(s) ['value']"),
        (b"[" * 5000 + b"]" * 5000, ONE, "too-large", "10000 bytes"),
        (b'{"value": "NaN"}', ONE, "bad-value", "the string 'NaN'"),
        (b'{"value": null}', ONE, "bad-value", "found null"),
        (b'{"value": {}}', ONE, "bad-value", "found an object"),
        (b'{"values": [[1], 2]}', TWO, "bad-value", "item 1 must be a number, found a list"),
        (b'{"ts": 1e400, "value": 1}', ONE, "out-of-range", "1e400"),
        (b"", ONE, "empty", "empty"),
        (b"\xef\xbb\xbf", ONE, "empty", "empty"),
        (b"1,2,3", TWO, "wrong-count", "3 values, the model needs 2"),
        (b'{"values": [1]}', TWO, "wrong-count", "1 value, the model needs 2"),
        (b'{"temp": 1}', TWO, "wrong-count", "lacks the features ['rh']"),
        (b'{"ts": "2024-01-01T00:00:00Z", "value": 1}', ONE, "bad-ts", "the string '2024-01-01T00:00:00Z'"),
        (b'{"ts": true, "value": 1}', ONE, "bad-ts", "boolean"),
        (b'{"value": "21.3"}', ONE, "bad-value", "the string '21.3'"),
        (b'{"value": true}', ONE, "bad-value", "boolean"),
        (b'{"values": 3}', ONE, "bad-shape", "must be a list"),
        (b'{"value": [1, 2]}', TWO, "bad-shape", "use 'values'"),
        (b'{"value": 1, "values": [1]}', ONE, "bad-shape", "both"),
        (b'{"value": 1, "unit": "C"}', ONE, "unknown-key", "['unit']"),
        (b'{"pasengers": 1}', ONE, "unknown-key", "['pasengers']"),
        (b"21.3;40.1", TWO, "bad-value", "'21.3;40.1'"),
        (b"hello", ONE, "bad-value", "not a number"),
        (b"   ", ONE, "empty", "empty"),
        (b"1" * 5000, ONE, "too-large", "5000 bytes, the limit is 4096"),
    ],
)
def test_refused_forms(payload, features, code, words):
    """Each kind of bad payload is refused with its own code and a message that says what is wrong."""
    with pytest.raises(PayloadError) as info:
        decode(payload, features, stream="s1")
    assert info.value.code == code
    assert words in str(info.value)
    assert str(info.value).startswith("stream 's1': ")
    assert isinstance(info.value, EdgeLstmError)


@pytest.mark.parametrize("payload", [b'{"ts": 1, "tmep": 1, "rh": 2}', b'{"ts": 1, "value": 1, "temp": 1}'])
def test_unknown_key_error_names_every_accepted_form(payload):
    """The unknown-key message lists the forms a sample may take, feature-name keys included,
    and each form it names is accepted."""
    with pytest.raises(PayloadError) as info:
        decode(payload, TWO)
    msg = str(info.value)
    assert info.value.code == "unknown-key" and "{\"value\": x}" in msg and "{\"values\": [...]}" in msg
    assert "the feature names ['temp', 'rh'] as keys" in msg and "optional \"ts\"" in msg
    assert decode(b'{"ts": 1, "temp": 1, "rh": 2}', TWO).values == (1.0, 2.0)
    assert decode(b'{"ts": 1, "values": [1, 2]}', TWO).values == (1.0, 2.0)
    assert decode(b'{"value": 1}', ONE).values == (1.0,)


def test_size_limit_is_configurable():
    """The limit applies before decoding, at the configured size."""
    assert decode(b"0" * 99 + b"7", ONE, max_bytes=100).values == (7.0,)
    with pytest.raises(PayloadError, match="101 bytes, the limit is 100"):
        decode(b"1" * 101, ONE, max_bytes=100)


def test_unknown_keys_allowed_when_not_strict():
    """With strict_keys off, extra metadata keys are ignored (the features must still be there)."""
    assert decode(b'{"value": 2, "unit": "C"}', ONE, strict_keys=False).values == (2.0,)
    assert decode(b'{"temp": 1, "rh": 2, "unit": "C"}', TWO, strict_keys=False).values == (1.0, 2.0)
    with pytest.raises(PayloadError, match="unexpected keys"):
        decode(b'{"temp": 1, "unit": "C"}', TWO, strict_keys=False)


@pytest.mark.parametrize("stream", ["s1", "boiler-3", "plant_7.temp", "Ünïcode", "x" * 64])
def test_good_stream_ids(stream):
    """Ordinary ids pass unchanged."""
    assert validate_stream_id(stream) == stream


@pytest.mark.parametrize(
    "stream, words",
    [
        ("", "empty"),
        ("x" * 65, "65 characters long, the limit is 64"),
        ("a/b", "'/'"),
        ("a+", "'+'"),
        ("#", "'#'"),
        ("a\x00b", "U+0000"),
        ("a\nb", "U+000A"),
        ("a\x7fb", "U+007F"),
        ("a\u200bb", "U+200B"),
    ],
)
def test_bad_stream_ids(stream, words):
    """Ids that would break a topic or a log line are refused with the reason."""
    with pytest.raises(PayloadError) as info:
        validate_stream_id(stream)
    assert info.value.code == "bad-stream-id"
    assert words in str(info.value)


def test_forecast_payload_round_trips_float32():
    """The prediction payload has DESIGN.md's keys, and its numbers read back to the same float32."""
    rng = np.random.default_rng(0)
    fc = rng.normal(size=(3, 2)).astype(np.float32) * 1000
    raw = encode_forecast(stream="s1", ts=1764072000.0, seq=812, forecast=fc, targets=["a", "b"], horizon=3,
                          model="airline-lstm", variant="fp32", latency_ms=0.2149)
    doc = json.loads(raw)
    assert list(doc) == ["stream", "ts", "seq", "forecast", "targets", "horizon", "model", "variant", "latency_ms",
                         "warming_up"]
    assert doc["warming_up"] is False  # always present (README, DESIGN), not only when true
    assert doc["seq"] == 812 and doc["ts"] == 1764072000.0 and doc["latency_ms"] == 0.215
    np.testing.assert_array_equal(np.asarray(doc["forecast"], np.float32), fc)
    assert len(raw) < 250  # shortest decimals, not 17-digit doubles
    warm = json.loads(encode_forecast(stream="s", ts=None, seq=1, forecast=fc[:1, :1], targets=["a"], horizon=1,
                                      model="m", variant="v", latency_ms=0, warming_up=True))
    assert warm["warming_up"] is True and warm["ts"] is None


def test_error_payload():
    """Error payloads carry the code, the problem and where the sample came from."""
    doc = json.loads(encode_error("not-json", "bad", stream="s1", topic="sensors/s1/raw", count=3))
    assert doc["code"] == "not-json" and doc["topic"] == "sensors/s1/raw" and doc["count"] == 3
    assert "time" in doc and "source" not in doc
