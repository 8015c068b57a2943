"""Samples from a serial line (pyserial), one sample per text line.

Line formats (`source.serial.format`, fields split by `delimiter`):
`stream,ts,values` (e.g. `boiler,1764072000.5,21.3,40.1`), `ts,values`, `stream,values`,
`values`, or `json` (a JSON sample payload per line). Formats without a stream field use the
configured stream id; an empty ts field means "no timestamp".

The port may vanish (USB unplugged, adapter reset): the reader closes it, logs once, and tries
to reopen it with exponential backoff until it is back, then carries on. Point `port` at a
stable `/dev/serial/by-id/...` link so the device is found again under its new name.
"""

from __future__ import annotations

import logging
import math
import threading

import serial

from edge_lstm.config import SerialSourceConfig
from edge_lstm.intake import Intake
from edge_lstm.payload import PayloadError

log = logging.getLogger("edge_lstm.serial")

_PARITY = {
    "none": serial.PARITY_NONE,
    "even": serial.PARITY_EVEN,
    "odd": serial.PARITY_ODD,
    "mark": serial.PARITY_MARK,
    "space": serial.PARITY_SPACE,
}


def parse_line(line: bytes, cfg: SerialSourceConfig) -> tuple[str | bytes, float | None, bytes]:
    """Split one line (without its newline) into (stream, ts, payload bytes for the decoder)."""
    if cfg.format == "json":
        return cfg.stream, None, line
    fields = line.split(cfg.delimiter.encode())
    names = cfg.format.split(",")[:-1]  # the leading fields before the values
    if len(fields) <= len(names):
        raise PayloadError(
            "wrong-count",
            f"line has {len(fields)} field{'s' if len(fields) != 1 else ''}, the format "
            f"{cfg.format!r} needs {' + '.join(names)} and at least one value",
        )
    stream: str | bytes = cfg.stream
    ts = None
    for name, raw in zip(names, fields):
        if name == "stream":
            stream = raw.strip()
        elif name == "ts":
            ts = _ts(raw.strip())
    payload = b",".join(fields[len(names):])
    return stream, ts, payload


def _ts(raw: bytes) -> float | None:
    if not raw:
        return None
    try:
        ts = float(raw)
    except ValueError:
        shown = raw[:32].decode("utf-8", "replace")
        raise PayloadError(
            "bad-ts", f"ts field is {shown!r}, not a number (seconds since the epoch)"
        ) from None
    if not math.isfinite(ts):
        raise PayloadError("bad-ts", "ts field is not a finite number")
    return ts


class SerialSource:
    """Reads lines from a serial port in a thread; survives the port vanishing and returning."""

    def __init__(self, cfg: SerialSourceConfig, intake: Intake) -> None:
        self.cfg = cfg
        self.intake = intake
        self.opens = 0
        self.losses = 0
        self.settings: dict = {}  # pyserial's settings of the open port (for logs and tests)
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-lstm-serial", daemon=True)

    def start(self) -> None:
        """Start the reader thread (it keeps trying until the port exists)."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading and close the port."""
        self._stop.set()
        self._thread.join(timeout)

    def _open(self) -> serial.Serial:
        c = self.cfg
        return serial.Serial(
            c.port,
            baudrate=c.baudrate,
            bytesize=c.bytesize,
            parity=_PARITY[c.parity],
            stopbits=c.stopbits if c.stopbits != 1.5 else serial.STOPBITS_ONE_POINT_FIVE,
            timeout=0.2,
        )

    def _run(self) -> None:
        delay = self.cfg.reopen_min
        warned = False
        while not self._stop.is_set():
            try:
                port = self._open()
            except (serial.SerialException, OSError, ValueError) as exc:
                if not warned:
                    log.warning("serial port %s unavailable (%s); retrying with backoff", self.cfg.port, exc)
                    warned = True
                self._stop.wait(delay)
                delay = min(delay * 2, self.cfg.reopen_max)
                continue
            self.opens += 1
            self.settings = port.get_settings()
            log.info("serial port %s open (%d baud, %d%s%s)", self.cfg.port, self.cfg.baudrate,
                     self.cfg.bytesize, port.parity, self.cfg.stopbits)
            warned, delay = False, self.cfg.reopen_min
            self.connected.set()
            try:
                self._read(port)
            except (serial.SerialException, OSError) as exc:
                self.losses += 1
                log.warning("serial port %s lost (%s); reopening", self.cfg.port, exc)
            finally:
                self.connected.clear()
                try:
                    port.close()
                except (serial.SerialException, OSError):
                    pass

    def _read(self, port: serial.Serial) -> None:
        buf = bytearray()
        skipping = False
        while not self._stop.is_set():
            chunk = port.read(max(1, port.in_waiting))
            if not chunk:
                continue
            buf += chunk
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    if len(buf) > self.cfg.max_line:
                        self._too_long(len(buf))
                        buf.clear()
                        skipping = True
                    break
                line = bytes(buf[:nl]).rstrip(b"\r")
                del buf[: nl + 1]
                if skipping:  # the tail of a line already refused as too long
                    skipping = False
                    continue
                if len(line) > self.cfg.max_line:
                    self._too_long(len(line))
                    continue
                if line.strip():
                    self._line(line)

    def _too_long(self, n: int) -> None:
        self.intake.refuse_error(
            PayloadError("too-large", f"serial line longer than {self.cfg.max_line} bytes ({n}+)"),
            source=f"serial:{self.cfg.port}",
        )

    def _line(self, line: bytes) -> None:
        try:
            stream, ts, payload = parse_line(line, self.cfg)
        except PayloadError as exc:
            self.intake.refuse_error(exc, source=f"serial:{self.cfg.port}")
            return
        self.intake.offer(stream, payload, source=f"serial:{self.cfg.port}", ts=ts)
