"""deploy/: the broker ACL works as documented on a real mosquitto, the systemd unit is
hardened, and the install script is sound."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from daemon_harness import close, daemon_doc


REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"


def client(broker, user, password):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


@pytest.mark.broker
def test_acl_lets_only_the_operator_command_a_device(broker_factory, tiny_bundle):
    """With deploy/mosquitto/acl, a sensor's samples reach the daemon but its command is
    dropped by the broker; the operator's command is carried out."""
    users = {"pi-01": "dev-pw", "sensor-boiler": "sensor-pw", "operator": "op-pw", "dashboard": "dash-pw"}
    broker = broker_factory(passwords=users, acl=(DEPLOY / "mosquitto" / "acl").read_text())
    doc = daemon_doc(broker, tiny_bundle, "pi-01", mqtt={"username": "pi-01", "password_env": "PW"},
                     source={"mqtt": {"topics": ["sensors/{stream}/raw"]}})
    from edge_lstm import config
    from edge_lstm.daemon import Daemon

    d = Daemon(config.from_dict(doc, environ={"PW": "dev-pw"}))
    d.start(connect_timeout=10)
    assert d.link.connected.is_set()
    got = []
    dash = client(broker, "dashboard", "dash-pw")
    dash.on_message = lambda c, u, m: got.append((m.topic, json.loads(m.payload) if m.payload[:1] == b"{" else m.payload))
    dash.subscribe("edge/pi-01/#", 1)
    sensor = client(broker, "sensor-boiler", "sensor-pw")
    operator = client(broker, "operator", "op-pw")
    try:
        time.sleep(0.3)
        for i in range(7):
            sensor.publish("sensors/boiler/raw", json.dumps({"ts": i, "value": 100.0 + i}), qos=1).wait_for_publish(5)
        sensor.publish("sensors/other/raw", b"1", qos=1)  # not its topic: dropped by the broker
        sensor.publish("edge/pi-01/cmd", json.dumps({"cmd": "reset", "stream": "boiler"}), qos=1)
        time.sleep(0.5)
        assert d.wait_idle()
        assert d.counts["commands"] == 0 and d.runtime.streams() == ["boiler"]
        assert d.runtime.state_of("boiler").any()
        operator.publish("edge/pi-01/cmd", json.dumps({"cmd": "reset", "stream": "boiler"}), qos=1).wait_for_publish(5)
        end = time.monotonic() + 5
        while d.counts["commands"] == 0 and time.monotonic() < end:
            time.sleep(0.02)
        assert d.wait_idle()
        assert d.counts["commands"] == 1 and not d.runtime.state_of("boiler").any()
        def command_event() -> bool:
            return any(t == "edge/pi-01/events" and p["event"] == "command" and p["ok"] for t, p in list(got))

        end = time.monotonic() + 10
        while not command_event() and time.monotonic() < end:
            time.sleep(0.02)
        assert command_event()
        preds = [p for t, p in got if "/pred/" in t]
        assert len(preds) == 7 and {p["stream"] for p in preds} == {"boiler"}
        assert any(t == "edge/pi-01/health" and p["status"] == "online" for t, p in got)  # the ACL lets it through
    finally:
        for c in (sensor, operator, dash):
            close(c)
        d.stop()


def test_unit_is_hardened():
    """The unit runs as its own user with a state directory, strict protection and restart."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string((DEPLOY / "edge-lstm.service").read_text())
    s = unit["Service"]
    assert s["User"] == "edge-lstm" and s["StateDirectory"] == "edge-lstm"
    assert s["ProtectSystem"] == "strict" and s["NoNewPrivileges"] == "yes" and s["ProtectHome"] == "yes"
    assert s["Restart"] == "on-failure" and s["RestartPreventExitStatus"] == "2"
    assert s["CapabilityBoundingSet"] == "" and s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert s["ExecStart"].endswith("edge-lstm run --config /etc/edge-lstm/edge-lstm.toml")
    assert s["ExecStartPre"].endswith("--check")
    # the example config's snapshot lives in the state directory, the only writable path
    from edge_lstm import config

    cfg = config.load(Path(__file__).resolve().parent.parent / "configs" / "pi-mqtt.toml",
                      environ={"EDGE_MQTT_PASSWORD": "x"})
    assert cfg.snapshot.path.startswith("/var/lib/edge-lstm/")


def test_install_script_dry_run(tmp_path):
    """install.sh parses, refuses bad arguments, and its dry run does the documented steps
    without claiming that anything was installed or started."""
    script = DEPLOY / "install.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    bad = subprocess.run([str(script), "--dry-run", "--bundle", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a bundle" in bad.stderr
    cfg = REPO / "configs" / "pi-mqtt.toml"
    out = subprocess.run([str(script), "--dry-run", "--config", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for step in ("useradd --system", "python3 -m venv /opt/edge-lstm", "install -d -m 0750 -o edge-lstm",
                 f"pip install {REPO}[litert]",  # the device install: with the LiteRT interpreter
                 "edge-lstm.service /etc/systemd/system/", "--check", "systemctl enable --now edge-lstm"):
        assert step in out.stdout, step
    last = out.stdout.strip().splitlines()[-1]
    assert "dry run: nothing was changed" in last and "running" not in out.stdout and "started" not in out.stdout


def test_install_script_puts_the_bundle_where_the_config_looks(tmp_path):
    """`--bundle DIR` installs to /var/lib/edge-lstm/bundles/<DIR's name>: for the README's
    command that is the shipped config's model.bundle; a bundle the config does not name is
    refused before anything changes (exit 2, naming the key and both paths)."""
    from edge_lstm import config

    script = DEPLOY / "install.sh"
    cfg_path = REPO / "configs" / "pi-mqtt.toml"
    want = config.load(cfg_path, environ={"EDGE_MQTT_PASSWORD": "x"}).model.bundle
    bundle = tmp_path / "airline"  # README: deploy/install.sh --config configs/pi-mqtt.toml --bundle bundles/airline
    shutil.copytree(REPO / "edge_lstm" / "demo" / "airline", bundle)
    out = subprocess.run([str(script), "--dry-run", "--config", str(cfg_path), "--bundle", str(bundle)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"+ cp -r {bundle}/. {want}/" in out.stdout, out.stdout
    other = tmp_path / "airline-gru"
    shutil.copytree(bundle, other)
    bad = subprocess.run([str(script), "--dry-run", "--config", str(cfg_path), "--bundle", str(other)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == "", bad.stdout
    assert "'model.bundle'" in bad.stderr and want in bad.stderr and f"{want}-gru" in bad.stderr, bad.stderr
