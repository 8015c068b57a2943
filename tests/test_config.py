"""Daemon config: the examples load, every mistake is named precisely, overrides apply."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge_lstm import config
from edge_lstm.errors import ConfigError

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))
ENV = {"EDGE_MQTT_PASSWORD": "s3cret"}


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "edge.toml"
    p.write_text(text)
    return p


MINIMAL = '[model]\nbundle = "b"\n'


def test_examples_exist():
    """configs/ holds the three documented examples."""
    assert {p.name for p in CONFIGS} >= {"pi-mqtt.toml", "serial.toml", "demo.toml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_loads(path):
    """Each shipped example validates (secrets from the environment)."""
    cfg = config.load(path, environ=ENV)
    assert cfg.model.bundle and cfg.device_id
    assert cfg.source_file == str(path)


def test_pi_example_values():
    """The Pi example: TLS, password from the env, persistent MQTT 5 session, fixed client id."""
    cfg = config.load(Path(__file__).parent.parent / "configs" / "pi-mqtt.toml", environ=ENV)
    assert cfg.password == "s3cret" and cfg.mqtt.username == "pi-01"
    assert cfg.mqtt.tls.enabled and cfg.broker_port == 8883 and cfg.mqtt.persistent
    assert cfg.client_id == "edge-lstm-pi-01"
    assert cfg.topic("status") == "edge/pi-01/status" and cfg.topic("cmd") == "edge/pi-01/cmd"


def test_demo_paths_are_relative_to_the_file():
    """Relative paths in a config are taken from the config file's directory."""
    cfg = config.load(Path(__file__).parent.parent / "configs" / "demo.toml")
    assert Path(cfg.source.replay.file).is_file()
    assert cfg.model.bundle == str((Path(__file__).parent.parent / "edge_lstm" / "demo" / "airline").resolve())
    assert not cfg.uses_mqtt


def test_defaults(tmp_path):
    """A minimal file gets the documented defaults."""
    cfg = config.load(write(tmp_path, MINIMAL))
    assert cfg.source.kind == "mqtt" and cfg.source.mqtt.topics == ["sensors/{stream}/raw"]
    assert cfg.sink.mqtt.topic == "edge/{device}/pred/{stream}"
    assert cfg.pipeline.queue_policy == "drop-oldest"
    assert cfg.broker_port == 1883 and cfg.uses_mqtt


@pytest.mark.parametrize(
    "text, words",
    [
        ('[model]\nbundle = 3\n', ["key 'model.bundle'", "expected a string", "found int 3"]),
        ('[model]\nbundle = "b"\n[mqtt]\nport = "1883"\n', ["key 'mqtt.port'", "expected an integer", "the string '1883'"]),
        ('[model]\nbundle = "b"\n[mqtt]\nport = 70000\n', ["key 'mqtt.port'", "<= 65535", "70000"]),
        ('[model]\nbundle = "b"\nmode = "windowed"\n', ["key 'model.mode'", "'exact', 'continuous'", "'windowed'"]),
        ('[model]\nbundle = "b"\nbakend = "onnx"\n', ["unknown key 'model.bakend'", "did you mean 'model.backend'"]),
        ('[modle]\nbundle = "b"\n', ["unknown key 'modle'", "did you mean 'model'"]),
        ('[model]\nbundle = "b"\n[pipeline]\nstrict_keys = "yes"\n', ["pipeline.strict_keys", "true or false"]),
        ('[model]\nbundle = "b"\n[source.mqtt]\ntopics = "sensors/+/raw"\n', ["source.mqtt.topics", "a list of strings"]),
        ('[model]\nbundle = "b"\n[source.mqtt]\ntopics = ["sensors/+/raw"]\n', ["source.mqtt.topics[0]", "exactly one whole level '{stream}'"]),
        ('[model]\nbundle = "b"\n[source.mqtt]\ntopics = ["#/{stream}"]\n', ["source.mqtt.topics[0]", "'#' only as the last level"]),
        ('[model]\nbundle = "b"\n[sink.mqtt]\ntopic = "edge/pred"\n', ["sink.mqtt.topic", "containing {stream}"]),
        ('[model]\nbundle = "b"\n[topics]\nerrors = "edge/{device}/#"\n', ["topics.errors", "without wildcards"]),
        ('[model]\nbundle = "b"\n[topics]\nstats = "edge/{dev}/stats"\n', ["topics.stats", "placeholders"]),
        ('[model]\nbundle = "b"\n[commands]\nallow = ["reset", "reboot"]\n', ["commands.allow[1]", "'reboot'"]),
        ('[model]\nbundle = "b"\n[device]\nid = "a/b"\n', ["device.id", "'/'"]),
        ('[model]\nbundle = "b"\n[mqtt]\nreconnect_min = 5\nreconnect_max = 1\n', ["mqtt.reconnect_max", ">= mqtt.reconnect_min"]),
        ('[model]\nbundle = "b"\n[mqtt.tls]\ncert_file = "c.crt"\n', ["mqtt.tls.key_file", "both"]),
        ('[model]\nbundle = "b"\n[source]\nkind = "replay"\n', ["source.replay.file", "CSV file"]),
        ('[model]\nbundle = "b"\n[source]\nkind = "serial"\n[source.serial]\nparity = "N"\n', ["source.serial.parity", "'none'"]),
        ('[model]\nbundle = "b"\n[source]\nkind = "serial"\n[source.serial]\ndelimiter = ", "\n', ["source.serial.delimiter", "one character"]),
        ('model = "b"\n', ["key 'model'", "expected a table", "the string 'b'"]),
        ('[model]\n', ["model.bundle", "--bundle DIR"]),
        ('[model]\nbundle = "b"\n[mqtt]\npassword_env = "EDGE_TEST_NOT_SET_ANYWHERE"\n', ["mqtt.password_env", "'EDGE_TEST_NOT_SET_ANYWHERE'", "not set"]),
        ('[model\nbundle = "b"\n', ["not valid TOML"]),
    ],
)
def test_errors_name_file_key_expected_found(tmp_path, text, words):
    """Every error names the file and the key, what was expected and what was found."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path, environ={})
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    for w in words:
        assert w in msg, msg
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    "text, words",
    [
        ('[mqtt.tls]\nenabled = true\nca_file = "/nonexistent/ca.crt"\n', ["mqtt.tls.ca_file", "a readable file"]),
        ('[source]\nkind = "replay"\n[source.replay]\nfile = "gone.csv"\n', ["source.replay.file", "gone.csv"]),
        ('[snapshot]\npath = "/nonexistent/dir/state.npz"\n', ["snapshot.path", "StateDirectory"]),
        ('[model]\nbundle_dir = "no-such-dir"\n', ["model.bundle_dir", "a directory"]),
    ],
)
def test_check_files(tmp_path, text, words):
    """Files the config names are checked at start (and by --check), naming the key."""
    text = text.replace("[model]\n", "")
    cfg = config.load(write(tmp_path, MINIMAL + text))
    with pytest.raises(ConfigError) as info:
        config.check_files(cfg)
    for w in words:
        assert w in str(info.value)


BAD_EVERYWHERE = """\
[model]
bundle = "no-such-bundle"
mode = "fast"
horizn = 3
[mqtt]
port = "x"
password_env = "EDGE_TEST_NOT_SET_ANYWHERE"
[mqtt.tls]
enabled = true
ca_file = "/nonexistent/ca.crt"
[pipeline]
queue_policy = "lifo"
[sink.mqtt]
topic = "edge/{device}/pred"
"""
BAD_KEYS = ["model.mode", "model.horizn", "mqtt.port", "mqtt.password_env", "pipeline.queue_policy", "sink.mqtt.topic"]


def test_every_problem_is_reported_at_once(tmp_path):
    """A config with six mistakes gets one error listing all six, a line each, each naming
    the file and its key; with a `problems` list they are collected there instead, and the
    config comes back with defaults in place of the bad values."""
    path = write(tmp_path, BAD_EVERYWHERE)
    with pytest.raises(ConfigError) as info:
        config.load(path, environ={})
    lines = str(info.value).splitlines()
    assert lines == info.value.problems and len(lines) == len(BAD_KEYS), lines
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    for key in BAD_KEYS:
        assert sum(f"'{key}'" in line for line in lines) == 1, (key, lines)
    problems: list[str] = []
    cfg = config.load(path, environ={}, problems=problems)
    assert problems == lines
    assert cfg.model.mode == "exact" and cfg.mqtt.port == 0 and cfg.pipeline.queue_policy == "drop-oldest"
    files: list[str] = []
    config.check_files(cfg, files)  # the files are checked on that config too
    assert len(files) == 1 and "mqtt.tls.ca_file" in files[0]


def test_run_check_reports_config_files_and_bundle_together(tmp_path):
    """`run --check` prints every problem of the config, its files and its bundle, one
    `error:` line each, and exits 2."""
    from click.testing import CliRunner

    from edge_lstm.cli import main

    res = CliRunner().invoke(main, ["run", "--config", str(write(tmp_path, BAD_EVERYWHERE)), "--check"])
    assert res.exit_code == 2
    errors = [line for line in res.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(BAD_KEYS) + 2, res.output  # + the CA file, + the bundle
    for key in [*BAD_KEYS, "mqtt.tls.ca_file", "model.bundle"]:
        assert any(f"'{key}'" in line for line in errors), key
    assert any("no such bundle directory" in line for line in errors)


@pytest.mark.parametrize("mode", ["exact", "continuous"])
def test_run_check_warns_of_continuous_mode_drift(tmp_path, mode):
    """`run --check` in continuous mode on the shipped bundle, whose report says it drifts,
    warns with the measured figure; exact mode has nothing to warn of."""
    from click.testing import CliRunner

    from edge_lstm.cli import main

    shipped = Path(__file__).resolve().parent.parent / "edge_lstm" / "demo" / "airline"
    text = f'[model]\nbundle = "{shipped}"\nmode = "{mode}"\n[source]\nkind = "replay"\n' \
           f'[source.replay]\nfile = "{shipped.parent / "airline-passengers.csv"}"\n[sink]\nkind = "stdout"\n'
    res = CliRunner().invoke(main, ["run", "--config", str(write(tmp_path, text)), "--check"])
    assert res.exit_code == 0, res.output
    warned = "warning: continuous mode drifts from exact mode by up to" in res.output
    assert warned == (mode == "continuous"), res.output


def test_missing_file():
    """A missing file is a config error naming it."""
    with pytest.raises(ConfigError, match="nope.toml: cannot read"):
        config.load("nope.toml")


def test_password_from_env(tmp_path):
    """The password is read from the variable `password_env` names, never from the file."""
    path = write(tmp_path, MINIMAL + '[mqtt]\nusername = "dev"\npassword_env = "PW"\n')
    assert config.load(path, environ={"PW": "hunter2"}).password == "hunter2"
    assert "password" not in {k.key.rpartition(".")[2] for k in config.schema()}


@pytest.mark.parametrize(
    "url, host, port, tls, user, password",
    [
        ("localhost", "localhost", 1883, False, "", None),
        ("mqtt://10.0.0.5:1884", "10.0.0.5", 1884, False, "", None),
        ("mqtts://broker.lan", "broker.lan", 8883, True, "", None),
        ("mqtt://dev@h", "h", 1883, False, "dev", None),
        ("mqtts://dev:p%40ss%3Aw@h:9000", "h", 9000, True, "dev", "p@ss:w"),
    ],
)
def test_broker_override(tmp_path, url, host, port, tls, user, password):
    """--broker mqtt://[user[:pass]@]host[:port] (mqtts:// for TLS) overrides the file."""
    path = write(tmp_path, MINIMAL + '[mqtt]\nhost = "file-host"\nport = 1\n')
    cfg = config.load(path, broker=url)
    assert (cfg.mqtt.host, cfg.broker_port, cfg.mqtt.tls.enabled) == (host, port, tls)
    assert cfg.mqtt.username == user and cfg.password == password


@pytest.mark.parametrize("url, words", [("http://h", "scheme 'http'"), ("mqtt://h:99999", "port"),
                                        ("mqtt://:1883", "no host"), ("mqtt://h/x", "no path")])
def test_bad_broker_url(tmp_path, url, words):
    """A bad --broker URL is a usage error that says what is wrong."""
    with pytest.raises(ConfigError, match=words):
        config.load(write(tmp_path, MINIMAL), broker=url)


def test_bundle_override(tmp_path):
    """--bundle replaces the file's bundle (and makes the key optional)."""
    path = write(tmp_path, "[device]\nid = \"d\"\n")
    assert config.load(path, bundle="/srv/b").model.bundle == "/srv/b"
    assert config.load(path, bundle="rel").model.bundle == str(Path("rel").resolve())


def test_schema_lists_every_key_with_help():
    """The schema is introspectable: every leaf key has a type, a default and help text."""
    keys = config.schema()
    names = [k.key for k in keys]
    assert len(names) == len(set(names)) > 60
    for k in keys:
        assert k.help and k.type in ("string", "integer", "number", "boolean", "list of string", "table of string"), k
    assert {"mqtt.tls.ca_file", "source.serial.parity", "pipeline.queue_policy", "commands.allow"} <= set(names)
    by = {k.key: k for k in keys}
    assert by["pipeline.queue_policy"].choices == ("drop-oldest", "drop-newest", "block")
    # defaults in the schema are the dataclass defaults
    assert by["mqtt.keepalive"].default == dataclasses.fields(config.MqttConfig)[6].default == 30
