"""Pick and open a step engine for a bundle: `onnx`, `litert`, `numpy`, or `auto`.

`auto` tries onnx (onnxruntime), then litert (ai-edge-litert, or the legacy tflite-runtime),
then numpy, and takes the first one that is installed and has a variant in the bundle; it
logs which it took and why it skipped the others (also kept as `engine.selection`). A variant
that fails its sha256 is not skipped: `BundleIntegrityError` stops `auto` there, because a
tampered or half-copied bundle must be noticed, not run on whatever variant still matches.
Engine modules are imported only when asked for, so a device without onnxruntime or LiteRT
still runs on NumPy.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edge_lstm.errors import BackendUnavailableError, BundleError, BundleIntegrityError, ConfigError

log = logging.getLogger("edge_lstm.backends")

BACKENDS = ("onnx", "litert", "numpy")
AUTO_ORDER = BACKENDS


def open_backend(bundle: Any, name: str = "auto", precision: str | None = None, threads: int = 1) -> Any:
    """An engine for `bundle` (a `Bundle` or its path) with `step(x, state) -> (y, state_out)`.

    Raises ConfigError for an unknown name, BundleError when the bundle has no such variant,
    BackendUnavailableError when the engine is not installed (or, for `auto`, when none is).
    """
    if not hasattr(bundle, "manifest"):
        from edge_lstm.bundle import Bundle

        bundle = Bundle.open(bundle)
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    if name != "auto":
        opener = _OPENERS.get(name)
        if opener is None:
            raise ConfigError(f"backend {name!r} is unknown; choose one of auto, {', '.join(BACKENDS)}")
        engine = opener(bundle, precision, threads)
        _note(engine, f"{name}: asked for by name")
        return engine
    skipped = []
    for candidate in AUTO_ORDER:
        try:
            engine = _OPENERS[candidate](bundle, precision, threads)
        except BundleIntegrityError:
            raise
        except (BackendUnavailableError, BundleError) as exc:
            skipped.append(f"{candidate} ({exc})")
            continue
        why = f"auto picked {candidate} ({engine.precision})"
        if skipped:
            why += "; skipped " + "; ".join(skipped)
        log.info("bundle %s: %s", bundle.path, why)
        _note(engine, why)
        return engine
    raise BackendUnavailableError(f"bundle {bundle.path}: no backend could open it: " + "; ".join(skipped))


def _note(engine: Any, why: str) -> None:
    try:
        engine.selection = why
    except AttributeError:  # an engine with __slots__: the log line still says it
        pass


def _open_onnx(bundle: Any, precision: str | None, threads: int) -> Any:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise BackendUnavailableError("onnxruntime is not installed; pip install onnxruntime") from None
    from edge_lstm.backends.onnx_backend import OnnxStep

    variant = bundle.variant("onnx", precision)
    return OnnxStep(
        bundle.read_variant(variant),
        precision=variant.precision,
        threads=threads,
        io=bundle.manifest.get("io"),
        source=str(variant.path),
    )


def _open_litert(bundle: Any, precision: str | None, threads: int) -> Any:
    variant = bundle.variant("litert", precision)
    from edge_lstm.backends.litert_backend import LiteRTStep, interpreter_class

    interpreter_class()  # BackendUnavailableError before reading the file when none is installed
    return LiteRTStep(
        bundle.read_variant(variant),
        num_threads=threads,
        precision=variant.precision,
        io=bundle.manifest.get("io"),
    )


def _open_numpy(bundle: Any, precision: str | None, threads: int) -> Any:
    from edge_lstm.backends.numpy_backend import NumpyStep

    variant = bundle.variant("numpy", precision)
    return NumpyStep.from_arrays(bundle.manifest, bundle.read_weights(), precision=variant.precision)


_OPENERS = {"onnx": _open_onnx, "litert": _open_litert, "numpy": _open_numpy}


class BufferedStep:
    """Gives any `step(x, state)` engine the runtime's `buffers(batch)` / `run(batch)` calls.

    Engines that keep their own bound buffers (onnx) provide these themselves; for the others
    the inputs are staged in preallocated arrays here, so the runtime has one code path.
    `generation` changes whenever the staged arrays are reallocated, so a caller may keep the
    views of `buffers(batch)` between calls as long as it stays the same.
    """

    def __init__(self, engine: Any, features: int, state_size: int) -> None:
        self.engine = engine
        self.name = getattr(engine, "name", type(engine).__name__)
        self.precision = getattr(engine, "precision", "fp32")
        self.features = int(features)
        self.state_size = int(state_size)
        self._x = np.zeros((0, self.features), np.float32)
        self._s = np.zeros((0, self.state_size), np.float32)
        self.generation = 0

    def buffers(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Input arrays `x[batch, F]`, `state[batch, S]` to fill before `run(batch)` (valid
        until `generation` changes)."""
        if batch > len(self._x):
            cap = max(batch, 2 * len(self._x), 16)
            self._x = np.zeros((cap, self.features), np.float32)
            self._s = np.zeros((cap, self.state_size), np.float32)
            self.generation += 1
        return self._x[:batch], self._s[:batch]

    def run(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Step the first `batch` staged rows."""
        return self.engine.step(self._x[:batch], self._s[:batch])

    def step(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The wrapped engine's own step."""
        return self.engine.step(x, state)


def bound(engine: Any, features: int, state_size: int) -> Any:
    """`engine` itself when it has `buffers`/`run`, else a `BufferedStep` around it."""
    if hasattr(engine, "buffers") and hasattr(engine, "run"):
        return engine
    return BufferedStep(engine, features, state_size)

