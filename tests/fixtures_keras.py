"""Session fixtures: real Keras models trained for a few epochs on the airline series.

`keras_models` maps a fixture name to a `SourceModel`: the saved file (`.keras` or legacy
`.h5`), held-out windows (the last 20%) in model units and the model's own `predict` for them.
Models are trained on first use, so a test that needs only "seed-lstm" does not pay for the
others. Data are scaled with `datasets.minmax` fitted on the whole series (the tutorial
recipe), so any test can rebuild the scaler: `minmax(airline())` for the univariate models and
`minmax(three_features())` for "lstm-3features".

Keras is imported inside the fixture (`pytest.importorskip`), so a machine without TensorFlow
collects this plugin and skips the tests that use it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datasets import SourceModel, airline, minmax, windows

WINDOW = 12
HOLDOUT = 0.2
BATCH = 16


def univariate() -> np.ndarray:
    """The airline series minmax-scaled to [0, 1], shape [144, 1], float32."""
    series = airline()
    offset, scale = minmax(series)
    return ((series[:, None] - offset) * scale).astype(np.float32)


def three_features() -> np.ndarray:
    """Unscaled [143, 3]: passengers, month-over-month change, sin(2*pi*month/12).

    The first month is dropped because it has no change. Scale with `minmax(...)`.
    """
    series = airline().astype(np.float64)
    month = np.arange(len(series)) % 12
    season = np.sin(2.0 * np.pi * month / 12.0)
    return np.stack([series[1:], np.diff(series), season[1:]], axis=1)


def three_features_scaled() -> np.ndarray:
    """`three_features()` with each column minmax-scaled to [0, 1], float32."""
    raw = three_features()
    offset, scale = minmax(raw)
    return ((raw - offset) * scale).astype(np.float32)


def split(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Windows of `data`, the first 80% for training and the last 20% held out."""
    x, y = windows(data, WINDOW)
    cut = int(round(len(x) * (1.0 - HOLDOUT)))
    return x[:cut], y[:cut], x[cut:], y[cut:]


@dataclass(frozen=True)
class Recipe:
    """How to build and train one fixture model, and the files to save it as."""

    build: Callable[[Any], Any]  # keras module -> uncompiled keras.Model
    data: Callable[[], np.ndarray]
    epochs: int
    saves: tuple[tuple[str, str], ...]  # (fixture name, file suffix)
    seed: int = 7


def _seed_lstm(keras: Any) -> Any:
    return keras.Sequential(
        [
            keras.Input((WINDOW, 1)),
            keras.layers.LSTM(50, return_sequences=True),
            keras.layers.LSTM(50),
            keras.layers.Dense(1),
        ]
    )


def _gru(reset_after: bool) -> Callable[[Any], Any]:
    def build(keras: Any) -> Any:
        return keras.Sequential(
            [
                keras.Input((WINDOW, 1)),
                keras.layers.GRU(16, reset_after=reset_after),
                keras.layers.Dense(1),
            ]
        )

    return build


def _gru_no_bias(keras: Any) -> Any:
    return keras.Sequential(
        [
            keras.Input((WINDOW, 1)),
            keras.layers.GRU(8, use_bias=False, reset_after=False),
            keras.layers.Dense(1),
        ]
    )


def _lstm_3features(keras: Any) -> Any:
    return keras.Sequential(
        [
            keras.Input((WINDOW, 3)),
            keras.layers.LSTM(16),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3),
        ]
    )


def _functional_sigmoid(keras: Any) -> Any:
    """Functional API, window left open (None), Dropout, a sigmoid head."""
    x = keras.Input((None, 1), name="passengers")
    h = keras.layers.LSTM(16)(x)
    h = keras.layers.Dropout(0.2)(h)
    y = keras.layers.Dense(1, activation="sigmoid")(h)
    return keras.Model(x, y)


def _lstm_hard_sigmoid(keras: Any) -> Any:
    return keras.Sequential(
        [
            keras.Input((WINDOW, 1)),
            keras.layers.LSTM(16, recurrent_activation="hard_sigmoid"),
            keras.layers.Dense(1),
        ]
    )


RECIPES: dict[str, Recipe] = {
    "seed-lstm": Recipe(
        _seed_lstm, univariate, 8, (("seed-lstm", ".keras"), ("seed-lstm-h5", ".h5"))
    ),
    "gru-reset-after": Recipe(
        _gru(True),
        univariate,
        8,
        (("gru-reset-after", ".keras"), ("gru-reset-after-h5", ".h5")),
    ),
    "gru-reset-before": Recipe(_gru(False), univariate, 8, (("gru-reset-before", ".keras"),)),
    "gru-no-bias": Recipe(_gru_no_bias, univariate, 8, (("gru-no-bias", ".keras"),)),
    "lstm-3features": Recipe(
        _lstm_3features, three_features_scaled, 8, (("lstm-3features", ".keras"),)
    ),
    "functional-sigmoid": Recipe(
        _functional_sigmoid, univariate, 8, (("functional-sigmoid", ".keras"),)
    ),
    "lstm-hard-sigmoid": Recipe(
        _lstm_hard_sigmoid, univariate, 8, (("lstm-hard-sigmoid", ".keras"),)
    ),
}
#: Every fixture name, for parametrizing tests at collection time (no training needed).
KERAS_MODEL_NAMES: tuple[str, ...] = tuple(n for r in RECIPES.values() for n, _ in r.saves)
_RECIPE_OF = {name: key for key, r in RECIPES.items() for name, _ in r.saves}


class KerasModels(Mapping):
    """Fixture name -> `SourceModel`; each recipe trains when one of its names is first read."""

    def __init__(self, keras: Any, directory: Path) -> None:
        self._keras = keras
        self._dir = directory
        self._models: dict[str, SourceModel] = {}
        #: Seconds spent training + predicting + saving, per recipe (for the report).
        self.seconds: dict[str, float] = {}

    def __getitem__(self, name: str) -> SourceModel:
        if name not in _RECIPE_OF:
            known = ", ".join(KERAS_MODEL_NAMES)
            raise KeyError(f"no keras fixture model {name!r}; known: {known}")
        if name not in self._models:
            self._train(_RECIPE_OF[name])
        return self._models[name]

    def __iter__(self) -> Iterator[str]:
        return iter(KERAS_MODEL_NAMES)

    def __len__(self) -> int:
        return len(KERAS_MODEL_NAMES)

    def _train(self, key: str) -> None:
        keras, recipe = self._keras, RECIPES[key]
        started = time.perf_counter()
        keras.utils.set_random_seed(recipe.seed)
        model = recipe.build(keras)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", jit_compile=False)
        x_train, y_train, x_test, _ = split(recipe.data())
        model.fit(x_train, y_train, epochs=recipe.epochs, batch_size=BATCH, verbose=0)
        expected = model.predict(x_test, batch_size=len(x_test), verbose=0)
        for name, suffix in recipe.saves:
            path = self._dir / f"{name}{suffix}"
            model.save(path)
            self._models[name] = SourceModel(
                name=name,
                framework="keras",
                path=path,
                windows=x_test,
                expected=np.asarray(expected, np.float32),
                module=model,
            )
        self.seconds[key] = time.perf_counter() - started


@pytest.fixture(scope="session")
def keras_models(tmp_path_factory: pytest.TempPathFactory) -> KerasModels:
    """Trained Keras models by fixture name (see `KERAS_MODEL_NAMES`); skips without Keras."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    keras = pytest.importorskip("keras")
    return KerasModels(keras, tmp_path_factory.mktemp("keras-models"))
