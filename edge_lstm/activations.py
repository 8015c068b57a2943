"""Activation functions by their Keras names, in NumPy.

These are the definitions the NumPy backend runs and the ONNX emitter reproduces; they follow
Keras 3 (for example `hard_sigmoid(x) = relu6(x + 3) / 6` and `leaky_relu` slope 0.2).
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
    "exponential": np.exp,
    "softmax": _softmax,
    "log_softmax": _log_softmax,
}
