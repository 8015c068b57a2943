"""Security items of issue 10: a --broker URL may not silently drop the config's TLS, a password
in the URL is warned about, a certificate for the wrong host is told apart from an unreachable
broker, a manifest cannot point outside its bundle, and a tampered variant stops the daemon
instead of being skipped for another one."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemon_harness import daemon_doc, write_toml
from edge_lstm import config
from edge_lstm.broker import free_port
from edge_lstm.bundle import Bundle
from edge_lstm.commands.run import run
from edge_lstm.errors import BundleError, BundleIntegrityError, ConfigError, EdgeLstmError
from edge_lstm.forecaster import Runtime
from edge_lstm.mqtt import MqttLink, connect_client

TLS_DOC = {"model": {"bundle": "/b"}, "mqtt": {"host": "broker.lan", "username": "dev", "tls": {"enabled": True}}}


# --------------------------------------------------------------------------- --broker

def test_mqtt_url_may_not_switch_off_the_configs_tls():
    """`--broker mqtt://` against a TLS config is refused (it would send the password in clear
    text) unless --allow-plaintext; a bare host keeps the TLS; mqtts:// keeps it too."""
    with pytest.raises(ConfigError) as info:
        config.from_dict(TLS_DOC, source="pi.toml", broker="mqtt://dev:secret@other.lan", environ={})
    msg = str(info.value)
    assert "pi.toml enables TLS (mqtt.tls.enabled = true)" in msg and "clear text" in msg
    assert "mqtts://other.lan" in msg and "--allow-plaintext" in msg and "secret" not in msg
    cfg = config.from_dict(TLS_DOC, broker="mqtt://other.lan", allow_plaintext=True, environ={})
    assert not cfg.mqtt.tls.enabled and cfg.broker_port == 1883
    cfg = config.from_dict(TLS_DOC, broker="other.lan:8884", environ={})
    assert cfg.mqtt.tls.enabled and cfg.mqtt.host == "other.lan" and cfg.broker_port == 8884
    cfg = config.from_dict(TLS_DOC, broker="mqtts://other.lan", environ={})
    assert cfg.mqtt.tls.enabled and cfg.broker_port == 8883
    plain = config.from_dict({"model": {"bundle": "/b"}}, broker="mqtts://h", environ={})
    assert plain.mqtt.tls.enabled  # mqtts:// strengthens a plain config: fine


def test_cli_refuses_plaintext_and_warns_about_a_password_in_the_url(tiny_bundle, tmp_path):
    """The `run` command exits 2 on the weakening URL, and warns (pointing at the environment
    variable) when the URL carries a password; the password is never echoed."""
    doc = {"device": {"id": "sec1"}, "model": {"bundle": str(tiny_bundle)},
           "mqtt": {"host": "localhost", "password_env": "EDGE_MQTT_PASSWORD", "username": "dev", "tls": {"enabled": True}}}
    path = write_toml(tmp_path / "tls.toml", doc)
    env = {"EDGE_MQTT_PASSWORD": "fromenv"}
    res = CliRunner().invoke(run, ["--config", str(path), "--broker", "mqtt://dev:hunter2@localhost", "--check"], env=env)
    assert res.exit_code == 2 and "would turn it off" in res.output and "hunter2" not in res.output
    res = CliRunner().invoke(run, ["--config", str(path), "--broker", "mqtts://dev:hunter2@localhost", "--check"], env=env)
    assert res.exit_code == 0, res.output
    assert "warning: the password in --broker 'mqtts://dev:***@localhost' is visible to every user" in res.output
    assert "$EDGE_MQTT_PASSWORD" in res.output and "hunter2" not in res.output
    res = CliRunner().invoke(run, ["--config", str(path), "--broker", "mqtt://localhost", "--allow-plaintext", "--check"], env=env)
    assert res.exit_code == 0 and "(TLS)" not in res.output and "warning" not in res.output


# --------------------------------------------------------------------------- TLS failures

def _server_cert(d: Path, out: Path, names: str) -> None:
    """A server certificate for `names` (a subjectAltName list) signed by the test CA in `d`."""
    out.mkdir()
    (out / "san.ext").write_text(f"subjectAltName={names}\n")

    def sh(*args: str) -> None:
        subprocess.run(args, cwd=out, check=True, capture_output=True)

    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=wrong-host", "-keyout", "server.key", "-out", "server.csr")
    sh("openssl", "x509", "-req", "-in", "server.csr", "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
       "-CAcreateserial", "-CAserial", str(out / "ca.srl"), "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    os.chmod(out, 0o755)
    for p in out.iterdir():
        os.chmod(p, 0o644)


def _first_failure(cfg, caplog) -> str:
    link = MqttLink(cfg)
    with caplog.at_level(logging.WARNING, logger="edge_lstm.mqtt"):
        link.start()
        end = time.monotonic() + 20
        while not [r for r in caplog.records if r.name == "edge_lstm.mqtt"] and time.monotonic() < end:
            time.sleep(0.05)
        link.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "edge_lstm.mqtt"]
    assert lines, "no log line about the failed connection"
    caplog.clear()
    return lines[0]


def test_tls_failures_are_told_apart_from_an_unreachable_broker(broker_factory, tls_certs, tmp_path, caplog):
    """A certificate for another host, a CA that did not sign the certificate, and a port where
    nothing listens each get their own log line naming the host, what the certificate says and
    the key to look at; only the last one says "cannot reach"."""
    shared = Path(tempfile.mkdtemp(prefix="edge-tls-wrong-"))  # pytest's tmp dirs are 0700: the broker runs as nobody
    os.chmod(shared, 0o755)
    wrong = shared / "wrong"
    _server_cert(tls_certs, wrong, "DNS:wronghost.example")
    try:
        _tls_cases(broker_factory, tls_certs, wrong, tmp_path, caplog)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _tls_cases(broker_factory, tls_certs, wrong, tmp_path, caplog) -> None:
    b = broker_factory(listener_opts=f"cafile {tls_certs}/ca.crt\ncertfile {wrong}/server.crt\nkeyfile {wrong}/server.key\n")
    base = {"device": {"id": "tlsx"}, "model": {"bundle": "/b"}}
    mqtt = {"host": "127.0.0.1", "port": b.port, "reconnect_min": 5, "reconnect_max": 10,
            "tls": {"enabled": True, "ca_file": str(tls_certs / "ca.crt")}}
    line = _first_failure(config.from_dict({**base, "mqtt": mqtt}, environ={}), caplog)
    assert line.startswith(f"TLS: MQTT broker 127.0.0.1:{b.port} presented a certificate that failed verification (")
    assert "mismatch" in line and "the certificate is for DNS wronghost.example" in line
    assert "mqtt.tls.insecure" in line and "cannot reach" not in line
    with pytest.raises(EdgeLstmError, match=r"TLS: MQTT broker 127.0.0.1:\d+ presented a certificate that failed verification"):
        connect_client(f"mqtts://127.0.0.1:{b.port}", ca_file=str(tls_certs / "ca.crt"))  # the command-line tools
    # a CA that did not sign the broker's certificate
    other = tmp_path / "other-ca"
    other.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=other-ca",
                    "-keyout", str(other / "ca.key"), "-out", str(other / "ca.crt")], check=True, capture_output=True)
    mqtt_other = {**mqtt, "tls": {"enabled": True, "ca_file": str(other / "ca.crt")}}
    line = _first_failure(config.from_dict({**base, "mqtt": mqtt_other}, environ={}), caplog)
    assert "failed verification" in line and "mqtt.tls.ca_file" in line and str(other / "ca.crt") in line
    # nothing listening
    line = _first_failure(config.from_dict({**base, "mqtt": {**mqtt, "port": free_port()}}, environ={}), caplog)
    assert line.startswith("cannot reach MQTT broker 127.0.0.1:") and "refused" in line.lower()


# --------------------------------------------------------------------------- bundles

def _copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


def _edit_manifest(bundle: Path, file: str) -> None:
    mf = bundle / "manifest.json"
    doc = json.loads(mf.read_text())
    onnx = next(v for v in doc["variants"] if v["file"] == "model.onnx")
    onnx["file"] = file
    mf.write_text(json.dumps(doc))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_manifest_files_stay_inside_the_bundle(tiny_bundle, tmp_path, how):
    """A manifest naming ../../outside/x.onnx, an absolute path, or a file that is a symlink out
    of the bundle is refused with the key and the reason, though the file's hash matches."""
    b = _copy(tiny_bundle, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(b / "model.onnx", outside / "x.onnx")  # same bytes: the hash would pass
    if how == "dotdot":
        _edit_manifest(b, "../outside/x.onnx")
    elif how == "absolute":
        _edit_manifest(b, str(outside / "x.onnx"))
    else:
        (b / "model.onnx").unlink()
        (b / "model.onnx").symlink_to(outside / "x.onnx")
    with pytest.raises(BundleError) as info:
        Bundle.open(b).variants
    assert "variants[" in str(info.value) and "points outside the bundle directory" in str(info.value)
    with pytest.raises(BundleError):
        Runtime.open(b, backend="onnx")


def test_a_tampered_variant_stops_the_daemon_instead_of_falling_back(tiny_bundle, tmp_path, mqtt_broker):
    """model.onnx that fails its sha256: `auto` does not fall back to another engine; `edge-lstm
    run` exits 2 naming the file, before it connects anywhere."""
    b = _copy(tiny_bundle, tmp_path)
    with open(b / "model.onnx", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(BundleIntegrityError, match="model.onnx: sha256 .* does not match the manifest"):
        Runtime.open(b)
    assert Runtime.open(b, backend="numpy").backend_name == "numpy"  # asked for by name: only its file counts
    path = write_toml(tmp_path / "run.toml", daemon_doc(mqtt_broker, b, "tamper1"))
    res = CliRunner().invoke(run, ["--config", str(path)])
    assert res.exit_code == 2 and "model.onnx: sha256" in res.output and "does not match the manifest" in res.output
