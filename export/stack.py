"""The framework-neutral description of a streamable recurrent stack.

Readers turn a Keras file or a PyTorch module into a `Stack`; emitters turn a `Stack` into
step models. Everything between them speaks this one form, so each framework's quirks
(gate order, bias layout, weight orientation) are dealt with once, in its reader.

Conventions, for every layer:
- weights multiply from the right: `x @ kernel`, kernel shape `[inputs, gates * units]`;
- LSTM gate order along the last axis is (i, f, g, o), as Keras and PyTorch both store it;
- GRU gate order is (z, r, h), as Keras stores it (PyTorch's (r, z, n) is reordered by its reader);
- an LSTM has one bias (PyTorch's two biases are summed); a GRU keeps an input bias and a
  recurrent bias, because with `reset_after` the recurrent bias sits inside the reset gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from edge_lstm.activations import known, supported
from edge_lstm.errors import EdgeLstmError

GATES = {"lstm": 4, "gru": 3}


class UnsupportedModelError(EdgeLstmError, ValueError):
    """Raised when a model holds something that cannot be stepped one sample at a time,
    or a model file cannot be read at all."""

    exit_code = 2


@dataclass(frozen=True)
class Recurrent:
    """One LSTM or GRU layer in canonical layout (see the module docstring)."""

    kind: str
    units: int
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray
    recurrent_bias: np.ndarray | None = None
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    reset_after: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        gates = GATES.get(self.kind)
        if gates is None:
            raise UnsupportedModelError(f"layer {self.name!r}: unknown recurrent kind {self.kind!r}")
        width = gates * self.units
        _expect(self, "kernel", self.kernel, (self.kernel.shape[0], width))
        _expect(self, "recurrent_kernel", self.recurrent_kernel, (self.units, width))
        _expect(self, "bias", self.bias, (width,))
        if self.kind == "gru":
            rb = self.recurrent_bias if self.recurrent_bias is not None else np.zeros(width)
            _expect(self, "recurrent_bias", rb, (width,))
            object.__setattr__(self, "recurrent_bias", np.asarray(rb, np.float64))
        for act in (self.activation, self.recurrent_activation):
            if not known(act):
                raise UnsupportedModelError(
                    f"layer {self.name!r}: activation {act!r} is not supported (supported: {supported()})"
                )

    @property
    def inputs(self) -> int:
        """Number of values this layer reads per step."""
        return int(self.kernel.shape[0])

    @property
    def state_width(self) -> int:
        """Floats of packed state this layer keeps: h and c for an LSTM, h for a GRU."""
        return self.units * (2 if self.kind == "lstm" else 1)


@dataclass(frozen=True)
class Dense:
    """A fully connected layer of the head: `activation(x @ kernel + bias)`."""

    kernel: np.ndarray
    bias: np.ndarray
    activation: str = "linear"
    name: str = ""

    def __post_init__(self) -> None:
        _expect(self, "bias", self.bias, (self.kernel.shape[1],))
        if not known(self.activation):
            raise UnsupportedModelError(
                f"layer {self.name!r}: activation {self.activation!r} is not supported (supported: {supported()})"
            )

    @property
    def units(self) -> int:
        """Number of outputs."""
        return int(self.kernel.shape[1])


@dataclass(frozen=True)
class Stack:
    """A streamable model: per-step Dense layers on each sample (`pre`, often none), recurrent
    layers, then a dense head on the last layer's h.

    Every part works on one time step, so the whole stack steps one sample at a time: a
    Dense (or TimeDistributed(Dense)) before the first recurrent layer transforms each sample
    on its own, and a head after a `return_sequences=True` layer gives, at the last step, the
    forecast the head on the last h gives.
    """

    recurrent: tuple[Recurrent, ...]
    head: tuple[Dense, ...]
    window: int | None = None
    source: dict = field(default_factory=dict)
    #: `y = head(...) * output_scale + output_offset`, set only when a non-linear last
    #: activation keeps the output scaling from folding into the weights.
    output_scale: np.ndarray | None = None
    output_offset: np.ndarray | None = None
    pre: tuple[Dense, ...] = ()

    def __post_init__(self) -> None:
        if not self.recurrent:
            raise UnsupportedModelError("the model has no LSTM or GRU layer: nothing to stream")
        if not self.head:
            raise UnsupportedModelError(
                "the model has no Dense/Linear head after its last recurrent layer"
            )
        width = self.features
        for layer in (*self.pre, *self.recurrent, *self.head):
            if layer.kernel.shape[0] != width:
                raise UnsupportedModelError(
                    f"layer {layer.name!r} expects {layer.kernel.shape[0]} inputs "
                    f"but the layer before it gives {width}"
                )
            width = layer.units

    @property
    def features(self) -> int:
        """Values per input sample."""
        return int((self.pre[0].kernel if self.pre else self.recurrent[0].kernel).shape[0])

    @property
    def outputs(self) -> int:
        """Values per forecast."""
        return self.head[-1].units

    @property
    def state_size(self) -> int:
        """Width of the packed state tensor."""
        return sum(layer.state_width for layer in self.recurrent)

    def state_layout(self) -> list[dict]:
        """Manifest `state.layers`: where each layer's h (and c) sit in the packed state."""
        layout, at = [], 0
        for layer in self.recurrent:
            entry: dict = {"kind": layer.kind, "units": layer.units, "h": [at, at + layer.units]}
            at += layer.units
            if layer.kind == "lstm":
                entry["c"] = [at, at + layer.units]
                at += layer.units
            entry["activation"] = layer.activation
            entry["recurrent_activation"] = layer.recurrent_activation
            if layer.kind == "gru":
                entry["reset_after"] = layer.reset_after
            layout.append(entry)
        return layout

    def with_scaling(self, x_offset, x_scale, y_offset, y_scale) -> "Stack":
        """Fold `x_model = (x - x_offset) * x_scale` and `y = y_model / y_scale + y_offset`
        into the weights, so the stack reads and writes the sensor's own units.

        The output side folds into the last Dense layer when it is linear; otherwise it is
        kept as `output_scale`/`output_offset`, applied after the activation.
        """
        xo, xs = np.asarray(x_offset, np.float64), np.asarray(x_scale, np.float64)
        first = self.pre[0] if self.pre else self.recurrent[0]
        kernel = first.kernel * xs[:, None]
        bias = first.bias - (xo * xs) @ first.kernel
        if self.pre:
            inputs = {"pre": (replace(first, kernel=kernel, bias=bias), *self.pre[1:])}
        else:
            inputs = {"recurrent": (replace(first, kernel=kernel, bias=bias), *self.recurrent[1:])}
        ys, yo = np.asarray(y_scale, np.float64), np.asarray(y_offset, np.float64)
        last = self.head[-1]
        if last.activation != "linear":
            return replace(self, **inputs, output_scale=1.0 / ys, output_offset=yo)
        folded = replace(last, kernel=last.kernel / ys, bias=last.bias / ys + yo)
        return replace(self, **inputs, head=(*self.head[:-1], folded))


def _expect(layer, what: str, array: np.ndarray, shape: tuple) -> None:
    if tuple(np.shape(array)) != tuple(shape):
        raise UnsupportedModelError(
            f"layer {getattr(layer, 'name', '')!r}: {what} has shape {tuple(np.shape(array))}, "
            f"expected {tuple(shape)}"
        )
