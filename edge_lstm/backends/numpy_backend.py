"""The NumPy step engine: the reference every other backend is tested against.

It runs the same packed-state step as the ONNX and TFLite variants, from `weights.npz`, with
no engine installed. It is also built straight from an export `Stack` (in float64) to serve
as the exporter's oracle, so the recurrent maths exists once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edge_lstm.activations import resolve


@dataclass(frozen=True)
class LayerWeights:
    """One recurrent layer: canonical gate order (LSTM i,f,g,o; GRU z,r,h), `x @ kernel`."""

    kind: str
    units: int
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray
    recurrent_bias: np.ndarray | None = None
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    reset_after: bool = True


@dataclass(frozen=True)
class DenseWeights:
    """One head layer: `activation(x @ kernel + bias)`."""

    kernel: np.ndarray
    bias: np.ndarray
    activation: str = "linear"


class NumpyStep:
    """`y, state_out = step(x, state)` for a packed-state LSTM/GRU stack, in NumPy: per-step
    Dense layers on the sample (`pre`), the recurrent layers, then the head."""

    name = "numpy"

    def __init__(
        self,
        layers: Sequence[LayerWeights],
        head: Sequence[DenseWeights],
        output_scale: np.ndarray | None = None,
        output_offset: np.ndarray | None = None,
        dtype: type = np.float32,
        precision: str = "fp32",
        pre: Sequence[DenseWeights] = (),
    ) -> None:
        self.dtype = np.dtype(dtype)
        self.precision = precision
        cast = lambda a: None if a is None else np.ascontiguousarray(a, self.dtype)  # noqa: E731
        self._layers = []
        at = 0
        for layer in layers:
            width = layer.units * (2 if layer.kind == "lstm" else 1)
            fused = np.concatenate([layer.kernel, layer.recurrent_kernel], axis=0)
            self._layers.append(
                (
                    layer,
                    cast(fused),
                    cast(layer.recurrent_kernel),
                    cast(layer.bias),
                    cast(layer.recurrent_bias),
                    resolve(layer.activation),
                    resolve(layer.recurrent_activation),
                    at,
                )
            )
            at += width
        self.state_size = at
        self._pre = [(cast(d.kernel), cast(d.bias), resolve(d.activation)) for d in pre]
        self.features = int((pre[0] if pre else layers[0]).kernel.shape[0])
        self._head = [(cast(d.kernel), cast(d.bias), resolve(d.activation)) for d in head]
        self.outputs = int(head[-1].kernel.shape[1])
        self._out_scale = cast(output_scale)
        self._out_offset = cast(output_offset)

    @classmethod
    def from_arrays(
        cls, manifest: Mapping, arrays: Mapping[str, np.ndarray], **kwargs
    ) -> "NumpyStep":
        """Build from a bundle's manifest and the contents of its `weights.npz`."""
        layers = [
            LayerWeights(
                kind=spec["kind"],
                units=int(spec["units"]),
                kernel=arrays[f"rnn{k}.kernel"],
                recurrent_kernel=arrays[f"rnn{k}.recurrent_kernel"],
                bias=arrays[f"rnn{k}.bias"],
                recurrent_bias=arrays.get(f"rnn{k}.recurrent_bias"),
                activation=spec.get("activation", "tanh"),
                recurrent_activation=spec.get("recurrent_activation", "sigmoid"),
                reset_after=bool(spec.get("reset_after", True)),
            )
            for k, spec in enumerate(manifest["state"]["layers"])
        ]
        head, pre = (
            [
                DenseWeights(arrays[f"{key}{j}.kernel"], arrays[f"{key}{j}.bias"], spec["activation"])
                for j, spec in enumerate(manifest.get(part, []))
            ]
            for key, part in (("dense", "head"), ("pre", "pre"))
        )
        return cls(
            layers,
            head,
            pre=pre,
            output_scale=arrays.get("output.scale"),
            output_offset=arrays.get("output.offset"),
            **kwargs,
        )

    def step(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance every row of `state` by one sample of `x`; return the forecast and new state."""
        x = np.asarray(x, self.dtype)
        state = np.asarray(state, self.dtype)
        out = np.empty_like(state)
        inp = x
        for kernel, bias, act in self._pre:
            inp = act(inp @ kernel + bias)
        for layer, fused, rkernel, bias, rbias, act, ract, at in self._layers:
            u = layer.units
            h = state[:, at : at + u]
            if layer.kind == "lstm":
                c = state[:, at + u : at + 2 * u]
                z = np.concatenate([inp, h], axis=1) @ fused
                z += bias
                i, f, g, o = ract(z[:, :u]), ract(z[:, u : 2 * u]), act(z[:, 2 * u : 3 * u]), ract(z[:, 3 * u :])
                c_new = f * c + i * g
                h_new = o * act(c_new)
                out[:, at + u : at + 2 * u] = c_new
            else:
                xz = inp @ fused[: inp.shape[1]] + bias
                if layer.reset_after:
                    hz = h @ rkernel + rbias
                    zg = ract(xz[:, :u] + hz[:, :u])
                    rg = ract(xz[:, u : 2 * u] + hz[:, u : 2 * u])
                    cand = act(xz[:, 2 * u :] + rg * hz[:, 2 * u :])
                else:
                    hz = h @ rkernel[:, : 2 * u] + rbias[: 2 * u]
                    zg = ract(xz[:, :u] + hz[:, :u])
                    rg = ract(xz[:, u : 2 * u] + hz[:, u:])
                    cand = act(xz[:, 2 * u :] + (rg * h) @ rkernel[:, 2 * u :] + rbias[2 * u :])
                h_new = zg * h + (1.0 - zg) * cand
            out[:, at : at + u] = h_new
            inp = h_new
        for kernel, bias, act in self._head:
            inp = act(inp @ kernel + bias)
        if self._out_scale is not None:
            inp = inp * self._out_scale + self._out_offset
        return inp.astype(self.dtype, copy=False), out

    def run_window(self, windows: np.ndarray) -> np.ndarray:
        """Forecast for each window `[N, T, F]`, stepping from zero state: the window model's answer."""
        windows = np.asarray(windows, self.dtype)
        state = np.zeros((windows.shape[0], self.state_size), self.dtype)
        y = None
        for t in range(windows.shape[1]):
            y, state = self.step(windows[:, t, :], state)
        return y
