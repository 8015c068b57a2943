"""A throwaway local MQTT broker for `edge-lstm demo`: mosquitto if installed, else amqtt.

Only for trying things out on one machine: loopback only, anonymous, nothing persisted, and
stopped (with everything it started) when the `with` block ends.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from edge_lstm.errors import EdgeLstmError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on `port` of 127.0.0.1 (or `proc` died)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise EdgeLstmError(f"the broker exited with {proc.returncode} at start: {err}")
            time.sleep(0.01)
    raise EdgeLstmError(f"nothing listens on port {port} after {timeout:g} s")


class LocalBroker:
    """`with LocalBroker() as b:` gives `b.host`, `b.port` and `b.kind` ("mosquitto" or "amqtt")."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = 0
        self.kind = ""
        self.pid: int | None = None
        self._proc: subprocess.Popen | None = None
        self._dir: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker = None

    def __enter__(self) -> "LocalBroker":
        binary = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if os.path.exists(p)), None)
        if binary:
            self._start_mosquitto(binary)
        else:
            self._start_amqtt()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start_mosquitto(self, binary: str) -> None:
        self._dir = tempfile.mkdtemp(prefix="edge-lstm-broker-")
        os.chmod(self._dir, 0o755)
        self.port = free_port()
        conf = Path(self._dir) / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n")
        conf.chmod(0o644)
        user = {"user": "nobody"} if os.geteuid() == 0 else {}
        self._proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      start_new_session=True, **user)
        self.kind, self.pid = "mosquitto", self._proc.pid
        wait_port(self.port, self._proc)

    def _start_amqtt(self) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError:
            raise EdgeLstmError(
                "the demo needs an MQTT broker: install mosquitto (apt-get install mosquitto) "
                "or the pure-Python one (pip install 'edge-lstm[demo]'), or pass --broker HOST"
            ) from None
        self.port = free_port()
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._broker = Broker(
                {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                 "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}},
                loop=self._loop,
            )
            self._loop.run_until_complete(self._broker.start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="edge-lstm-amqtt", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise EdgeLstmError("the embedded amqtt broker did not start within 10 s")
        self.kind = "amqtt"

    def stop(self) -> None:
        """Stop the broker and remove its files; safe to call twice."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None
        if self._loop is not None and self._broker is not None:
            asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop = self._broker = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
