"""The onnxruntime step engine, called through IOBinding with preallocated, pre-bound buffers.

Why this call path (the seed's 2x50 LSTM step model, one thread, p50 per call at batch 1,
measured side by side on this machine kind): plain `session.run(None, {...})` ~19 us, because
every call wraps the numpy inputs and allocates the outputs; IOBinding with buffers bound once
~14.6 us, and ~14.2 us when the binding's C method is called directly (the public wrapper adds
a Python layer); the public `run_with_ort_values` costs ~36 us in its Python wrapper (avoided).
The state is not ping-ponged inside the engine: it lives in the runtime's state table, which
gathers each stream's rows straight into the bound input buffer and scatters the bound output
buffer back, so one binding per batch size does (cached; every binding points into the same
grown-on-demand buffers, so changing the batch size costs nothing after its first call).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_lstm.errors import BackendUnavailableError

#: Bindings kept per engine (one per batch size seen); beyond this the cache starts over.
_MAX_BINDINGS = 256


class OnnxStep:
    """`y, state_out = step(x, state)` on onnxruntime's CPU provider."""

    name = "onnx"

    def __init__(
        self,
        model: bytes | str | Path,
        *,
        precision: str = "fp32",
        threads: int = 1,
        io: dict[str, str] | None = None,
        source: str = "model.onnx",
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - onnxruntime is a base dependency
            raise BackendUnavailableError(
                f"backend onnx: onnxruntime is not installed ({exc}); pip install onnxruntime"
            ) from None
        self.precision = precision
        self.threads = int(threads)
        names = {"x": "x", "state": "state", "y": "y", "state_out": "state_out", **(io or {})}
        self._x_name, self._s_name = names["x"], names["state"]
        self._y_name, self._so_name = names["y"], names["state_out"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if isinstance(model, (str, Path)):
            model = Path(model).read_bytes()
        try:
            self._session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendUnavailableError(
                f"{source}: onnxruntime cannot load it ({exc}); re-export the bundle"
            ) from None
        shapes = {a.name: a.shape for a in (*self._session.get_inputs(), *self._session.get_outputs())}
        missing = [n for n in names.values() if n not in shapes]
        if missing:
            raise BackendUnavailableError(
                f"{source}: the step model has no tensor(s) {missing}; it has {sorted(shapes)} "
                "(the bundle's io names and its model disagree: re-export the bundle)"
            )
        self.features = int(shapes[self._x_name][1])
        self.state_size = int(shapes[self._s_name][1])
        self.outputs = int(shapes[self._y_name][1])
        self._ort = ort
        # The C binding under `run_with_iobinding` skips a Python layer (~0.4 us a call);
        # fall back to the public call should a future onnxruntime move it.
        inner = getattr(self._session, "_sess", None)
        self._raw = getattr(inner, "run_with_iobinding", None)
        self._capacity = 0
        self.generation = 0
        self._bindings: dict[int, object] = {}
        self._reserve(16)

    # -- buffers -----------------------------------------------------------------------------
    def _reserve(self, batch: int) -> None:
        if batch <= self._capacity:
            return
        cap = max(batch, 2 * self._capacity)
        self._x = np.zeros((cap, self.features), np.float32)
        self._s = np.zeros((cap, self.state_size), np.float32)
        self._y = np.zeros((cap, self.outputs), np.float32)
        self._so = np.zeros((cap, self.state_size), np.float32)
        self._capacity = cap
        self._bindings.clear()  # they point at the old buffers
        self.generation += 1  # views handed out by buffers() before are stale now

    def _bind(self, batch: int):
        if len(self._bindings) >= _MAX_BINDINGS:
            self._bindings.clear()
        io = self._session.io_binding()
        f32 = np.float32
        io.bind_input(self._x_name, "cpu", 0, f32, [batch, self.features], self._x.ctypes.data)
        io.bind_input(self._s_name, "cpu", 0, f32, [batch, self.state_size], self._s.ctypes.data)
        io.bind_output(self._y_name, "cpu", 0, f32, [batch, self.outputs], self._y.ctypes.data)
        io.bind_output(self._so_name, "cpu", 0, f32, [batch, self.state_size], self._so.ctypes.data)
        entry = (io, getattr(io, "_iobinding", None))
        self._bindings[batch] = entry
        return entry

    def buffers(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """The bound input buffers `x[batch, F]`, `state[batch, S]`: write them, then `run(batch)`.

        The views stay valid until `generation` changes (a larger batch reallocates them).
        """
        if batch > self._capacity:
            self._reserve(batch)
        return self._x[:batch], self._s[:batch]

    def run(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Step the first `batch` rows of the input buffers; return views of the bound outputs.

        The returned arrays are the engine's own buffers: valid until the next call.
        """
        entry = self._bindings.get(batch)
        if entry is None:
            if batch > self._capacity:
                self._reserve(batch)
            entry = self._bind(batch)
        if self._raw is not None and entry[1] is not None:
            self._raw(entry[1], None)
        else:
            self._session.run_with_iobinding(entry[0])
        return self._y[:batch], self._so[:batch]

    def step(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance every row of `state` by one sample of `x` (views valid until the next call)."""
        batch = len(x)
        xb, sb = self.buffers(batch)
        xb[...] = x
        sb[...] = state
        return self.run(batch)

    def run_window(self, windows: np.ndarray) -> np.ndarray:
        """Forecast for each window `[N, T, F]` from zero state (the window model's answer)."""
        windows = np.asarray(windows, np.float32)
        state = np.zeros((windows.shape[0], self.state_size), np.float32)
        y = None
        for t in range(windows.shape[1]):
            y, state = self.step(windows[:, t, :], state)
            y, state = y.copy(), state.copy()
        return y
