"""The bundle contract: written bundles pass the checker; corrupt ones are refused clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stacks
from edge_lstm.backends.numpy_backend import NumpyStep
from edge_lstm.bundle import Bundle
from edge_lstm.errors import BundleError
from edge_lstm_export.bundle_writer import write_bundle
from edge_lstm_export.emit_numpy import reference
from edge_lstm_export.scaler import from_specs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def bundle_dir(tmp_path: Path) -> Path:
    stack = stacks.seed_like(units=8)
    return write_bundle(stack, tmp_path / "b", name="seed-like", features=["passengers"], targets=["passengers"],
                        scaler=from_specs(["minmax:104,622"], None, 1, 1), baseline_windows=(12,))


def test_manifest_keeps_the_design_contract(bundle_dir: Path) -> None:
    """Manifest keys, state slices, variants with hashes: what DESIGN.md fixes."""
    m = json.loads((bundle_dir / "manifest.json").read_text())
    assert m["format"] == "edge-lstm-bundle" and m["format_version"] == 1
    assert m["io"] == {"x": "x", "state": "state", "y": "y", "state_out": "state_out"}
    assert m["state"]["size"] == 32
    assert [(l["h"], l["c"]) for l in m["state"]["layers"]] == [([0, 8], [8, 16]), ([16, 24], [24, 32])]
    assert {(v["file"], v["backend"]) for v in m["variants"]} == {("model.onnx", "onnx"), ("weights.npz", "numpy")}
    assert m["scaler"]["kind"] == "minmax" and m["scaler"]["x_min"] == [104.0]


def test_shared_checker_accepts_bundle(bundle_dir: Path) -> None:
    """The team's contract checker (vendored as tests/check_bundle.py) accepts what we write."""
    out = subprocess.run([sys.executable, str(Path(__file__).parent / "check_bundle.py"), str(bundle_dir)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_weights_npz_gives_the_reference(bundle_dir: Path) -> None:
    """weights.npz loads without pickle and steps like the float64 reference (sensor units)."""
    bundle = Bundle.open(bundle_dir)
    engine = NumpyStep.from_arrays(bundle.manifest, bundle.read_weights())
    stack = stacks.seed_like(units=8)
    x = np.array([[300.0], [450.0]], np.float32)
    y, _ = engine.step(x, np.zeros((2, 32), np.float32))
    y_ref, _ = reference(stack).step((x - 104.0) / 518.0, np.zeros((2, 32)))
    np.testing.assert_allclose((y - 104.0) / 518.0, y_ref, atol=1e-6)


def test_tampered_variant_is_refused(bundle_dir: Path) -> None:
    """A variant whose bytes changed after export is refused, naming the file."""
    path = bundle_dir / "model.onnx"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    bundle = Bundle.open(bundle_dir)
    with pytest.raises(BundleError, match=r"model\.onnx: sha256 .* does not match"):
        bundle.read_variant(bundle.variant("onnx"))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m.update(format_version=99), "format_version 99 is not one this runtime knows"),
        (lambda m: m.update(format="something"), "format is 'something'"),
        (lambda m: m.pop("state"), r"missing key\(s\) \['state'\]"),
        (lambda m: m["state"].update(size=33), "do not tile"),
    ],
)
def test_bad_manifest_is_refused(bundle_dir: Path, mutate, message: str) -> None:
    """Unknown versions and broken manifests get an error that names manifest.json and the fix."""
    mf = bundle_dir / "manifest.json"
    m = json.loads(mf.read_text())
    mutate(m)
    mf.write_text(json.dumps(m))
    with pytest.raises(BundleError, match=message) as err:
        Bundle.open(bundle_dir)
    assert "manifest.json" in str(err.value)


def test_not_json_and_missing(tmp_path: Path) -> None:
    """A truncated manifest and a missing directory each say what is wrong."""
    (tmp_path / "manifest.json").write_text('{"format": ')
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.open(tmp_path)
    with pytest.raises(BundleError, match="no such bundle directory"):
        Bundle.open(tmp_path / "absent")


def test_precision_choice(bundle_dir: Path) -> None:
    """Without a precision the most accurate variant is chosen; an absent one is named."""
    bundle = Bundle.open(bundle_dir)
    assert bundle.variant("onnx").precision == "fp32"
    with pytest.raises(BundleError, match="no onnx variant with precision 'int8-dynamic'"):
        bundle.variant("onnx", "int8-dynamic")


def test_device_package_never_imports_training_frameworks() -> None:
    """Importing edge_lstm and all its modules pulls in no tensorflow, keras or torch."""
    code = (
        "import importlib, pkgutil, sys, edge_lstm\n"
        "for m in pkgutil.walk_packages(edge_lstm.__path__, 'edge_lstm.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'keras', 'torch', 'tf_keras'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
