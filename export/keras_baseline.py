"""The naive ways `edge-lstm bench --keras` times ours against: Keras on the whole window.

Workstation side (needs TensorFlow), so the device package never imports it: the bench asks
for these callables only when given a .keras file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_lstm_export.quiet import framework_chatter_filtered


@framework_chatter_filtered()
def keras_baselines(model_path: str | Path, window: np.ndarray) -> dict[str, Callable[[], object]]:
    """`{"keras-predict": ..., "tf-function": ...}`: one forecast from `window` [1, W, F]
    (model units) the way the seed recipe does it, and through a compiled tf.function.

    Raises ImportError when TensorFlow/Keras is not installed.
    """
    import keras
    import tensorflow as tf

    model = keras.saving.load_model(str(model_path), compile=False)
    compiled = tf.function(model)
    tensor = tf.constant(window)
    return {
        "keras-predict": lambda: model.predict(window, verbose=0),
        "tf-function": lambda: compiled(tensor),
    }
