"""The serial source over a real pseudo-terminal: line formats, settings, bad lines, and the
port vanishing and coming back (a USB adapter unplugged and plugged in again)."""

from __future__ import annotations

import json
import os
import threading
import time
import tty
from pathlib import Path

import numpy as np
import pytest

import datasets
from daemon_harness import reference
from edge_lstm import config
from edge_lstm.config import SerialSourceConfig
from edge_lstm.daemon import Daemon
from edge_lstm.payload import PayloadError
from edge_lstm.sources.serial import parse_line


SERIES = datasets.airline()


class FakeSensor:
    """The device end of a pty pair, reachable through a stable symlink like /dev/serial/by-id."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.plug()

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        if self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(os.ttyname(self.slave))

    def unplug(self) -> None:
        self.link.unlink()
        os.close(self.master)
        os.close(self.slave)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)


class Lines:
    """A stdout stand-in that keeps the forecast lines (the StdoutSink writes here)."""

    def __init__(self) -> None:
        self.lines: list[dict] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            self.lines += [json.loads(x) for x in text.splitlines() if x.strip()]

    def flush(self) -> None:
        pass

    def wait(self, n: int, timeout: float = 10.0) -> list[dict]:
        end = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < end:
            time.sleep(0.01)
        assert len(self.lines) >= n, f"expected {n} forecasts, got {len(self.lines)}"
        return list(self.lines)


def wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.fixture
def serial_daemon(tmp_path, tiny_bundle):
    """A daemon reading a fake sensor through a pty, forecasts to a `Lines` object (no broker)."""
    link = tmp_path / "ttyUSB-edge"
    sensor = FakeSensor(link)
    out = Lines()
    doc = {"device": {"id": "ser1"}, "model": {"bundle": str(tiny_bundle)},
           "source": {"kind": "serial", "serial": {"port": str(link), "baudrate": 9600, "parity": "even",
                                                   "reopen_min": 0.05, "reopen_max": 0.2}},
           "sink": {"kind": "stdout"}, "pipeline": {"stats_interval": 0}}
    d = Daemon(config.from_dict(doc, environ={}), stdout=out)
    d.start()
    wait_for(lambda: d.source.connected.is_set())
    yield d, sensor, out
    d.stop()
    try:
        sensor.unplug()
    except OSError:
        pass


def test_forecasts_over_a_pty_equal_the_runtimes(serial_daemon, tiny_bundle):
    """Lines `stream,ts,value` written by the sensor become forecasts equal to a Runtime's;
    the port was opened with the configured baud rate and parity."""
    d, sensor, out = serial_daemon
    assert d.source.settings["baudrate"] == 9600 and d.source.settings["parity"] == "E"
    samples = [(s, float(SERIES[i]) + k, float(i)) for i in range(20) for k, s in enumerate(("a", "b"))]
    sensor.write(b"".join(b"%s,%r,%r\r\n" % (s.encode(), ts, v) for s, v, ts in samples))
    got = out.wait(40)
    ref = reference(tiny_bundle, samples)
    for g in got:
        np.testing.assert_array_equal(np.float32(g["forecast"]), ref[(g["stream"], g["seq"])].values)


def test_port_vanishing_and_returning(serial_daemon, tiny_bundle):
    """Unplugged mid-stream, the port is reopened with backoff once it is back, and the
    streams carry on where they were (state kept: the forecasts equal an unbroken run)."""
    d, sensor, out = serial_daemon
    samples = [("a", float(SERIES[i]), float(i)) for i in range(30)]
    sensor.write(b"".join(b"a,%r,%r\n" % (ts, v) for _, v, ts in samples[:15]))
    out.wait(15)
    sensor.unplug()
    wait_for(lambda: not d.source.connected.is_set())
    assert d.source.losses == 1
    time.sleep(0.5)  # several failed reopen attempts meanwhile
    sensor.plug()
    wait_for(lambda: d.source.connected.is_set() and d.source.opens == 2)
    sensor.write(b"".join(b"a,%r,%r\n" % (ts, v) for _, v, ts in samples[15:]))
    got = out.wait(30)
    assert [g["seq"] for g in got] == list(range(1, 31))
    ref = reference(tiny_bundle, samples)
    for g in got:
        np.testing.assert_array_equal(np.float32(g["forecast"]), ref[("a", g["seq"])].values)


@pytest.mark.parametrize(
    "line, code",
    [
        (b"a,5,\xff\xfe", "not-utf8"),
        (b"a\x01b,5,100", "bad-stream-id"),
        (b"a/b,5,100", "bad-stream-id"),
        (b"a,yesterday,100", "bad-ts"),
        (b"a,5,nan", "non-finite"),
        (b"a,5,1,2", "wrong-count"),
        (b"a,5", "wrong-count"),
        (b"a,5," + b"1" * 5000, "too-large"),
    ],
    ids=["non-utf8", "control-char-id", "slash-id", "ts-text", "nan", "too-many", "too-few", "too-long"],
)
def test_bad_lines_are_refused_and_touch_no_state(serial_daemon, line, code):
    """Each bad line is refused and counted with its code; no stream's state changes and the
    next good line is still read."""
    d, sensor, out = serial_daemon
    sensor.write(b"".join(b"%s,%d,%d\n" % (s, i, 100 + i) for i in range(8) for s in (b"a", b"good")))
    out.wait(16)
    assert d.wait_idle()
    before = {s: d.runtime.state_of(s) for s in d.runtime.streams()}
    sensor.write(line + b"\n")
    wait_for(lambda: d.refused_by_code.get(code) == 1)
    sensor.write(b"good,9,109\n")
    assert out.wait(17)[-1]["stream"] == "good"
    assert d.wait_idle()
    for s, rows in before.items():
        if s == "good":
            continue
        np.testing.assert_array_equal(d.runtime.state_of(s), rows)
    assert set(d.runtime.streams()) == set(before)


def test_parse_line_formats():
    """Each configured line format splits into stream, ts and the values payload."""
    c = SerialSourceConfig
    assert parse_line(b"boiler,17.5,21.3,40.1", c()) == (b"boiler", 17.5, b"21.3,40.1")
    assert parse_line(b"17.5;21.3", c(format="ts,values", delimiter=";", stream="s")) == ("s", 17.5, b"21.3")
    assert parse_line(b"boiler,21.3", c(format="stream,values")) == (b"boiler", None, b"21.3")
    assert parse_line(b"21.3,40.1", c(format="values")) == ("serial", None, b"21.3,40.1")
    assert parse_line(b'{"ts": 1, "value": 2}', c(format="json", stream="j")) == ("j", None, b'{"ts": 1, "value": 2}')
    assert parse_line(b"boiler,,21.3", c()) == (b"boiler", None, b"21.3")  # empty ts: none
    with pytest.raises(PayloadError, match="needs stream \\+ ts and at least one value"):
        parse_line(b"boiler,17", c())
