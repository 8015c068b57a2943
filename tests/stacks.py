"""Hand-built stacks with random weights, for tests of the maths that need no framework."""

from __future__ import annotations

import numpy as np

from edge_lstm_export.stack import Dense, Recurrent, Stack


def recurrent(kind: str, inputs: int, units: int, rng: np.random.Generator, **kw) -> Recurrent:
    """A random LSTM/GRU layer (weights scaled so the gates do not saturate)."""
    g = 4 if kind == "lstm" else 3
    return Recurrent(
        kind, units, rng.normal(0, 0.5, (inputs, g * units)), rng.normal(0, 0.5, (units, g * units)),
        rng.normal(0, 0.3, g * units), rng.normal(0, 0.3, g * units) if kind == "gru" else None, name=f"{kind}{units}", **kw,
    )


def activation_names() -> list[str]:
    """Every activation the emitters must reproduce: each fixed name and each parametrized
    one with a non-default value."""
    from edge_lstm.activations import ACTIVATIONS

    return sorted(ACTIVATIONS) + ["leaky_relu:0.01", "elu:0.5"]


def dense(inputs: int, units: int, rng: np.random.Generator, activation: str = "linear") -> Dense:
    """A random Dense layer."""
    return Dense(rng.normal(0, 0.5, (inputs, units)), rng.normal(0, 0.3, units), activation, name=f"dense{units}")


def seed_like(rng: np.random.Generator | None = None, units: int = 50, window: int = 12) -> Stack:
    """The seed architecture: LSTM(units) -> LSTM(units) -> Dense(1), random weights."""
    rng = rng or np.random.default_rng(0)
    return Stack((recurrent("lstm", 1, units, rng), recurrent("lstm", units, units, rng)), (dense(units, 1, rng),), window=window)


def zoo(rng: np.random.Generator | None = None) -> dict[str, Stack]:
    """One stack per architecture the emitters must handle."""
    rng = rng or np.random.default_rng(1)
    return {
        "lstm2": Stack((recurrent("lstm", 1, 8, rng), recurrent("lstm", 8, 6, rng)), (dense(6, 1, rng),), window=12),
        "gru-reset-after": Stack((recurrent("gru", 3, 5, rng, reset_after=True),), (dense(5, 3, rng),), window=6),
        "gru-reset-before": Stack((recurrent("gru", 3, 5, rng, reset_after=False),), (dense(5, 3, rng),), window=6),
        "gru-lstm-mixed": Stack(
            (recurrent("gru", 2, 5, rng), recurrent("lstm", 5, 4, rng)),
            (dense(4, 4, rng, "relu"), dense(4, 2, rng, "softmax")), window=8,
        ),
        "keras2-hard-sigmoid": Stack(
            (recurrent("lstm", 2, 4, rng, recurrent_activation="hard_sigmoid_keras2"),),
            (dense(4, 1, rng, "leaky_relu:0.01"),), window=5,
        ),
        "pre-dense": Stack(
            (recurrent("lstm", 4, 5, rng), recurrent("gru", 5, 3, rng)), (dense(3, 2, rng),), window=6,
            pre=(dense(3, 6, rng, "gelu_tanh"), dense(6, 4, rng)),
        ),
        "hard-sigmoid-relu": Stack(
            (recurrent("lstm", 2, 4, rng, recurrent_activation="hard_sigmoid", activation="relu"),),
            (dense(4, 1, rng),), window=5,
        ),
    }
