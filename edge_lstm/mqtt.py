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
  the user and what to check; a TLS verification failure (wrong host, unknown CA, expired
  certificate) is told apart from an unreachable broker, with what the certificate says;
- paho's network thread never dies of our code: every callback runs inside a guard that logs
  the traceback and hands the failure to `on_internal_error` (the daemon reports it on the
  errors topic); a message whose handler failed is acknowledged all the same, so one poison
  message cannot come back after every restart. Messages no handler matches (a persistent
  session keeps subscriptions an older config made) are acknowledged too, or they would hold
  the broker's window for good;
- two clients with one client id take the session from each other (the broker closes the
  older connection, MQTT 5 reason 142 where the broker sends it, a bare close otherwise):
  three connections in a row closed within seconds of being accepted are reported as a
  client-id conflict naming `mqtt.client_id`, and the reconnect delay backs off to
  `mqtt.reconnect_max` instead of fighting twice a second forever.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
#: on_internal_error(where, exception, topic): a callback failed (the link logged the traceback).
InternalErrorHook = Callable[[str, BaseException, "str | None"], None]

#: Disconnect reason code "Session taken over" (MQTT 5; brokers that do not send it just close).
SESSION_TAKEN_OVER = 142
#: Consecutive short-lived connections that make a client-id conflict.
TAKEOVER_STREAK = 3
#: A connection closed by the broker sooner than this after it was accepted is "short-lived".
SHORT_SESSION = 10.0


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
        self.internal_errors = 0
        self.unmatched = 0
        self.takeovers = 0
        #: Why the link is unwell (a client-id conflict), or None; read by the health watchdog.
        self.problem: str | None = None
        #: time.monotonic() when the running message handler started; 0.0 when none runs.
        self.handler_since = 0.0
        #: Called (guarded) when a callback raised; the daemon reports it on the errors topic.
        self.on_internal_error: list[InternalErrorHook] = []
        self._status = "online"
        self._connected_at = 0.0
        self._short_streak = 0
        self._backoff = 0.0
        self._net_thread: threading.Thread | None = None
        self._ssl_context: ssl.SSLContext | None = None
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
        c.suppress_exceptions = True  # second net: paho logs what escapes a guard, never dies of it
        c.on_connect = self._guard("on_connect", self._on_connect)
        c.on_subscribe = self._guard("on_subscribe", self._on_subscribe)
        c.on_connect_fail = self._guard("on_connect_fail", self._on_connect_fail)
        c.on_disconnect = self._guard("on_disconnect", self._on_disconnect)
        c.on_message = self._guard("on_message", self._on_unmatched)

    def _set_tls(self) -> None:
        tls = self.cfg.mqtt.tls
        try:
            ctx = ssl.create_default_context(cafile=tls.ca_file or None)
            if tls.cert_file:
                ctx.load_cert_chain(tls.cert_file, tls.key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{self.cfg.source_file}: keys 'mqtt.tls.*': cannot load the TLS files: {exc}"
            ) from None
        self._ssl_context = ctx
        self._client.tls_set_context(ctx)
        if tls.insecure:
            self._client.tls_insecure_set(True)

    def _guard(self, where: str, fn: Callable[..., None]) -> Callable[..., None]:
        """`fn` as a paho callback that cannot raise into paho's network thread."""

        def guarded(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:  # the network thread must outlive any bug of ours
                self._internal_error(where, exc, None)

        return guarded

    def _internal_error(self, where: str, exc: BaseException, topic: str | None) -> None:
        self.internal_errors += 1
        log.error("internal error in %s%s (the daemon carries on):", where,
                  f" for a message on {topic!r}" if topic else "", exc_info=exc)
        for hook in self.on_internal_error:
            try:
                hook(where, exc, topic)
            except Exception:  # reporting must not fail the callback a second time
                log.exception("reporting the internal error failed")

    # ------------------------------------------------------------------ lifecycle

    def subscribe(self, topic: str, qos: int, handler: MessageHandler, *,
                  retained: MessageHandler | None = None) -> None:
        """Register a subscription; made now if connected and again on every reconnect.
        With `retained`, messages the broker sends because they were retained go there instead."""
        sub = Subscription(topic, qos, handler)
        with self._lock:
            self._subs.append(sub)
        manual = self.manual_ack

        def on_message(client, userdata, m) -> None:
            token = m.mid if manual and m.qos else 0
            self.handler_since = time.monotonic()
            try:
                (retained if retained is not None and m.retain else handler)(m.topic, m.payload, token)
            except Exception as exc:  # deliberately acknowledged: a poison message must not return
                self._internal_error(f"the message handler of {topic!r}", exc, m.topic)
                self.ack(token)
            finally:
                self.handler_since = 0.0

        self._client.message_callback_add(topic, on_message)
        if self.connected.is_set():
            with self._lock:  # the SUBACK callback takes the lock: it cannot pass the mid
                self.subscribed.clear()
                self._pending.add(self._client.subscribe(topic, qos)[1])

    def unsubscribe(self, topic: str) -> None:
        """Drop a subscription made with `subscribe`: now, and from every later reconnect."""
        with self._lock:
            self._subs = [s for s in self._subs if s.topic != topic]
        self._client.message_callback_remove(topic)
        if self.connected.is_set():
            self._client.unsubscribe(topic)

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
        self._net_thread = self._client._thread  # paho keeps no public handle on its thread

    def health(self, stall_timeout: float) -> str | None:
        """Why the link cannot carry samples as it should, or None: its network thread ended
        (it is started again), a message handler has been stuck for `stall_timeout` seconds, or
        a client-id conflict. Called by the health watchdog every second."""
        if self._net_thread is not None and not self._net_thread.is_alive() and not self._stopping:
            log.error("the MQTT network thread has ended; starting it again")
            self._client.loop_start()
            self._net_thread = self._client._thread
            return "the MQTT network thread had ended (restarted): samples could not arrive"
        since = self.handler_since
        if since and time.monotonic() - since > stall_timeout:
            return f"the MQTT message handler has been stuck for {time.monotonic() - since:.0f} s: intake stopped"
        if self._backoff and self.connected.is_set() and \
                time.monotonic() - self._connected_at > max(SHORT_SESSION, 2 * self._backoff):
            self._calm()
        return self.problem

    def set_status(self, status: str) -> None:
        """Publish `status` (`online`/`degraded`) retained now, and again after each connect."""
        self._status = status
        if self.status_topic and self.subscribed.is_set():
            self._client.publish(self.status_topic, status.encode(), qos=1, retain=True)

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
        self._connected_at = time.monotonic()
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
            except Exception as exc:  # a hook must not break the connection handling
                self._internal_error("an on-connect hook", exc, None)

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
            self._client.publish(self.status_topic, self._status.encode(), qos=1, retain=True)

    def _on_unmatched(self, client, userdata, m) -> None:
        """A message no subscription handler matches: acknowledge it so it cannot hold the
        broker's window (a persistent session keeps subscriptions an older config made)."""
        self.unmatched += 1
        if self.unmatched == 1 or self.unmatched % 1000 == 0:
            log.warning("%d message(s) on topics this daemon does not handle (latest %r), acknowledged "
                        "and ignored: a subscription left in the persistent session by an earlier "
                        "config? (unsubscribe it, or start once with mqtt.persistent = false)",
                        self.unmatched, m.topic if isinstance(m.topic, str) else "<not UTF-8>")
        if self.manual_ack and m.qos:
            self.ack(m.mid)

    def _on_connect_fail(self, client, userdata) -> None:
        # paho calls this inside its `except OSError:` around the connect: the cause is there
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLCertVerificationError):
            log.error("%s", self._tls_failure(exc))
        elif isinstance(exc, ssl.SSLError):
            log.error("TLS handshake with MQTT broker %s failed (%s): is it a TLS listener, and does it "
                      "accept this client's certificate (mqtt.tls.cert_file/key_file)? retrying with backoff",
                      self.broker, exc)
        else:
            log.warning("cannot reach MQTT broker %s%s; retrying with backoff", self.broker,
                        f" ({exc})" if exc is not None else "")

    def _tls_failure(self, exc: ssl.SSLCertVerificationError) -> str:
        """One line on a certificate the broker presented that failed verification."""
        tls = self.cfg.mqtt.tls
        what = exc.verify_message or exc.reason or str(exc)
        host = self.cfg.mqtt.host
        says = self._certificate_names()
        if "mismatch" in what.lower():
            fix = (f"connect to a name the certificate holds, or have the broker's certificate issued "
                   f"for {host!r} (mqtt.tls.insecure = true skips this check: testing only)")
        else:
            fix = (f"mqtt.tls.ca_file ({tls.ca_file or 'empty: the system store'}) must hold the CA "
                   "that signed the broker's certificate, and the certificate must be valid now")
        return (f"TLS: MQTT broker {self.broker} presented a certificate that failed verification "
                f"({what}){f'; the certificate is for {says}' if says else ''}: {fix}; "
                "retrying with backoff")

    def _certificate_names(self) -> str:
        """The names in the broker's certificate (host check off, chain still verified), or ''."""
        if self._ssl_context is None:
            return ""
        ctx = ssl.create_default_context(cafile=self.cfg.mqtt.tls.ca_file or None)
        ctx.check_hostname = False
        try:
            with socket.create_connection((self.cfg.mqtt.host, self.cfg.broker_port), timeout=3) as raw:
                with ctx.wrap_socket(raw) as tls:
                    cert = tls.getpeercert() or {}
        except (OSError, ValueError):
            return ""
        names = [f"{kind} {value}" for kind, value in cert.get("subjectAltName", ())]
        cn = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
        return ", ".join(names or [f"CN {c}" for c in cn])

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if not was or self._stopping:
            return
        lived = time.monotonic() - self._connected_at
        taken = getattr(reason_code, "value", None) == SESSION_TAKEN_OVER
        if taken or lived < max(SHORT_SESSION, 2 * self._backoff):
            self._short_streak += 1
        else:
            self._short_streak = 0
            if self._backoff:
                self._calm()
        if taken or self._short_streak >= TAKEOVER_STREAK:
            self._taken_over(taken, lived)
        else:
            log.warning("lost MQTT broker %s (%s); reconnecting", self.broker, reason_code)

    def _taken_over(self, certain: bool, lived: float) -> None:
        """Another client with our client id keeps taking the session: say so, and back off."""
        self.takeovers += 1
        m = self.cfg.mqtt
        self._backoff = min(max(self._backoff * 2, m.reconnect_min * 4, 1.0), max(m.reconnect_max, m.reconnect_min))
        self._client.reconnect_delay_set(self._backoff, max(self._backoff, m.reconnect_max))
        why = ("the broker says another client took over the session (reason 142)" if certain else
               f"the broker closed {self._short_streak} connections in a row within {lived:.1f} s or so "
               "of accepting them, which is what it does when another client connects with the same "
               "client id")
        self.problem = (f"client id {self.cfg.client_id!r} is in use by another client: {why}; give each "
                        f"daemon its own mqtt.client_id (or device.id)")
        log.error("MQTT broker %s: %s; reconnecting in %.1f s (backing off up to mqtt.reconnect_max)",
                  self.broker, self.problem, self._backoff)

    def _calm(self) -> None:
        """A connection lived long enough: the conflict is over, back to the configured delays."""
        self._backoff = 0.0
        self.problem = None
        self._client.reconnect_delay_set(self.cfg.mqtt.reconnect_min, self.cfg.mqtt.reconnect_max)
        log.info("MQTT client id %r: no takeover for a while, reconnect delays back to normal", self.cfg.client_id)


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
    except ssl.SSLCertVerificationError as exc:
        raise EdgeLstmError(
            f"TLS: MQTT broker {where} presented a certificate that failed verification "
            f"({exc.verify_message or exc.reason}): connect by a name the certificate holds, and pass "
            "the CA that signed it with --ca"
        ) from None
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
