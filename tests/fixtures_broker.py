"""Session fixtures: a real MQTT broker (mosquitto on a free port), TLS certificates, clients.

`mqtt_broker` is one shared anonymous broker for the session. `broker_factory` starts
private brokers with extra settings (persistence, passwords, TLS) that a test may stop and
restart on the same port. Without a mosquitto binary the shared broker falls back to amqtt
(MQTT 3.1.1 only; tests needing mosquitto skip); `EDGE_LSTM_BROKER=mosquitto` makes a missing
binary a failure instead.
"""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge_lstm.broker import free_port, wait_port
from edge_lstm.errors import EdgeLstmError

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


@dataclass
class Mosquitto:
    """A mosquitto process on a free loopback port; `stop()`/`start()` keep the port and data."""

    extra: str = "allow_anonymous true\n"
    listener_opts: str = ""
    persistence: bool = False
    passwords: dict | None = None  # user -> password: writes a password file, anonymous off
    acl: str | None = None  # ACL file text
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mosq-")))
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    kind: str = "mosquitto"
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        os.chmod(self.dir, 0o777)  # the broker drops to nobody/mosquitto before it writes or reads here
        persist = (
            f"persistence true\npersistence_location {self.dir}/\nautosave_interval 1\n"
            if self.persistence
            else "persistence false\n"
        )
        auth = ""
        if self.passwords:
            pw = self.dir / "passwd"
            pw.touch()
            for user, password in self.passwords.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True, capture_output=True)
            os.chmod(pw, 0o644)
            auth += f"allow_anonymous false\npassword_file {pw}\n"
        if self.acl is not None:
            (self.dir / "acl").write_text(self.acl)
            os.chmod(self.dir / "acl", 0o644)
            auth += f"acl_file {self.dir / 'acl'}\n"
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n{self.listener_opts}{persist}"
            "max_queued_messages 200000\nlog_dest stderr\nlog_type error\nlog_type warning\n"
            "log_type notice\nlog_type information\n" + auth + (self.extra if not auth else "")
        )
        self.log = self.dir / "broker.log"

    def start(self) -> "Mosquitto":
        """Start (or restart) the broker and wait until it accepts connections."""
        if MOSQUITTO is None:
            pytest.skip("mosquitto is not installed")
        kw = {"user": "nobody"} if os.geteuid() == 0 else {}
        self._log_fh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=self._log_fh, **kw
        )
        try:
            wait_port(self.port, self.proc)
        except EdgeLstmError as exc:
            self.stop()
            raise RuntimeError(f"mosquitto did not start ({exc}):\n{self.logs()}") from None
        return self

    def stop(self) -> None:
        """Stop the broker gracefully (it saves its persistence database)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if getattr(self, "_log_fh", None):
            self._log_fh.close()
            self._log_fh = None

    def logs(self) -> str:
        """What the broker wrote so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        """Stop and delete the broker's directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class _Amqtt:
    """In-process amqtt broker (fallback when mosquitto is missing; MQTT 3.1.1 only)."""

    kind = "amqtt"
    host = "127.0.0.1"

    def start(self) -> "_Amqtt":
        from amqtt.broker import Broker

        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.broker = Broker(
                {
                    "listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}},
                    "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
                },
                loop=self.loop,
            )
            self.loop.run_until_complete(self.broker.start())
            self.port = self.broker._servers["default"].instance.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)
        return self

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.broker.shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="session")
def mqtt_broker():
    """One anonymous broker for the session: an object with host, port, kind."""
    want = os.environ.get("EDGE_LSTM_BROKER", "auto")
    if want in ("auto", "mosquitto") and MOSQUITTO:
        broker = Mosquitto().start()
    elif want == "mosquitto":
        pytest.fail("EDGE_LSTM_BROKER=mosquitto but no mosquitto binary (apt-get install mosquitto)")
    else:
        broker = _Amqtt().start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def broker_factory():
    """Start private mosquitto brokers: `broker_factory(extra=..., persistence=True, ...)`."""
    if MOSQUITTO is None:
        if os.environ.get("EDGE_LSTM_BROKER") == "mosquitto":
            pytest.fail("EDGE_LSTM_BROKER=mosquitto but no mosquitto binary")
        pytest.skip("needs mosquitto (amqtt has no MQTT 5 and loses anonymous persistent sessions)")
    made: list[Mosquitto] = []

    def make(**kw) -> Mosquitto:
        broker = Mosquitto(**kw)
        made.append(broker)
        return broker.start()

    yield make
    for broker in made:
        broker.close()


@pytest.fixture(scope="session")
def tls_certs():
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate (openssl).

    In a world-readable temp dir: pytest's own tmp dirs are 0700 and the broker runs as nobody.
    """
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    d = Path(tempfile.mkdtemp(prefix="edge-tls-"))
    os.chmod(d, 0o755)

    def sh(*args: str) -> None:
        subprocess.run(args, cwd=d, check=True, capture_output=True)

    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=edge-test-ca",
       "-keyout", "ca.key", "-out", "ca.crt")
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
       "-out", "server.csr")
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    sh("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
       "-days", "30", "-extfile", "san.ext", "-out", "server.crt")
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=dev1", "-keyout", "client.key",
       "-out", "client.csr")
    sh("openssl", "x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
       "-days", "30", "-out", "client.crt")
    for p in d.iterdir():
        os.chmod(p, 0o644)
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Collector:
    """A paho subscriber that records every message (topic, payload, retain) in order."""

    def __init__(self, host: str, port: int, topics: list[str], *, qos: int = 1, client_id: str = "",
                 persistent: bool = False, protocol: int | None = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: queue.Queue = queue.Queue()
        self.up = threading.Event()
        proto = protocol if protocol is not None else mqtt.MQTTv311
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=(not persistent) if proto != mqtt.MQTTv5 else None,
                                  protocol=proto)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload), m.retain))

        def on_connect(c, u, flags, rc, props):
            if not rc.is_failure:
                for t in topics:
                    c.subscribe(t, qos)
                self.up.set()

        self.client.on_connect = on_connect
        self.client.on_disconnect = lambda *a: self.up.clear()
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.connect_async(host, port, 30)
        self.client.loop_start()
        assert self.up.wait(10), "collector could not connect"
        time.sleep(0.1)  # let the SUBACK arrive

    def take(self, n: int, timeout: float = 10.0) -> list[tuple[str, bytes, bool]]:
        """The next `n` messages; fails with what arrived if they do not come in time."""
        got = []
        end = time.monotonic() + timeout
        while len(got) < n:
            left = end - time.monotonic()
            try:
                got.append(self.messages.get(timeout=max(left, 0.001)))
            except queue.Empty:
                raise AssertionError(f"expected {n} messages, got {len(got)}: {got[-3:]}") from None
        return got

    def drain(self, quiet: float = 0.3) -> list[tuple[str, bytes, bool]]:
        """Everything that arrives until `quiet` seconds pass with nothing new."""
        got = []
        while True:
            try:
                got.append(self.messages.get(timeout=quiet))
            except queue.Empty:
                return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collect(mqtt_broker):
    """`collect(topics, broker=None, **kw) -> Collector`, closed at the end of the test."""
    made: list[Collector] = []

    def make(topics, broker=None, **kw) -> Collector:
        b = broker or mqtt_broker
        c = Collector(b.host, b.port, list(topics) if not isinstance(topics, str) else [topics], **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
