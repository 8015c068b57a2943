"""Activation functions by their Keras names, in NumPy.

These are the definitions the NumPy backend runs and the ONNX and TFLite emitters reproduce;
they follow Keras 3 (for example `hard_sigmoid(x) = relu6(x + 3) / 6` and `leaky_relu` slope
0.2). Where another framework or an older Keras means something else by the same name, the
name says so:

- `hard_sigmoid_keras2`: `clip(0.2 x + 0.5, 0, 1)`, Keras 1.x/2.x's hard_sigmoid (the default
  recurrent activation of Keras <= 2.2 LSTMs);
- `gelu_tanh`: GELU's tanh approximation (`nn.GELU(approximate="tanh")`); `gelu` is exact (erf);
- `leaky_relu:0.01`, `elu:0.5`: a slope or alpha other than the Keras default, written after a
  colon (`nn.LeakyReLU()` is `leaky_relu:0.01`, Keras' `LeakyReLU` layer `leaky_relu:0.3`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805
_erf = np.vectorize(math.erf, otypes=[np.float64])


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, computed without overflow for large |x|."""
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def hard_sigmoid(x: np.ndarray) -> np.ndarray:
    """Keras 3's piecewise-linear sigmoid: relu6(x + 3) / 6."""
    return np.clip(x / 6.0 + 0.5, 0.0, 1.0)


def hard_sigmoid_keras2(x: np.ndarray) -> np.ndarray:
    """Keras 1.x/2.x's piecewise-linear sigmoid: clip(0.2 x + 0.5, 0, 1)."""
    return np.clip(0.2 * x + 0.5, 0.0, 1.0)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "sigmoid": sigmoid,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.2 * x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "selu": lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "swish": lambda x: x * sigmoid(x),
    "silu": lambda x: x * sigmoid(x),
    "hard_sigmoid": hard_sigmoid,
    "hard_silu": lambda x: x * hard_sigmoid(x),
    "hard_swish": lambda x: x * hard_sigmoid(x),
    "mish": lambda x: x * np.tanh(np.logaddexp(0.0, x)),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(x.dtype)),
    "gelu_tanh": _gelu_tanh,
    "hard_sigmoid_keras2": hard_sigmoid_keras2,
    "exponential": np.exp,
    "softmax": _softmax,
    "log_softmax": _log_softmax,
}

#: Activations with one parameter, written `name:value`; the bare name means the Keras default.
PARAMETRIZED: dict[str, tuple[float, Callable[[float], Callable[[np.ndarray], np.ndarray]]]] = {
    "leaky_relu": (0.2, lambda a: lambda x: np.where(x >= 0, x, a * x)),
    "elu": (1.0, lambda a: lambda x: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0.0)))),
}


def parse(name: str) -> tuple[str, float | None]:
    """`"leaky_relu:0.01"` -> `("leaky_relu", 0.01)`; a plain name -> `(name, None)`.

    Raises KeyError for a name that is not an activation edge-lstm knows.
    """
    base, sep, value = name.partition(":")
    if not sep:
        if name not in ACTIVATIONS:
            raise KeyError(name)
        return name, None
    if base not in PARAMETRIZED:
        raise KeyError(name)
    try:
        return base, float(value)
    except ValueError:
        raise KeyError(name) from None


def named(base: str, value: float | None = None) -> str:
    """The canonical name of `base` with parameter `value` (the bare name for the default)."""
    if value is None or float(value) == PARAMETRIZED[base][0]:
        return base
    return f"{base}:{float(value)!r}"


def resolve(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The NumPy function for an activation name, parametrized ones included (KeyError if unknown)."""
    base, value = parse(name)
    if value is None:
        return ACTIVATIONS[base]
    return PARAMETRIZED[base][1](value)


def known(name: str) -> bool:
    """True when `resolve(name)` would succeed."""
    try:
        parse(name)
    except KeyError:
        return False
    return True


def supported() -> str:
    """The accepted names, for error messages."""
    fixed = ", ".join(sorted(ACTIVATIONS))
    return f"{fixed}; with a parameter: {', '.join(f'{b}:VALUE' for b in PARAMETRIZED)}"
