"""The daemon's configuration: one TOML file, checked completely before anything starts.

The schema is a tree of dataclasses; each field carries its help text and, where it matters,
its allowed choices or range in the field metadata, so that `schema()` can list every key
(the README's config reference is checked against it). Every problem names the file, the
dotted key, what was expected and what was found; a check reports all of them at once (one
`ConfigError`, a line each), so a config is fixed in one round, not one key per run.

Secrets never sit in the file: `mqtt.password_env` names an environment variable. The
command line can override the bundle (`--bundle DIR`) and the broker
(`--broker mqtt://[user[:pass]@]host[:port]`, `mqtts://` for TLS), so one file serves many
machines. An override never weakens the file's security silently: `mqtt://` against a config
that enables TLS is refused unless `allow_plaintext` (`--allow-plaintext`) says it is meant,
and a bare `host[:port]` keeps the file's TLS setting.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin
from urllib.parse import unquote, urlsplit

from edge_lstm.errors import ConfigError


def _f(default: Any, help: str, **meta: Any) -> Any:
    """A schema field: its default, its help text, and optional `choices`/`min`/`max`."""
    meta["help"] = help
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _section(cls: type, help: str) -> Any:
    return field(default_factory=cls, metadata={"help": help})


@dataclass
class DeviceConfig:
    id: str = _f("", "Device id used in topics (`edge/<device>/...`); empty = the host name.")


@dataclass
class ModelConfig:
    bundle: str = _f("", "Bundle directory to load at start (relative paths are taken from the config file's directory).")
    bundle_dir: str = _f("", "Directory from which the `load` command may pick bundles by name; empty = the bundle's parent directory.")
    backend: str = _f("auto", "Inference engine.", choices=("auto", "onnx", "litert", "numpy"))
    precision: str = _f("", "Variant precision to prefer (e.g. `fp32`, `int8-dynamic`); empty = the best available.")
    mode: str = _f("exact", "`exact` reproduces the window-trained model; `continuous` carries state forever.", choices=("exact", "continuous"))
    horizon: int = _f(1, "Steps ahead to forecast (autoregressive roll-out when > 1).", min=1, max=1000)
    max_gap: float = _f(0.0, "Seconds of silence after which a stream's next sample resets it; 0 = never.", min=0)
    gap_policy: str = _f("reset", "What a gap does to the stream.", choices=("reset", "carry"))
    idle_timeout: float = _f(0.0, "Seconds after which an idle stream is dropped (published as an event); 0 = never.", min=0)
    threads: int = _f(1, "Engine intra-op threads.", min=1, max=64)


@dataclass
class TlsConfig:
    enabled: bool = _f(False, "Connect with TLS (`mqtts://` on the command line turns this on).")
    ca_file: str = _f("", "CA certificate file that signed the broker's certificate; empty = the system store.")
    cert_file: str = _f("", "Client certificate file, for brokers that require one (mutual TLS).")
    key_file: str = _f("", "Client private key file (with `cert_file`).")
    insecure: bool = _f(False, "Skip the broker host-name check (testing only).")


@dataclass
class MqttConfig:
    host: str = _f("localhost", "Broker host name or address.")
    port: int = _f(0, "Broker port; 0 = 1883, or 8883 with TLS.", min=0, max=65535)
    protocol: str = _f("5", "MQTT protocol version.", choices=("5", "3.1.1"))
    client_id: str = _f("", "Fixed client id (a persistent session needs one); empty = `edge-lstm-<device>`.")
    username: str = _f("", "User name for password authentication.")
    password_env: str = _f("", "Name of the environment variable that holds the password.")
    keepalive: int = _f(30, "Keep-alive interval in seconds.", min=5, max=65535)
    persistent: bool = _f(True, "Keep the session across disconnects (clean_start/clean_session off), so the broker queues QoS 1 samples during an outage.")
    session_expiry: int = _f(3600, "MQTT 5 session expiry in seconds (how long the broker keeps queued samples for this daemon).", min=0)
    ack: str = _f("processed", "When a QoS 1 sample is acknowledged to the broker: once its forecast is out (`processed`: a sample held by a daemon that stops or dies is delivered again) or on arrival (`received`).", choices=("processed", "received"))
    receive_maximum: int = _f(1000, "MQTT 5: most unacknowledged QoS 1 samples the broker may send ahead (the rest wait on the broker).", min=1, max=65535)
    reconnect_min: float = _f(0.5, "First reconnect delay in seconds (doubles on each failure).", min=0.05)
    reconnect_max: float = _f(30.0, "Longest reconnect delay in seconds.", min=0.1)
    tls: TlsConfig = _section(TlsConfig, "TLS settings.")


@dataclass
class MqttSourceConfig:
    topics: list[str] = _f(["sensors/{stream}/raw"], "Topic patterns to subscribe; `{stream}` marks the level that names the stream (subscribed as `+`).")
    qos: int = _f(1, "Subscription QoS (1 = the broker queues samples while the daemon is away).", choices=(0, 1))


@dataclass
class SerialSourceConfig:
    port: str = _f("/dev/ttyUSB0", "Serial device path (a `/dev/serial/by-id/...` link survives re-enumeration).")
    baudrate: int = _f(115200, "Line speed.", min=50, max=4000000)
    bytesize: int = _f(8, "Data bits.", choices=(5, 6, 7, 8))
    parity: str = _f("none", "Parity.", choices=("none", "even", "odd", "mark", "space"))
    stopbits: float = _f(1, "Stop bits.", choices=(1, 1.5, 2))
    format: str = _f("stream,ts,values", "Line layout: `stream,ts,values`, `ts,values`, `stream,values`, `values` (delimiter-separated) or `json` (a JSON payload per line).", choices=("stream,ts,values", "ts,values", "stream,values", "values", "json"))
    delimiter: str = _f(",", "Field delimiter of the line formats.")
    stream: str = _f("serial", "Stream id for formats without a stream field.")
    max_line: int = _f(4096, "Longest accepted line in bytes.", min=16)
    reopen_min: float = _f(0.2, "First delay before reopening a vanished port (doubles on each failure).", min=0.01)
    reopen_max: float = _f(5.0, "Longest reopen delay in seconds.", min=0.05)


@dataclass
class ReplaySourceConfig:
    file: str = _f("", "CSV file to replay, or `-` for standard input.")
    stream: str = _f("replay", "Stream id of the replayed samples.")
    rate: float = _f(10.0, "Samples per second; 0 = as fast as the pipeline takes them.", min=0)
    columns: list[str] = _f([], "CSV columns holding the features, in model order; empty = the model's feature names, else every numeric column.")
    loop: bool = _f(False, "Start again at the end of the file.")


@dataclass
class SourceConfig:
    kind: str = _f("mqtt", "Where samples come from.", choices=("mqtt", "serial", "replay"))
    mqtt: MqttSourceConfig = _section(MqttSourceConfig, "MQTT source settings.")
    serial: SerialSourceConfig = _section(SerialSourceConfig, "Serial source settings.")
    replay: ReplaySourceConfig = _section(ReplaySourceConfig, "Replay source settings.")


@dataclass
class MqttSinkConfig:
    topic: str = _f("edge/{device}/pred/{stream}", "Prediction topic template (`{device}`, `{stream}`).")
    qos: int = _f(1, "Prediction QoS.", choices=(0, 1))
    retain: bool = _f(False, "Retain each stream's last prediction on the broker.")


@dataclass
class SinkConfig:
    kind: str = _f("mqtt", "Where forecasts go.", choices=("mqtt", "stdout"))
    mqtt: MqttSinkConfig = _section(MqttSinkConfig, "MQTT sink settings.")


@dataclass
class TopicsConfig:
    status: str = _f("edge/{device}/status", "Retained `online`/`degraded`/`offline` (`offline` is also the last will).")
    health: str = _f("edge/{device}/health", "Retained health document (status, reasons, since), as JSON.")
    errors: str = _f("edge/{device}/errors", "Refused samples and commands, as JSON.")
    stats: str = _f("edge/{device}/stats", "Periodic counters and latency, as JSON.")
    events: str = _f("edge/{device}/events", "Stream expiry/reset, model loads, snapshots, as JSON.")
    model: str = _f("edge/{device}/model", "Retained model info (name, variant, hash, features, window).")
    cmd: str = _f("edge/{device}/cmd", "Command topic (reset, prime, load, snapshot).")


@dataclass
class PipelineConfig:
    queue_size: int = _f(10000, "Samples the queue between network and inference holds.", min=1)
    queue_policy: str = _f("drop-oldest", "What a full queue does: drop its oldest sample, drop the new one, or block the source (back-pressure to the broker).", choices=("drop-oldest", "drop-newest", "block"))
    max_batch: int = _f(2048, "Most samples stepped in one engine call round.", min=1)
    max_payload: int = _f(4096, "Largest accepted sample payload in bytes.", min=16)
    max_stream_id: int = _f(64, "Longest accepted stream id in characters.", min=1, max=1024)
    strict_keys: bool = _f(True, "Refuse JSON samples with keys that are neither `ts`/`value`/`values` nor feature names.")
    max_future_skew: float = _f(300.0, "Refuse a sample whose `ts` is more than this many seconds ahead of the device's clock (accepted, it would silence its stream until the clock caught up); 0 = no check.", min=0)
    stall_timeout: float = _f(30.0, "Seconds without progress (samples waiting but no batch done, or a message handler stuck) after which the status goes `degraded`.", min=1)
    stats_interval: float = _f(10.0, "Seconds between stats messages; 0 = none.", min=0)
    error_rate: float = _f(20.0, "Most error messages published per second (the rest are counted).", min=0)


@dataclass
class CommandsConfig:
    enabled: bool = _f(True, "Listen on the command topic.")
    allow: list[str] = _f(["reset", "prime", "load", "snapshot"], "Commands accepted.", choices=("reset", "prime", "load", "snapshot"))
    rate: float = _f(50.0, "Most commands accepted per second (bursts up to the same number); the rest are refused as `rate-limited`, so a flood cannot starve inference.", min=0.1)


@dataclass
class SnapshotConfig:
    path: str = _f("", "Snapshot file (`.npz`); empty = no snapshots.")
    interval: float = _f(60.0, "Seconds between periodic snapshots; 0 = only at shutdown.", min=0)


@dataclass
class LogConfig:
    level: str = _f("info", "Log level.", choices=("debug", "info", "warning", "error"))


# -- fleet features (edge_lstm.homeassistant, edge_lstm.rollout) ------------------------------


@dataclass
class HomeAssistantConfig:
    enabled: bool = _f(False, "Publish Home Assistant MQTT discovery configs (retained) so that each stream's forecast appears in HA as a sensor of this device.")
    prefix: str = _f("homeassistant", "HA's discovery prefix; HA's own status (birth) topic is `<prefix>/status`, and `online` there makes the daemon publish its configs again.")
    node_id: str = _f("", "Node id in the discovery topics and the HA device identifier; empty = `edge-lstm-<device>` (characters outside `[a-zA-Z0-9_-]` become `_`).")
    name: str = _f("", "Device name shown in HA; empty = `edge-lstm <device>`.")
    expire_after: int = _f(0, "Seconds without a forecast after which HA shows a forecast sensor unavailable; 0 = never (set it to a few sample intervals).", min=0)
    state_class: str = _f("measurement", "HA state class of the forecast sensors (`measurement` keeps long-term statistics).", choices=("measurement", "none"))
    units: dict[str, str] = _f({}, "Unit per target (`passengers = \"k\"`); overrides the bundle manifest's `units`.")
    device_classes: dict[str, str] = _f({}, "HA sensor device class per target (`temp = \"temperature\"`).")
    bridge_state_topic: str = _f("", "When HA reads a central broker through a mosquitto bridge: the bridge's notification topic (`edge/{device}/bridge/state`, `1`/`0`), a second availability condition; empty = none.")


@dataclass
class RolloutConfig:
    enabled: bool = _f(False, "Accept signed bundles over MQTT (`edge-lstm publish-bundle`); needs the `rollout` extra (`cryptography`).")
    topic: str = _f("edge/{device}/bundle", "Topic of the retained, signed offer; its files arrive in chunks on `<topic>/<transfer>/<file>/<n>`.")
    trusted_keys: list[str] = _f([], "Ed25519 public key files (PEM) whose signatures are accepted (`edge-lstm keygen`, or `openssl pkey -pubout`).")
    parity_tolerance: float = _f(0.25, "Largest difference allowed between the new and the running model's forecasts on each stream's recent samples, relative to the largest running forecast; 0 = no parity check.", min=0)
    watch: int = _f(100, "Forecasts after the swap during which a failed batch, a non-finite forecast or a daemon crash rolls back to the previous bundle; 0 = none.", min=0)
    max_bytes: int = _f(268435456, "Largest bundle accepted (all its files), in bytes.", min=1024)
    keep: int = _f(3, "Installed bundles kept in the bundle directory (the running and the previous one always are).", min=2)


@dataclass
class Config:
    device: DeviceConfig = _section(DeviceConfig, "This device.")
    model: ModelConfig = _section(ModelConfig, "The model bundle and how to run it.")
    mqtt: MqttConfig = _section(MqttConfig, "Broker connection (used by the MQTT source and sink and the status, errors, stats, events, model and cmd topics).")
    source: SourceConfig = _section(SourceConfig, "Where samples come from.")
    sink: SinkConfig = _section(SinkConfig, "Where forecasts go.")
    topics: TopicsConfig = _section(TopicsConfig, "Service topics.")
    pipeline: PipelineConfig = _section(PipelineConfig, "Queue, batching and input limits.")
    commands: CommandsConfig = _section(CommandsConfig, "The command topic.")
    snapshot: SnapshotConfig = _section(SnapshotConfig, "Warm-restart snapshots.")
    log: LogConfig = _section(LogConfig, "Logging.")
    homeassistant: HomeAssistantConfig = _section(HomeAssistantConfig, "Home Assistant MQTT discovery.")
    rollout: RolloutConfig = _section(RolloutConfig, "Signed bundles over MQTT, with health checks and rollback.")

    #: Where the config came from (for messages); not a TOML key.
    source_file: str = field(default="<defaults>", metadata={"internal": True})
    #: Password resolved from `mqtt.password_env` or `--broker`; not a TOML key.
    password: str | None = field(default=None, repr=False, metadata={"internal": True})
    #: True when the file had an `[mqtt]` table or `--broker` was given.
    mqtt_configured: bool = field(default=False, metadata={"internal": True})

    @property
    def device_id(self) -> str:
        """The device id, defaulting to a topic-safe host name."""
        return self.device.id or re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "edge"

    @property
    def client_id(self) -> str:
        """The MQTT client id (fixed, so a persistent session can be resumed)."""
        return self.mqtt.client_id or f"edge-lstm-{self.device_id}"

    @property
    def broker_port(self) -> int:
        """The broker port, defaulting by TLS."""
        return self.mqtt.port or (8883 if self.mqtt.tls.enabled else 1883)

    @property
    def uses_mqtt(self) -> bool:
        """Whether the daemon connects to a broker at all."""
        return self.mqtt_configured or self.source.kind == "mqtt" or self.sink.kind == "mqtt"

    def topic(self, name: str, **fill: str) -> str:
        """A service topic (`status`, `errors`, ...) with `{device}` filled in."""
        return getattr(self.topics, name).format(device=self.device_id, **fill)


# ----------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class KeyInfo:
    """One config key, for documentation and checks."""

    key: str
    type: str
    default: Any
    help: str
    choices: tuple | None = None


def schema(cls: type = Config, prefix: str = "") -> list[KeyInfo]:
    """Every TOML key of the schema, depth first, with its type, default and help."""
    out: list[KeyInfo] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        key = prefix + f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(schema(tp, key + "."))
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out.append(KeyInfo(key, _type_name(tp), default, f.metadata.get("help", ""), f.metadata.get("choices")))
    return out


def _type_name(tp: Any) -> str:
    if get_origin(tp) is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if get_origin(tp) is dict:
        return f"table of {_type_name(get_args(tp)[1])}"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


# ----------------------------------------------------------------------------- loading


def load(
    path: str | Path,
    *,
    bundle: str | None = None,
    broker: str | None = None,
    allow_plaintext: bool = False,
    environ: typing.Mapping[str, str] | None = None,
    problems: list[str] | None = None,
) -> Config:
    """Read, validate and resolve a config file, then apply command-line overrides (`problems`:
    see `from_dict`; an unreadable file or broken TOML is raised at once)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the config file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_dict(doc, source=str(path), base=path.parent, bundle=bundle, broker=broker,
                     allow_plaintext=allow_plaintext, environ=environ, problems=problems)


def from_dict(
    doc: dict,
    *,
    source: str = "<dict>",
    base: Path | None = None,
    bundle: str | None = None,
    broker: str | None = None,
    allow_plaintext: bool = False,
    environ: typing.Mapping[str, str] | None = None,
    problems: list[str] | None = None,
) -> Config:
    """Validate a parsed TOML document into a `Config` (see `load`).

    Every problem is collected. Without `problems`, one `ConfigError` lists them all; with a
    list, they are appended to it and the config is returned with defaults in place of the
    bad values, so that `run --check` can go on to check files and bundle too.
    """
    found: list[str] = [] if problems is None else problems
    cfg = _build(Config, doc, source, "", found)
    cfg.source_file = source
    cfg.mqtt_configured = "mqtt" in doc
    base = base or Path.cwd()
    if bundle is not None:
        cfg.model.bundle = str(Path(bundle).resolve())
    elif cfg.model.bundle:
        cfg.model.bundle = str((base / cfg.model.bundle).resolve()) if not Path(cfg.model.bundle).is_absolute() else cfg.model.bundle
    if cfg.model.bundle_dir and not Path(cfg.model.bundle_dir).is_absolute():
        cfg.model.bundle_dir = str((base / cfg.model.bundle_dir).resolve())
    for sect, key in ((cfg.snapshot, "path"), (cfg.mqtt.tls, "ca_file"), (cfg.mqtt.tls, "cert_file"), (cfg.mqtt.tls, "key_file")):
        value = getattr(sect, key)
        if value and not Path(value).is_absolute():
            setattr(sect, key, str((base / value).resolve()))
    cfg.rollout.trusted_keys = [p if Path(p).is_absolute() else str((base / p).resolve()) for p in cfg.rollout.trusted_keys]
    if cfg.source.replay.file and cfg.source.replay.file != "-" and not Path(cfg.source.replay.file).is_absolute():
        cfg.source.replay.file = str((base / cfg.source.replay.file).resolve())
    env = os.environ if environ is None else environ
    if cfg.mqtt.password_env:
        if cfg.mqtt.password_env not in env:
            found.append(
                f"{source}: key 'mqtt.password_env' names the environment variable "
                f"{cfg.mqtt.password_env!r}, which is not set; export it (e.g. in the systemd "
                "unit's EnvironmentFile) or remove the key"
            )
        else:
            cfg.password = env[cfg.mqtt.password_env]
    if broker is not None:
        try:
            apply_broker_url(cfg, broker, allow_plaintext=allow_plaintext)
        except ConfigError as exc:
            found.extend(exc.problems)
    _check(cfg, found)
    if problems is None and found:
        raise ConfigError(*found)
    return cfg


@dataclass(frozen=True)
class BrokerUrl:
    """A parsed `mqtt://[user[:pass]@]host[:port]` (or `mqtts://`) broker address."""

    host: str
    port: int  # 0 = the default for the scheme
    tls: bool
    username: str | None
    password: str | None

    @property
    def effective_port(self) -> int:
        return self.port or (8883 if self.tls else 1883)


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse a broker URL (a bare host name means `mqtt://host`); ConfigError if malformed."""
    if "://" not in url:
        url = "mqtt://" + url
    parts = urlsplit(url)
    shown = redact_broker_url(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(
            f"--broker {shown!r}: expected mqtt://[user[:pass]@]host[:port] or mqtts://..., "
            f"found the scheme {parts.scheme!r}"
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"--broker {shown!r}: the port is not a number between 0 and 65535") from None
    if not parts.hostname:
        raise ConfigError(f"--broker {shown!r}: no host name")
    if parts.path not in ("", "/"):
        raise ConfigError(f"--broker {shown!r}: a broker URL has no path, found {parts.path!r}")
    return BrokerUrl(
        parts.hostname, port or 0, parts.scheme == "mqtts",
        unquote(parts.username) if parts.username is not None else None,
        unquote(parts.password) if parts.password is not None else None,
    )


def apply_broker_url(cfg: Config, url: str, *, allow_plaintext: bool = False) -> None:
    """Apply `mqtt://[user[:pass]@]host[:port]` (or `mqtts://`) to `cfg.mqtt`.

    A bare `host[:port]` changes only the address and keeps the config's TLS setting;
    `mqtt://` against a config with `mqtt.tls.enabled = true` would send the password and
    every sample in clear text, so it is refused unless `allow_plaintext`.
    """
    b = parse_broker_url(url)
    schemed = "://" in url
    if schemed and not b.tls and cfg.mqtt.tls.enabled and not allow_plaintext:
        raise ConfigError(
            f"--broker {redact_broker_url(url)!r}: {cfg.source_file} enables TLS (mqtt.tls.enabled = true) and "
            "mqtt:// would turn it off, sending the password and every sample in clear text; use "
            f"mqtts://{b.host}{f':{b.port}' if b.port else ''} (or a bare host name, which keeps the "
            "config's TLS), or add --allow-plaintext if clear text is really meant"
        )
    cfg.mqtt.host = b.host
    cfg.mqtt.port = b.port
    if schemed:
        cfg.mqtt.tls.enabled = b.tls
    if b.username is not None:
        cfg.mqtt.username = b.username
    if b.password is not None:
        cfg.password = b.password
    cfg.mqtt_configured = True


def redact_broker_url(url: str) -> str:
    """`url` with its password (if any) replaced by `***`, for messages and logs."""
    head, sep, rest = url.rpartition("@")
    if not sep or ":" not in head.split("://")[-1]:
        return url
    scheme, _, userinfo = head.rpartition("://")
    user = userinfo.split(":", 1)[0]
    return f"{scheme + '://' if scheme else ''}{user}:***@{rest}"


def password_in_url_warning(url: str, env_hint: str) -> str | None:
    """A warning when `url` carries a password (every local user sees it in `ps` and the
    shell history), pointing at the environment variable to use instead; else None."""
    try:
        b = parse_broker_url(url)
    except ConfigError:
        return None
    if b.password is None:
        return None
    return (
        f"warning: the password in --broker {redact_broker_url(url)!r} is visible to every user of "
        f"this machine (ps, /proc, shell history); put it in an environment variable instead "
        f"({env_hint}) and drop it from the URL"
    )


def _build(cls: type, doc: Any, source: str, prefix: str, problems: list[str]) -> Any:
    """`cls` from a TOML table; each problem is appended to `problems` and its key left at the default."""
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(doc, dict):
        problems.append(f"{source}: key {where!r}: expected a table, found {_found(doc)}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs = {}
    for name, value in doc.items():
        if name not in fields:
            near = _nearest(name, fields)
            hint = f"; did you mean {prefix + near!r}?" if near else f"; known keys here: {', '.join(fields)}"
            problems.append(f"{source}: unknown key {prefix + name!r}{hint}")
            continue
        f, tp, key = fields[name], hints[name], prefix + name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, source, key + ".", problems)
            continue
        try:
            kwargs[name] = _value(tp, value, f.metadata, source, key)
        except ConfigError as exc:
            problems.extend(exc.problems)
    return cls(**kwargs)


def _value(tp: Any, value: Any, meta: typing.Mapping, source: str, key: str) -> Any:
    def fail(expected: str) -> typing.NoReturn:
        raise ConfigError(f"{source}: key {key!r}: expected {expected}, found {_found(value)}")

    if get_origin(tp) is list:
        (item,) = get_args(tp)
        if not isinstance(value, list):
            fail(f"a list of {_type_name(item)}s")
        out = [_value(item, v, {}, source, f"{key}[{i}]") for i, v in enumerate(value)]
        choices = meta.get("choices")
        for i, v in enumerate(out):
            if choices and v not in choices:
                raise ConfigError(
                    f"{source}: key '{key}[{i}]': expected one of {', '.join(map(str, choices))}, "
                    f"found {_found(v)}"
                )
        return out
    if get_origin(tp) is dict:
        _, item = get_args(tp)
        if not isinstance(value, dict):
            fail(f"a table of {_type_name(item)}s")
        return {k: _value(item, v, {}, source, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            fail("true or false")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            fail("a string")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        fail("one of " + ", ".join(repr(c) if isinstance(c, str) else str(c) for c in choices))
    if "min" in meta and value < meta["min"]:
        fail(f"a value >= {meta['min']}")
    if "max" in meta and value > meta["max"]:
        fail(f"a value <= {meta['max']}")
    return value


def _found(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"a list ({value!r})" if len(repr(value)) < 60 else "a list"
    return f"{type(value).__name__} {value!r}"


def _nearest(name: str, candidates: typing.Iterable[str]) -> str | None:
    import difflib

    got = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return got[0] if got else None


_TOPIC_FIELDS = ("status", "health", "errors", "stats", "events", "model", "cmd")


def _check(cfg: Config, problems: list[str]) -> None:
    """Cross-field checks that one key alone cannot express; problems are appended."""
    src = cfg.source_file

    def bad(key: str, expected: str, found: Any) -> None:
        problems.append(f"{src}: key {key!r}: expected {expected}, found {_found(found)}")

    if cfg.device.id:
        _check_level(problems, src, "device.id", cfg.device.id)
    if not cfg.model.bundle:
        bad("model.bundle", "a bundle directory (or --bundle DIR)", cfg.model.bundle)
    if cfg.mqtt.reconnect_max < cfg.mqtt.reconnect_min:
        bad("mqtt.reconnect_max", f"a value >= mqtt.reconnect_min ({cfg.mqtt.reconnect_min})", cfg.mqtt.reconnect_max)
    if bool(cfg.mqtt.tls.cert_file) != bool(cfg.mqtt.tls.key_file):
        key = "mqtt.tls.key_file" if cfg.mqtt.tls.cert_file else "mqtt.tls.cert_file"
        bad(key, "both mqtt.tls.cert_file and mqtt.tls.key_file, or neither", "")
    if cfg.password is not None and not cfg.mqtt.username:
        bad("mqtt.username", "a user name when a password is given", cfg.mqtt.username)
    if cfg.source.kind == "mqtt":
        if not cfg.source.mqtt.topics:
            bad("source.mqtt.topics", "at least one topic pattern", cfg.source.mqtt.topics)
        for i, pattern in enumerate(cfg.source.mqtt.topics):
            problem = topic_pattern_problem(pattern)
            if problem:
                bad(f"source.mqtt.topics[{i}]", problem, pattern)
    if cfg.source.kind == "replay" and not cfg.source.replay.file:
        bad("source.replay.file", "a CSV file or '-' for standard input", "")
    if cfg.source.kind == "serial":
        if len(cfg.source.serial.delimiter) != 1:
            bad("source.serial.delimiter", "one character", cfg.source.serial.delimiter)
        if cfg.source.serial.reopen_max < cfg.source.serial.reopen_min:
            bad("source.serial.reopen_max", "a value >= source.serial.reopen_min", cfg.source.serial.reopen_max)
        _check_level(problems, src, "source.serial.stream", cfg.source.serial.stream)
    if cfg.source.kind == "replay":
        _check_level(problems, src, "source.replay.stream", cfg.source.replay.stream)
    if "{stream}" not in cfg.sink.mqtt.topic:
        bad("sink.mqtt.topic", "a template containing {stream}", cfg.sink.mqtt.topic)
    fleet = [k for k, on in (("homeassistant.prefix", cfg.homeassistant.enabled), ("rollout.topic", cfg.rollout.enabled),
                             ("homeassistant.bridge_state_topic", bool(cfg.homeassistant.bridge_state_topic))) if on]
    for name in ("sink.mqtt.topic", *(f"topics.{t}" for t in _TOPIC_FIELDS), *fleet):
        sect, _, leaf = name.rpartition(".")
        obj = cfg
        for part in sect.split("."):
            obj = getattr(obj, part)
        template = getattr(obj, leaf)
        try:
            filled = template.format(device="d", stream="s")
        except (KeyError, IndexError, ValueError) as exc:
            bad(name, "a topic with only {device} and {stream} placeholders", f"{template} ({exc})")
            continue
        if not filled or "+" in filled or "#" in filled:
            bad(name, "a topic without wildcards", template)
    if cfg.uses_mqtt and not cfg.mqtt.host:
        bad("mqtt.host", "a broker host (or --broker)", cfg.mqtt.host)
    _check_fleet(cfg, bad)


def _check_fleet(cfg: Config, bad: typing.Callable[[str, str, Any], None]) -> None:
    """The [homeassistant] and [rollout] sections: what they need from the rest of the config."""
    ha, ro = cfg.homeassistant, cfg.rollout
    if ha.enabled and cfg.sink.kind != "mqtt":
        bad("homeassistant.enabled", "sink.kind = \"mqtt\" (Home Assistant reads the forecasts from the broker)",
            cfg.sink.kind)
    if ha.node_id and not re.fullmatch(r"[A-Za-z0-9_-]+", ha.node_id):
        bad("homeassistant.node_id", "letters, digits, '_' and '-' only (Home Assistant ignores other discovery topics)",
            ha.node_id)
    for target, value in {**ha.units, **ha.device_classes}.items():
        if not value:
            bad(f"homeassistant.units.{target}" if target in ha.units else f"homeassistant.device_classes.{target}",
                "a non-empty string", value)
    if ro.enabled:
        if not cfg.uses_mqtt:
            bad("rollout.enabled", "a broker (an [mqtt] table or --broker): bundles arrive over MQTT", True)
        if not ro.trusted_keys:
            bad("rollout.trusted_keys", "at least one Ed25519 public key file (edge-lstm keygen)", ro.trusted_keys)


def check_files(cfg: Config, problems: list[str] | None = None) -> None:
    """Check that the files the config names exist (run at daemon start and by `--check`).

    Kept apart from `load` so that an example config can be validated on a machine that
    lacks the device's certificates. Problems are appended to `problems`, or without it
    raised together as one `ConfigError`.
    """
    src = cfg.source_file
    found: list[str] = [] if problems is None else problems
    files = [(f"mqtt.tls.{k}", getattr(cfg.mqtt.tls, k)) for k in ("ca_file", "cert_file", "key_file")]
    for key, value in files:
        if value and cfg.mqtt.tls.enabled and not os.access(value, os.R_OK):
            found.append(f"{src}: key {key!r}: expected a readable file, found {value!r} (missing or unreadable)")
    if cfg.source.kind == "replay" and cfg.source.replay.file != "-" and not os.access(cfg.source.replay.file, os.R_OK):
        found.append(
            f"{src}: key 'source.replay.file': expected a readable CSV file, found {cfg.source.replay.file!r}"
        )
    if cfg.model.bundle_dir and not Path(cfg.model.bundle_dir).is_dir():
        found.append(f"{src}: key 'model.bundle_dir': expected a directory, found {cfg.model.bundle_dir!r}")
    if cfg.rollout.enabled:
        for i, key_file in enumerate(cfg.rollout.trusted_keys):
            if not os.access(key_file, os.R_OK):
                found.append(f"{src}: key 'rollout.trusted_keys[{i}]': expected a readable public key file, "
                             f"found {key_file!r} (missing or unreadable)")
        store = Path(cfg.model.bundle_dir or Path(cfg.model.bundle).parent)
        if not store.is_dir() or not os.access(store, os.W_OK):
            found.append(f"{src}: key 'model.bundle_dir': rollout stores bundles there, so it must be a writable "
                         f"directory, found {str(store)!r} (set model.bundle_dir, e.g. /var/lib/edge-lstm/bundles)")
    if cfg.snapshot.path:
        parent = Path(cfg.snapshot.path).parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            found.append(
                f"{src}: key 'snapshot.path': expected a file in a writable directory, found "
                f"{cfg.snapshot.path!r} ({parent} is missing or not writable; systemd's "
                "StateDirectory=edge-lstm creates /var/lib/edge-lstm)"
            )
    if problems is None and found:
        raise ConfigError(*found)


def _check_level(problems: list[str], src: str, key: str, value: str) -> None:
    from edge_lstm.payload import PayloadError, validate_stream_id

    try:
        validate_stream_id(value)
    except PayloadError as exc:
        problems.append(f"{src}: key {key!r}: expected a single topic level: {exc.problem}")


def topic_pattern_problem(pattern: str) -> str | None:
    """Why a source topic pattern is unusable, or None: one `{stream}` level, `#` only last."""
    levels = pattern.split("/")
    if levels.count("{stream}") != 1:
        return "a topic with exactly one whole level '{stream}' (e.g. 'sensors/{stream}/raw')"
    for i, level in enumerate(levels):
        if level == "#" and i != len(levels) - 1:
            return "'#' only as the last level"
        if level not in ("+", "#", "{stream}") and any(c in level for c in "+#{}"):
            return "wildcards and placeholders as whole levels"
    return None


def stream_level(pattern: str) -> int:
    """Index of the `{stream}` level in a source topic pattern."""
    return pattern.split("/").index("{stream}")


def subscription(pattern: str) -> str:
    """The MQTT subscription for a source topic pattern (`{stream}` becomes `+`)."""
    return "/".join("+" if lv == "{stream}" else lv for lv in pattern.split("/"))
