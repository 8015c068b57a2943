"""Session fixtures: small real bundles (random-weight stacks through the real bundle writer).

`bundle_dir` holds two bundles by name: `tiny-lstm` (LSTM 8 -> Dense 1, window 6) and
`tiny-gru` (GRU 6 -> Dense 1, window 6: a different state layout, for hot-swap tests). Both
read and forecast airline-passenger units through a folded min-max scaler.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

WINDOW = 6


def build_bundles(root: Path) -> dict[str, Path]:
    """Write the two test bundles under `root`; returns name -> path."""
    from stacks import dense, recurrent

    from edge_lstm_export.bundle_writer import write_bundle
    from edge_lstm_export.scaler import Scaler
    from edge_lstm_export.stack import Stack

    rng = np.random.default_rng(42)
    scaler = Scaler("minmax", np.array([104.0]), np.array([1 / 518.0]), np.array([104.0]), np.array([1 / 518.0]))
    stacks = {
        "tiny-lstm": Stack((recurrent("lstm", 1, 8, rng),), (dense(8, 1, rng),), window=WINDOW),
        "tiny-gru": Stack((recurrent("gru", 1, 6, rng),), (dense(6, 1, rng),), window=WINDOW),
    }
    return {
        name: write_bundle(stack, root / name, name=name, features=["passengers"], targets=["passengers"], scaler=scaler)
        for name, stack in stacks.items()
    }


@pytest.fixture(scope="session")
def bundle_dir():
    """A directory (world-readable) holding the `tiny-lstm` and `tiny-gru` bundles.

    Writing them needs the export side (onnx); a device-only test run skips what uses them.
    """
    pytest.importorskip("onnx", reason="writing test bundles needs the export side (onnx)")
    root = Path(tempfile.mkdtemp(prefix="edge-bundles-"))
    build_bundles(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_bundle(bundle_dir) -> Path:
    """The `tiny-lstm` bundle's directory."""
    return bundle_dir / "tiny-lstm"
