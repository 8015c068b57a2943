"""The LiteRT step engine: runs a bundle's `.tflite` step model.

It uses `ai_edge_litert` (works with numpy 2) and falls back to `tflite_runtime` (its last
release, 2.14, needs numpy < 2). Tensors are addressed by index with `set_tensor` /
`invoke` / `get_tensor`: about 7 us per step for the 2x50 model, where a `SignatureRunner`
costs twice that and, while alive, makes `invoke()` refuse to run.

The batch axis is resized on demand, and resizing means `allocate_tensors()` (~50 us for the
2x50 model at batch 64, more for larger batches). A runtime alternates batch sizes (`push`
at 1 or W rows, `push_many` at its stream count), so one interpreter is kept per recent
batch size (up to `MAX_BATCH_SIZES`, least recently used dropped first): switching between
them costs a dict lookup. Each holds its own copy of the model's tensors (the 2x50 model:
~120 KB of weights each, plus activations of its batch).

The runtime's `buffers(batch)` / `run(batch)` calls are served here (inputs staged in arrays
this engine owns, always contiguous float32) rather than by the registry's generic wrapper:
that skips a call layer and `step`'s input conversions, ~0.7 us of a ~5.5 us step at batch 1.
The staging arrays are not views of the interpreter's tensors on purpose: LiteRT's `invoke()`
refuses to run while any such view is alive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_lstm.errors import BackendUnavailableError

INSTALL_HINT = "pip install 'edge-lstm[litert]'"
#: Interpreters kept, one per batch size (see the module docstring).
MAX_BATCH_SIZES = 4


def interpreter_class() -> type:
    """LiteRT's `Interpreter`, or tflite-runtime's; raise `BackendUnavailableError` if neither."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise BackendUnavailableError(
                "the litert backend needs ai-edge-litert (or tflite-runtime), and neither is "
                f"installed; install it with: {INSTALL_HINT}"
            ) from None
    return Interpreter


class LiteRTStep:
    """`y, state_out = step(x, state)` on a TFLite step model.

    `model` is a `.tflite` path or its bytes. The model's I/O tensors are found by the
    manifest's names (`x`, `state`, `y`, `state_out`), else through its signature.

    The arrays `step` returns are **copies** (LiteRT's `get_tensor` copies): they stay
    valid after later steps and may be kept or written to.
    """

    name = "litert"
    #: `run`/`step` return new arrays (get_tensor copies): the runtime need not copy them again.
    returns_copies = True

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        num_threads: int = 1,
        precision: str = "fp32",
        io: dict[str, str] | None = None,
    ) -> None:
        interpreter = interpreter_class()
        source = "<bytes>" if isinstance(model, (bytes, bytearray)) else str(model)
        kwargs = (
            {"model_content": bytes(model)}
            if isinstance(model, (bytes, bytearray))
            else {"model_path": str(model)}
        )
        self._new = lambda: interpreter(num_threads=num_threads, **kwargs)
        try:
            self._it = self._new()
        except (SystemError, AttributeError, ImportError) as exc:
            # tflite-runtime 2.14 imports under numpy 2 but fails here.
            raise BackendUnavailableError(
                f"{source}: the TFLite interpreter could not start ({type(exc).__name__}: {exc}); "
                f"tflite-runtime needs numpy<2. Use ai-edge-litert instead: {INSTALL_HINT}"
            ) from exc
        except ValueError as exc:
            raise BackendUnavailableError(f"{source}: not a loadable TFLite model ({exc})") from exc
        self.source = source
        self.precision = precision
        names = {"x": "x", "state": "state", "y": "y", "state_out": "state_out", **(io or {})}
        ins = self._index(self._it.get_input_details(), names, ("x", "state"), "inputs")
        outs = self._index(self._it.get_output_details(), names, ("y", "state_out"), "outputs")
        self._x, self._s = ins["x"]["index"], ins["state"]["index"]
        self._y, self._so = outs["y"]["index"], outs["state_out"]["index"]
        self.features = int(ins["x"]["shape_signature"][-1])
        self.state_size = int(ins["state"]["shape_signature"][-1])
        self.outputs = int(outs["y"]["shape_signature"][-1])
        self._batch = -1  # tensors not allocated yet
        self._by_batch: dict[int, object] = {}  # batch size -> interpreter allocated for it
        # buffers()/run(): staging arrays (capacity rows), their views for the last batch run
        self._xs = np.zeros((0, self.features), np.float32)
        self._ss = np.zeros((0, self.state_size), np.float32)
        self._staged: tuple = (-1, None, None)
        self.generation = 0  # bumped when the staging arrays are reallocated

    def _index(self, details: list[dict], names: dict, keys: tuple, side: str) -> dict[str, dict]:
        by_name = {d["name"]: d for d in details}
        by_index = {d["index"]: d for d in details}
        signature = self._signature_map(side)
        found: dict[str, dict] = {}
        for key in keys:
            wanted = names[key]
            if wanted in by_name:
                found[key] = by_name[wanted]
            elif wanted in signature and signature[wanted] in by_index:
                found[key] = by_index[signature[wanted]]
            else:
                raise BackendUnavailableError(
                    f"{self.source}: no {side[:-1]} tensor named {wanted!r} (it has "
                    f"{sorted(by_name)}); re-export the bundle with edge-lstm export, whose "
                    "TFLite models name their tensors x, state, y, state_out"
                )
        return found

    def _signature_map(self, side: str) -> dict[str, int]:
        """Signature name -> tensor index, read without creating a SignatureRunner."""
        full = getattr(self._it, "_get_full_signature_list", lambda: {})()
        for signature in full.values():
            return dict(signature.get(side, {}))
        return {}

    def _resize(self, batch: int) -> None:
        """Make `self._it` an interpreter allocated for `batch` rows (cached per batch size)."""
        cache = self._by_batch
        it = cache.pop(batch, None)
        if it is None:
            if len(cache) >= MAX_BATCH_SIZES:
                oldest = next(iter(cache))
                it = cache.pop(oldest)  # reuse the least recently used one: re-allocate it
            elif cache or self._batch != -1:
                it = self._new()
            else:
                it = self._it  # the first batch size gets the interpreter opened in __init__
            it.resize_tensor_input(self._x, [batch, self.features], strict=True)
            it.resize_tensor_input(self._s, [batch, self.state_size], strict=True)
            it.allocate_tensors()
        cache[batch] = it  # most recently used last
        self._it = it
        self._batch = batch

    def buffers(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Input arrays `x[batch, F]`, `state[batch, S]` to fill before `run(batch)` (valid
        until `generation` changes)."""
        if batch > len(self._xs):
            cap = max(batch, 2 * len(self._xs), 16)
            self._xs = np.zeros((cap, self.features), np.float32)
            self._ss = np.zeros((cap, self.state_size), np.float32)
            self._staged = (-1, None, None)
            self.generation += 1
        return self._xs[:batch], self._ss[:batch]

    def run(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Step the first `batch` staged rows (see `buffers`); return copies of `y` [batch,O]
        and `state_out` [batch,S], like `step`."""
        staged, x, state = self._staged
        if staged != batch or batch != self._batch:
            if batch > len(self._xs):
                raise ValueError(f"{self.source}: run({batch}) before buffers({batch})")
            if batch != self._batch:
                self._resize(batch)
            x, state = self._xs[:batch], self._ss[:batch]
            self._staged = (batch, x, state)
        it = self._it
        it.set_tensor(self._x, x)
        it.set_tensor(self._s, state)
        it.invoke()
        return it.get_tensor(self._y), it.get_tensor(self._so)

    def step(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance every row of `state` [B,S] by one sample of `x` [B,F]; return copies of
        `y` [B,O] and `state_out` [B,S]."""
        x = np.ascontiguousarray(x, np.float32)
        state = np.ascontiguousarray(state, np.float32)
        if x.shape[0] != self._batch:
            self._resize(x.shape[0])
        try:
            self._it.set_tensor(self._x, x)
            self._it.set_tensor(self._s, state)
        except ValueError as exc:
            raise ValueError(
                f"{self.source}: step expects x[B,{self.features}] and state[B,{self.state_size}] "
                f"float32 with the same B, got x{x.shape} and state{state.shape} ({exc})"
            ) from None
        self._it.invoke()
        return self._it.get_tensor(self._y), self._it.get_tensor(self._so)
