"""Publish synthetic sensor samples for many streams at a fixed per-stream rate (load generator).

    python bench/loadgen.py --port 1883 --topic 'sensors/{stream}/raw' --streams 1000 --rate 5 --seconds 30

Every 1/rate seconds, one sample for each stream (`{"ts": ..., "value": ...}` with strictly
increasing ts per stream). Prints a JSON report: samples sent, samples the broker
acknowledged (QoS 1), wall time, the rate actually offered and how far the generator fell
behind its schedule.

The default engine writes MQTT 3.1.1 PUBLISH packets straight to a socket, a whole round
per `sendall`, and counts the broker's PUBACKs in a reader thread: a load generator must
cost far less CPU than what it measures, and a Python MQTT client spends ~100-400 us per
QoS 1 message on a busy 2-core machine. `--engine paho` uses paho-mqtt instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import struct
import sys
import threading
import time


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


class RawPublisher:
    """A minimal MQTT 3.1.1 publisher: CONNECT, PUBLISH (QoS 0/1), counts PUBACKs, DISCONNECT."""

    def __init__(self, host: str, port: int, client_id: str, qos: int) -> None:
        self.qos = qos
        self.acked = 0
        self.sock = socket.create_connection((host, port), 10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = _string(b"MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + _string(client_id.encode())
        self.sock.sendall(b"\x10" + _varint(len(body)) + body)
        connack = self._read_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused the connection: CONNACK {connack.hex()}")
        self.sock.settimeout(None)
        self._mid = 0
        self._reader = threading.Thread(target=self._read_acks, daemon=True)
        self._reader.start()

    def _read_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            buf += chunk
        return buf

    def _read_acks(self) -> None:
        pending = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            pending += chunk
            whole = len(pending) // 4 * 4  # PUBACK is 4 bytes: 0x40 0x02 id id
            self.acked += whole // 4
            pending = pending[whole:]

    def packet(self, topic: bytes, payload: bytes) -> bytes:
        """One PUBLISH packet."""
        if self.qos:
            self._mid = self._mid % 65535 + 1
            body = _string(topic) + struct.pack("!H", self._mid) + payload
            return b"\x32" + _varint(len(body)) + body
        body = _string(topic) + payload
        return b"\x30" + _varint(len(body)) + body

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self, sent: int, timeout: float = 60.0) -> None:
        """Wait for every PUBACK (QoS 1), then DISCONNECT."""
        end = time.monotonic() + timeout
        while self.qos and self.acked < sent and time.monotonic() < end:
            time.sleep(0.01)
        self.sock.sendall(b"\xe0\x00")
        self.sock.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--topic", default="sensors/{stream}/raw", help="topic template with {stream}")
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=5.0, help="samples per second per stream")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--qos", type=int, choices=(0, 1), default=1)
    ap.add_argument("--prefix", default="s", help="stream id prefix")
    ap.add_argument("--engine", choices=("raw", "paho"), default="raw")
    args = ap.parse_args(argv)

    topics = [args.topic.format(stream=f"{args.prefix}{i}").encode() for i in range(args.streams)]
    client_id = f"loadgen-{os.getpid()}"
    if args.engine == "raw":
        pub = RawPublisher(args.host, args.port, client_id, args.qos)

        def send_round(payloads: list[bytes]) -> None:
            pub.send(b"".join(pub.packet(t, p) for t, p in zip(topics, payloads)))
    else:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        pc = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        pc.max_inflight_messages_set(5000)
        pc.connect(args.host, args.port, 60)
        pc.loop_start()

        def send_round(payloads: list[bytes]) -> None:
            for t, p in zip(topics, payloads):
                pc.publish(t.decode(), p, qos=args.qos)

    rounds = int(round(args.seconds * args.rate))
    period = 1.0 / args.rate
    t0 = time.monotonic()
    base = time.time()
    behind = 0.0
    sent = 0
    for k in range(rounds):
        due = t0 + k * period
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        else:
            behind = max(behind, now - due)
        ts = base + k * period
        value = 300.0 + 100.0 * math.sin(k / 10.0)
        send_round([b'{"ts":%.6f,"value":%.4f}' % (ts, value + i % 7) for i in range(len(topics))])
        sent += len(topics)
    elapsed = time.monotonic() - t0
    behind = max(behind, elapsed - args.seconds)
    if args.engine == "raw":
        pub.close(sent)
        acked = pub.acked if args.qos else None
    else:
        while args.qos and pc._out_messages:  # paho has no public pending count
            time.sleep(0.01)
        pc.disconnect()
        pc.loop_stop()
        acked = sent if args.qos else None
    json.dump({"sent": sent, "acked": acked, "elapsed_s": round(elapsed, 3), "behind_s": round(behind, 3),
               "offered_per_s": round(args.streams * args.rate, 1), "achieved_per_s": round(sent / elapsed, 1)},
              sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
