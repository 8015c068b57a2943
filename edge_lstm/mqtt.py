"""The daemon's one broker connection (paho-mqtt 2.x, callback API v2).

One `MqttLink` carries everything: sample subscriptions, forecasts, and the service topics.
It is built for months of unattended running:

- a fixed client id with a persistent session (MQTT 5 `clean_start=False` with a session
  expiry, MQTT 3.1.1 `clean_session=False`), so the broker queues QoS 1 samples while the
  daemon or the network is away and delivers them on reconnect;
- reconnect with exponential backoff (paho's `reconnect_delay_set`), from the first attempt
  on, so the daemon may start before its broker;
- subscriptions re-made on every connect (a broker that lost its state still serves us);
- a retained status topic: `online` on connect, `offline` on clean shutdown and as the last
  will when the connection dies;
- QoS 1 publishes made while disconnected are queued by paho (bounded) and sent on reconnect;
- with `mqtt.ack = "processed"` (the default) a QoS 1 sample is acknowledged to the broker only
  once its forecast is out (or it was refused), so a sample the daemon held when it stopped or
  died is delivered again by the broker: nothing acknowledged is ever unprocessed. The broker
  then holds the backlog: MQTT 5 sends `receive_maximum` as the window (mosquitto applies its
  own `max_inflight_messages`, default 20, to MQTT 3.1.1 clients: raise it there);
- refusals (bad password, not authorised) logged as one clear line that names the broker,
  the user and what to check.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_lstm.config import Config, parse_broker_url
from edge_lstm.errors import ConfigError, EdgeLstmError

log = logging.getLogger("edge_lstm.mqtt")

#: Most QoS 1 messages paho keeps for sending while disconnected; past it publishes are refused.
MAX_QUEUED_OUT = 200_000

#: handler(topic, payload, ack_token): call `MqttLink.ack(token)` once done (0 = nothing to ack).
MessageHandler = Callable[[str, bytes, int], None]


@dataclass
class Subscription:
    """One subscription that is (re)made on every connect."""

    topic: str
    qos: int
    handler: MessageHandler


class MqttLink:
    """A paho client configured from `Config`, with status, resubscription and clear logs."""

    def __init__(self, cfg: Config, *, status_topic: str | None = None) -> None:
        self.cfg = cfg
        self.broker = f"{cfg.mqtt.host}:{cfg.broker_port}"
        self.status_topic = status_topic
        self.connected = threading.Event()
        self.connects = 0
        self.refusals = 0
        self.last_refusal: str | None = None
        self.dropped_out = 0
        self._stopping = False
        #: Called (in paho's thread) after every successful connect, e.g. to re-publish
        #: retained info a broker without persistence has lost.
        self.on_connected: list[Callable[[], None]] = []
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        #: Set once the broker has acknowledged every subscription of the current connection:
        #: only then do samples published by others reach this daemon.
        self.subscribed = threading.Event()
        self._pending: set[int] = set()
        self._v5 = cfg.mqtt.protocol == "5"
        self.manual_ack = cfg.mqtt.ack == "processed"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            clean_session=None if self._v5 else not cfg.mqtt.persistent,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            reconnect_on_failure=True,
            manual_ack=self.manual_ack,
        )
        c = self._client
        c.max_queued_messages_set(MAX_QUEUED_OUT)
        c.max_inflight_messages_set(1000)
        c.reconnect_delay_set(cfg.mqtt.reconnect_min, cfg.mqtt.reconnect_max)
        if cfg.mqtt.username:
            c.username_pw_set(cfg.mqtt.username, cfg.password)
        if cfg.mqtt.tls.enabled:
            self._set_tls()
        if status_topic:
            c.will_set(status_topic, b"offline", qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect

    def _set_tls(self) -> None:
        tls = self.cfg.mqtt.tls
        try:
            self._client.tls_set(
                ca_certs=tls.ca_file or None,
                certfile=tls.cert_file or None,
                keyfile=tls.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{self.cfg.source_file}: keys 'mqtt.tls.*': cannot load the TLS files: {exc}"
            ) from None
        if tls.insecure:
            self._client.tls_insecure_set(True)

    # ------------------------------------------------------------------ lifecycle

    def subscribe(self, topic: str, qos: int, handler: MessageHandler) -> None:
        """Register a subscription; made now if connected and again on every reconnect."""
        sub = Subscription(topic, qos, handler)
        with self._lock:
            self._subs.append(sub)
        manual = self.manual_ack

        def on_message(client, userdata, m) -> None:
            handler(m.topic, m.payload, m.mid if manual and m.qos else 0)

        self._client.message_callback_add(topic, on_message)
        if self.connected.is_set():
            with self._lock:  # the SUBACK callback takes the lock: it cannot pass the mid
                self.subscribed.clear()
                self._pending.add(self._client.subscribe(topic, qos)[1])

    def start(self) -> None:
        """Begin connecting in paho's network thread; returns at once (the broker may be down)."""
        props = None
        kwargs: dict = {}
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            if self.cfg.mqtt.persistent:
                props.SessionExpiryInterval = self.cfg.mqtt.session_expiry
            props.ReceiveMaximum = self.cfg.mqtt.receive_maximum
            kwargs["clean_start"] = not self.cfg.mqtt.persistent
            kwargs["properties"] = props
        self._client.connect_async(
            self.cfg.mqtt.host, self.cfg.broker_port, self.cfg.mqtt.keepalive, **kwargs
        )
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        """Block until the first successful connect, or `timeout` seconds."""
        return self.connected.wait(timeout)

    def wait_subscribed(self, timeout: float) -> bool:
        """Block until the broker has acknowledged every subscription, or `timeout` seconds."""
        return self.subscribed.wait(timeout)

    def stop(self, *, timeout: float = 5.0) -> None:
        """Publish `offline`, flush queued QoS 1 messages (up to `timeout`), disconnect."""
        c = self._client
        self._stopping = True
        if self.connected.is_set():
            if self.status_topic:
                info = c.publish(self.status_topic, b"offline", qos=1, retain=True)
                try:
                    info.wait_for_publish(timeout)
                except (RuntimeError, ValueError):
                    pass
            self.flush(timeout)
        c.disconnect()
        c.loop_stop()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued QoS 1 publish has been acknowledged (or `timeout`)."""
        import time

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._client._out_message_mutex:  # paho has no public "pending" count
                if not self._client._out_messages:
                    return True
            if not self.connected.is_set():
                return False
            time.sleep(0.01)
        return False

    # ------------------------------------------------------------------ publishing

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Publish; QoS 1 is queued while disconnected. False when paho refused it (queue full)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            self.dropped_out += 1
            return False
        return info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN) and (
            qos > 0 or info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
        )

    def ack(self, token: int) -> None:
        """Acknowledge a QoS 1 message handed over with this token (0: nothing to do)."""
        if token:
            self._client.ack(token, 1)

    # ------------------------------------------------------------------ callbacks

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refusals += 1
            self.last_refusal = str(reason_code)
            who = f"user {self.cfg.mqtt.username!r}" if self.cfg.mqtt.username else "anonymous login"
            hint = {
                "Not authorized": "check the user name, the password"
                + (f" in ${self.cfg.mqtt.password_env}" if self.cfg.mqtt.password_env else "")
                + " and the broker's password file/ACL",
                "Bad user name or password": "check the user name and the password"
                + (f" in ${self.cfg.mqtt.password_env}" if self.cfg.mqtt.password_env else ""),
                "Client identifier not valid": "set a different mqtt.client_id",
            }.get(str(reason_code), "see the broker's log")
            log.error(
                "MQTT broker %s refused the connection (%s, %s): %s; retrying with backoff",
                self.broker, reason_code, who, hint,
            )
            return
        self.connects += 1
        session = bool(getattr(flags, "session_present", False))
        log.info(
            "connected to MQTT broker %s as %r (MQTT %s, session %s)",
            self.broker, self.cfg.client_id, self.cfg.mqtt.protocol,
            "resumed" if session else "new",
        )
        with self._lock:
            self.subscribed.clear()
            self._pending = {client.subscribe(sub.topic, sub.qos)[1] for sub in self._subs}
            ready = not self._pending
        if ready:
            self._ready()
        self.connected.set()
        for hook in self.on_connected:
            try:
                hook()
            except Exception:  # a hook must not break the connection handling
                log.exception("on-connect hook failed")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._lock:
            was_pending = mid in self._pending
            self._pending.discard(mid)
            ready = was_pending and not self._pending
        if ready:
            self._ready()

    def _ready(self) -> None:
        """Every subscription is acknowledged: samples can arrive, so say "online" (retained)."""
        log.info("MQTT subscriptions acknowledged by %s: receiving samples", self.broker)
        self.subscribed.set()
        if self.status_topic:
            self._client.publish(self.status_topic, b"online", qos=1, retain=True)

    def _on_connect_fail(self, client, userdata) -> None:
        log.warning("cannot reach MQTT broker %s; retrying with backoff", self.broker)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was and not self._stopping:
            log.warning("lost MQTT broker %s (%s); reconnecting", self.broker, reason_code)


def connect_client(
    url: str,
    *,
    client_id: str = "",
    protocol: str = "3.1.1",
    ca_file: str | None = None,
    password: str | None = None,
    timeout: float = 10.0,
) -> mqtt.Client:
    """A connected paho client (network loop running) for command-line tools.

    `url` is `mqtt://[user[:pass]@]host[:port]` or `mqtts://...`; `password` (e.g. from an
    environment variable) is used when the URL has none. Raises EdgeLstmError with the
    broker's reason when the connection is refused or does not come up in `timeout`.
    """
    b = parse_broker_url(url)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311)
    if b.username:
        c.username_pw_set(b.username, b.password if b.password is not None else password)
    if b.tls:
        c.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
    result: dict = {}
    done = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        result["rc"] = reason_code
        done.set()

    c.on_connect = on_connect
    where = f"{b.host}:{b.effective_port}"
    try:
        c.connect(b.host, b.effective_port, 30)
    except (OSError, ssl.SSLError) as exc:
        raise EdgeLstmError(f"cannot reach MQTT broker {where}: {exc}") from None
    c.loop_start()
    if not done.wait(timeout):
        c.loop_stop()
        raise EdgeLstmError(f"MQTT broker {where} did not answer within {timeout:g} s")
    rc = result["rc"]
    if rc.is_failure:
        c.loop_stop()
        who = f"user {b.username!r}" if b.username else "anonymous login"
        raise EdgeLstmError(f"MQTT broker {where} refused the connection ({rc}, {who})")
    return c
