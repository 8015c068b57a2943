"""Test harness for the daemon: configs, an in-process daemon, a daemon process, publishers,
and the reference forecasts a plain `Runtime` gives for the same samples."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_lstm import config
from edge_lstm.daemon import Daemon
from edge_lstm.forecaster import Forecast, Runtime

REPO = Path(__file__).resolve().parent.parent


def daemon_doc(broker, bundle: Path, device: str, **sections) -> dict:
    """A config document for `broker` running `bundle`, with sections merged over the defaults."""
    doc = {
        "device": {"id": device},
        "model": {"bundle": str(bundle)},
        "mqtt": {"host": broker.host, "port": broker.port, "reconnect_min": 0.05, "reconnect_max": 0.5},
        "source": {"mqtt": {"topics": [f"{device}/{{stream}}/raw"]}},
        "pipeline": {"stats_interval": 0},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return doc


@contextmanager
def running(doc: dict, **kw):
    """An in-process daemon for `doc`, connected, stopped (drained) at the end."""
    d = Daemon(config.from_dict(doc, environ={}), **kw)
    d.start(connect_timeout=10)
    if d.link is not None:
        assert d.link.connected.is_set(), "daemon did not connect"
        time.sleep(0.15)  # SUBACKs
    try:
        yield d
    finally:
        d.stop()


def publisher(broker, *, client_id: str = "", persistent: bool = False, protocol=mqtt.MQTTv311) -> mqtt.Client:
    """A paho client connected to `broker` with its network loop running."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                    clean_session=(not persistent) if protocol != mqtt.MQTTv5 else None)
    c.reconnect_delay_set(0.05, 0.5)
    c.max_inflight_messages_set(100)
    c.connect(broker.host, broker.port, 30)
    c.loop_start()
    # Wait for the CONNACK: `close()` right after publishing would otherwise find the client
    # "not connected", disconnect at once and drop the publishes still queued in paho.
    end = time.monotonic() + 10
    while not c.is_connected() and time.monotonic() < end:
        time.sleep(0.005)
    assert c.is_connected(), f"publisher could not connect to {broker.host}:{broker.port}"
    return c


def close(c: mqtt.Client, timeout: float = 5.0) -> None:
    """Disconnect once every QoS 1 publish in flight is acknowledged (or after `timeout`)."""
    end = time.monotonic() + timeout
    while c._out_messages and c.is_connected() and time.monotonic() < end:  # paho has no public count
        time.sleep(0.01)
    c.disconnect()
    c.loop_stop()


def preds(messages) -> list[dict]:
    """Prediction payloads (parsed) from collected (topic, payload, retain) tuples."""
    return [json.loads(p) for t, p, _ in messages if "/pred/" in t]


def take_preds(col, n: int, timeout: float = 20.0, others: list | None = None) -> list[dict]:
    """The next `n` prediction payloads from a collector; other messages go to `others`."""
    got: list[dict] = []
    end = time.monotonic() + timeout
    while len(got) < n:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"expected {n} forecasts, got {len(got)}")
        try:
            msg = col.messages.get(timeout=left)
        except Exception:
            continue
        if "/pred/" in msg[0]:
            got.append(json.loads(msg[1]))
        elif others is not None:
            others.append(msg)
    return got


def gather(col, done, timeout: float = 30.0) -> list:
    """Messages from a collector until `done(messages)` holds (or fail after `timeout`)."""
    got: list = []
    end = time.monotonic() + timeout
    while not done(got):
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"gave up waiting; got {got[-10:]}")
        try:
            got.append(col.messages.get(timeout=min(left, 0.5)))
        except Exception:
            pass
    return got


def reference(bundle: Path, samples, backend: str = "auto") -> dict[tuple[str, int], Forecast]:
    """What a plain Runtime forecasts for `samples` [(stream, value, ts)], keyed by (stream, seq)."""
    rt = Runtime.open(bundle, backend=backend)
    out = {}
    for stream, value, ts in samples:
        f = rt.push(stream, [float(value)], ts)
        if isinstance(f, Forecast):
            out[(stream, f.seq)] = f
    return out


def assert_matches(received: list[dict], ref: dict) -> None:
    """Each received forecast equals the reference's, value for value (as float32)."""
    for doc in received:
        want = ref[(doc["stream"], doc["seq"])]
        assert doc["ts"] == want.ts, (doc, want)
        np.testing.assert_array_equal(np.asarray(doc["forecast"], np.float32), want.values, err_msg=str(doc))


class DaemonProcess:
    """`python -m edge_lstm.commands.run --config FILE` as a child process, stderr to a file."""

    def __init__(self, config_path: Path, *args: str, env: dict | None = None) -> None:
        self.config_path = config_path
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "DaemonProcess":
        n = 1
        while (log := self.config_path.with_suffix(f".{n}.log")).exists():
            n += 1
        self.log = log  # a fresh log per run
        self._fh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_lstm.commands.run", "--config", str(self.config_path), *self.args],
            stdout=subprocess.DEVNULL, stderr=self._fh, env=self.env, cwd=REPO,
        )
        return self

    def wait_log(self, text: str, timeout: float = 20.0) -> str:
        """Wait until the log contains `text`; returns the log."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            log = self.log.read_text(errors="replace")
            if text in log:
                return log
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode} before logging {text!r}:\n{log}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in the daemon log:\n{self.log.read_text(errors='replace')}")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 20.0) -> int:
        rc = self.proc.wait(timeout)
        self._fh.close()
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if getattr(self, "_fh", None) and not self._fh.closed:
            self._fh.close()


def write_toml(path: Path, doc: dict) -> Path:
    """Write a config document as TOML (enough of TOML for our configs)."""
    lines: list[str] = []

    def emit(prefix: str, table: dict) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if prefix:
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {json.dumps(v)}")
        for k, v in table.items():
            if isinstance(v, dict):
                emit(f"{prefix}.{k}" if prefix else k, v)

    emit("", doc)
    path.write_text("\n".join(lines) + "\n")
    return path


def stop_process(p: DaemonProcess) -> None:
    """SIGTERM, then SIGKILL if it does not exit."""
    if p.proc is None or p.proc.poll() is not None:
        return
    p.signal(signal.SIGTERM)
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()
