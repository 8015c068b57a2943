"""The model corpus: forecasters built the way public recipes and repositories build them.

Each `Entry` is one model as users write it (the Machine Learning Mastery multivariate LSTM,
the Keras weather tutorial, the TensorFlow time-series tutorial's `lstm_model`, stock
repositories' LSTM/Dropout stacks with a 30-value head, Keras 2 `.h5` files with
`batch_input_shape` and hard_sigmoid, the usual PyTorch `class LSTMModel(nn.Module)`, darts'
`RNNModel`/`BlockRNNModel` modules, Lightning-style modules holding a loss), trained for a
few epochs on a deterministic multivariate series, saved as a user would hand it to
`edge-lstm export`, and described with what the framework itself predicts.

`outcome` is what edge-lstm must do with it: "exact" (the bundle's exact mode equals the
framework on every window), "refused: ..." (a clear message naming the layer and the
reason) or "parity fails" (the export exits 1 and writes nothing). The README's "Models
accepted" table lists these entries (tests/test_corpus.py checks it; regenerate it with
`python tests/corpus.py`; `python tests/corpus.py --measure` prints each exact entry's error).
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import datasets

#: Windows every "exact" entry is checked on (the runtime's exact mode against the framework).
CHECKED_WINDOWS = 52


@dataclass
class Built:
    """A corpus model, trained and saved."""

    source: Any  # the saved file (or the live module for factory-less torch entries)
    window: int
    series: np.ndarray  # [T, F] float32, model units: CHECKED_WINDOWS + window - 1 rows
    predict: Callable[[np.ndarray], np.ndarray]  # the framework itself: windows [N, W, F] -> [N, O]
    export_kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    name: str
    framework: str  # "keras" or "torch"
    recipe: str  # what it is, for the README
    outcome: str  # "exact", "refused: <words of the reason>", "parity fails"
    build: Callable[[Path], Built]
    refused_layer: str = ""  # the layer the refusal must name


def series(rows: int, features: int, seed: int = 0) -> np.ndarray:
    """A deterministic multivariate series in [0, 1] (model units): the airline seasonality and
    trend, mixed per column with other periods and a little noise, like scaled sensor data."""
    air = datasets.airline().astype(np.float64)
    t = np.arange(rows)
    base = np.interp(t % len(air), np.arange(len(air)), (air - air.min()) / (air.max() - air.min()))
    rng = np.random.default_rng(seed)
    cols = []
    for j in range(features):
        period = 6 + 5 * (j % 7)
        phase = rng.uniform(0, 2 * np.pi)
        col = 0.5 * base + 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * t / period + phase)) + 0.2 * rng.random(rows)
        cols.append(col)
    out = np.stack(cols, axis=1)
    return ((out - out.min(axis=0)) / (out.max(axis=0) - out.min(axis=0))).astype(np.float32)


def sliding(data: np.ndarray, window: int) -> np.ndarray:
    """Every window of `data` [T, F]: [T - W + 1, W, F]."""
    return np.stack([data[i : i + window] for i in range(len(data) - window + 1)]).astype(np.float32)


def _train_data(window: int, features: int, targets: int, seed: int = 0, rows: int = 160):
    data = series(rows + CHECKED_WINDOWS + window - 1, features, seed)
    x = sliding(data[:rows], window)[:-1]
    y = data[window:rows, :targets]
    if targets > 1 and targets != features:
        y = np.repeat(data[window:rows, :1], targets, axis=1) * np.linspace(0.5, 1.5, targets)
    return x, y.astype(np.float32), data[rows:]


# ------------------------------------------------------------------------------------ Keras


def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    return keras


def keras2_hard_sigmoid(x):
    """Keras 1.x/2.x's hard_sigmoid, written with Keras 3 ops: the independent reference."""
    keras = _keras()
    return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)


def _fit_keras(model, window: int, features: int, targets: int, epochs: int = 2, seed: int = 0):
    keras = _keras()
    x, y, held = _train_data(window, features, targets, seed)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", jit_compile=False)
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return held


def _keras_entry(make: Callable[[Any], Any], window: int, features: int, targets: int, *, save_as: str = ".keras",
                 export_kwargs: dict | None = None, seed: int = 3) -> Callable[[Path], Built]:
    def build(folder: Path) -> Built:
        keras = _keras()
        keras.utils.set_random_seed(seed)
        model = make(keras)
        held = _fit_keras(model, window, features, targets)
        path = folder / f"model{save_as}"
        model.save(path)

        def predict(windows: np.ndarray) -> np.ndarray:
            out = np.asarray(model.predict(windows, batch_size=256, verbose=0))
            return out[:, -1] if out.ndim == 3 else out

        return Built(path, window, held, predict, dict(export_kwargs or {}))

    return build


def _mlm(window: int) -> Callable[[Any], Any]:
    """Machine Learning Mastery's multivariate LSTM: model.add(LSTM(50, input_shape=(W, 8)))."""

    def make(keras):
        model = keras.Sequential()
        model.add(keras.layers.LSTM(50, input_shape=(window, 8)))
        model.add(keras.layers.Dense(1))
        return model

    return make


def _stock_stack(keras):
    """The stock-repository stack: LSTM/Dropout/LSTM/Dropout/Dense(30), 22 features."""
    return keras.Sequential([
        keras.Input((20, 22)),
        keras.layers.LSTM(32, return_sequences=True),
        keras.layers.Dropout(0.2),
        keras.layers.LSTM(16),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(30),
    ])


def _weather(keras):
    """The Keras weather tutorial (timeseries_weather_forecasting): Functional, LSTM(32), Dense(1)."""
    inputs = keras.layers.Input(shape=(72, 7))
    lstm_out = keras.layers.LSTM(32)(inputs)
    outputs = keras.layers.Dense(1)(lstm_out)
    return keras.Model(inputs=inputs, outputs=outputs)


def _tf_tutorial(keras):
    """The TensorFlow time-series tutorial's lstm_model: no Input, return_sequences=True, Dense."""
    model = keras.models.Sequential([
        keras.layers.LSTM(32, return_sequences=True),
        keras.layers.Dense(units=1),
    ])
    model.build((None, 24, 19))
    return model


def _dense_first(keras):
    """Per-step Dense layers before the LSTM (TimeDistributed and plain), activation layers."""
    return keras.Sequential([
        keras.Input((10, 5)),
        keras.layers.TimeDistributed(keras.layers.Dense(12, activation="relu")),
        keras.layers.Dense(8),
        keras.layers.LSTM(16),
        keras.layers.Dense(8),
        keras.layers.LeakyReLU(negative_slope=0.1),
        keras.layers.Dense(2, activation="gelu"),
    ])


def _gru_elu(keras):
    return keras.Sequential([
        keras.Input((8, 3)),
        keras.layers.GRU(12, return_sequences=True),
        keras.layers.GRU(8),
        keras.layers.Dense(6, activation="elu"),
        keras.layers.ELU(alpha=0.5),
        keras.layers.Dense(1, activation="sigmoid"),
    ])


def _bidirectional(keras):
    return keras.Sequential([keras.Input((12, 3)), keras.layers.Bidirectional(keras.layers.LSTM(8), name="bilstm"),
                             keras.layers.Dense(1)])


def _cnn_lstm(keras):
    return keras.Sequential([keras.Input((12, 3)), keras.layers.Conv1D(8, 3, name="conv"), keras.layers.LSTM(8),
                             keras.layers.Dense(1)])


def _encoder_decoder(keras):
    return keras.Sequential([keras.Input((12, 3)), keras.layers.LSTM(8), keras.layers.RepeatVector(3, name="repeat"),
                             keras.layers.LSTM(8, return_sequences=True),
                             keras.layers.TimeDistributed(keras.layers.Dense(1))])


def _refused_keras(make: Callable[[Any], Any]) -> Callable[[Path], Built]:
    def build(folder: Path) -> Built:
        keras = _keras()
        path = folder / "model.keras"
        make(keras).save(path)
        return Built(path, 12, np.zeros((0, 3), np.float32), lambda w: w)

    return build


def _keras2_h5(kind: str) -> Callable[[Path], Built]:
    """A Keras 2.2-style .h5, written with h5py exactly as Keras 2.2.4's `model.save` lays it
    out (model_config with `batch_input_shape` on the first layer, `model_weights/<layer>`
    groups with `weight_names` like `lstm_1/kernel:0`), holding weights trained in an
    equivalent Keras 3 model that uses Keras 2's hard_sigmoid: that model is the reference."""

    def build(folder: Path) -> Built:
        import h5py

        keras = _keras()
        keras.utils.set_random_seed(5)
        window, features = (3, 8) if kind == "lstm" else (6, 4)
        if kind == "lstm":
            rnn = keras.layers.LSTM(24, recurrent_activation=keras2_hard_sigmoid)
            rnn_cfg = {"units": 24, "activation": "tanh", "recurrent_activation": "hard_sigmoid",
                       "unit_forget_bias": True, "implementation": 1}
        else:
            rnn = keras.layers.GRU(16, recurrent_activation=keras2_hard_sigmoid, reset_after=False)
            rnn_cfg = {"units": 16, "activation": "tanh", "recurrent_activation": "hard_sigmoid",
                       "implementation": 1, "reset_after": False}
        model = keras.Sequential([keras.Input((window, features)), rnn, keras.layers.Dense(1)])
        held = _fit_keras(model, window, features, 1)
        name = f"{kind}_1"
        config = {"class_name": "Sequential", "config": {"name": "sequential_1", "layers": [
            {"class_name": kind.upper(), "config": {
                "name": name, "trainable": True, "batch_input_shape": [None, window, features], "dtype": "float32",
                "return_sequences": False, "return_state": False, "go_backwards": False, "stateful": False,
                "unroll": False, "use_bias": True, "dropout": 0.0, "recurrent_dropout": 0.0, **rnn_cfg}},
            {"class_name": "Dense", "config": {"name": "dense_1", "trainable": True, "units": 1,
                                               "activation": "linear", "use_bias": True}},
        ]}}
        path = folder / "model.h5"
        with h5py.File(path, "w") as h5:
            h5.attrs["keras_version"] = b"2.2.4"
            h5.attrs["backend"] = b"tensorflow"
            h5.attrs["model_config"] = json.dumps(config).encode("utf8")
            group = h5.create_group("model_weights")
            group.attrs["layer_names"] = [name.encode(), b"dense_1"]
            group.attrs["backend"] = b"tensorflow"
            group.attrs["keras_version"] = b"2.2.4"
            for layer, names, values in (
                (name, ["kernel", "recurrent_kernel", "bias"], model.layers[0].get_weights()),
                ("dense_1", ["kernel", "bias"], model.layers[1].get_weights()),
            ):
                g = group.create_group(layer)
                full = [f"{layer}/{n}:0" for n in names]
                g.attrs["weight_names"] = [n.encode("utf8") for n in full]
                for n, v in zip(full, values):
                    g.create_dataset(n, data=np.asarray(v, np.float32))
        return Built(path, window, held[:, :features], lambda w: np.asarray(model.predict(w, verbose=0)))

    return build


# ------------------------------------------------------------------------------------ torch


def _fit_torch(module, window: int, features: int, targets: int, *, seed: int, call: Callable | None = None,
               epochs: int = 30) -> np.ndarray:
    import torch

    torch.manual_seed(seed)
    x, y, held = _train_data(window, features, targets, seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    run = call or (lambda m, batch: m(batch))
    opt = torch.optim.Adam(module.parameters(), lr=0.01)
    module.train()
    for _ in range(epochs):
        opt.zero_grad()
        out = run(module, xt).reshape(len(xt), -1)
        loss = torch.nn.functional.mse_loss(out, yt.reshape(len(yt), -1)[:, : out.shape[1]])
        loss.backward()
        opt.step()
    module.eval()
    return held


TORCH_CLASSES = textwrap.dedent(
    '''
    """Forecasters written the way public PyTorch code writes them (the corpus's factories)."""
    import dataclasses
    from typing import Any, Optional

    import torch
    import torch.nn.functional as F
    from torch import nn


    class LSTMModel(nn.Module):
        """The usual tutorial class: fc registered before the LSTM, zero h0/c0 built in
        forward(), out[:, -1, :], and .squeeze() on the way out (shape (N,))."""

        def __init__(self, input_dim=6, hidden_dim=32, layer_dim=2, output_dim=1):
            super().__init__()
            self.fc = nn.Linear(hidden_dim, output_dim)
            self.hidden_dim, self.layer_dim = hidden_dim, layer_dim
            self.lstm = nn.LSTM(input_dim, hidden_dim, layer_dim, batch_first=True)

        def forward(self, x):
            h0 = torch.zeros(self.layer_dim, x.size(0), self.hidden_dim).requires_grad_()
            c0 = torch.zeros(self.layer_dim, x.size(0), self.hidden_dim).requires_grad_()
            out, (hn, cn) = self.lstm(x, (h0.detach(), c0.detach()))
            out = self.fc(out[:, -1, :])
            return out.squeeze()


    class SigmoidForward(nn.Module):
        """torch.sigmoid applied in forward(), not as a module."""

        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(6, 16, batch_first=True)
            self.out = nn.Linear(16, 1)

        def forward(self, x):
            _, h = self.rnn(x)
            return torch.sigmoid(self.out(h[-1]))


    class LitForecaster(nn.Module):
        """A LightningModule-style class: a loss and metrics as children, training_step."""

        def __init__(self):
            super().__init__()
            self.criterion = nn.MSELoss()
            self.metrics = nn.ModuleDict({"mae": nn.L1Loss(), "mse": nn.MSELoss()})
            self.model = nn.LSTM(input_size=6, hidden_size=24, num_layers=1, batch_first=True)
            self.dropout = nn.Dropout(0.1)
            self.linear = nn.Linear(24, 1)

        def forward(self, x):
            lstm_out, _ = self.model(x)
            return self.linear(self.dropout(lstm_out[:, -1]))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return self.criterion(self(x), y)


    class BlockRNNModule(nn.Module):
        """darts' _BlockRNNModule: forward((x, static_covariates)), fc on h_n[-1], a view to
        (batch, output_chunk_length, target_size, nr_params); a loss child (criterion)."""

        def __init__(self, name="GRU", input_size=6, hidden_dim=16, num_layers=2, target_size=1,
                     nr_params=1, output_chunk_length=3):
            super().__init__()
            self.criterion = nn.MSELoss()
            self.name, self.out_len = name, output_chunk_length
            self.target_size, self.nr_params = target_size, nr_params
            self.rnn = getattr(nn, name)(input_size, hidden_dim, num_layers, batch_first=True)
            feats, last = [], hidden_dim
            for feature in [8, output_chunk_length * target_size * nr_params]:
                feats.append(nn.Linear(last, feature))
                last = feature
            self.fc = nn.Sequential(*feats)

        def forward(self, x_in):
            x, _ = x_in
            batch_size = x.shape[0]
            out, hidden = self.rnn(x)
            if self.name == "LSTM":
                hidden = hidden[0]
            predictions = hidden[-1, :, :]
            predictions = self.fc(predictions)
            return predictions.view(batch_size, self.out_len, self.target_size, self.nr_params)


    class RNNModule(nn.Module):
        """darts' _RNNModule (RNNModel): a per-step head V on every output step, forward
        returning (predictions, last_hidden_state); the last step is the forecast."""

        def __init__(self, name="LSTM", input_size=6, hidden_dim=16, num_layers=1, target_size=2, nr_params=1):
            super().__init__()
            self.criterion = nn.MSELoss()
            self.target_size, self.nr_params = target_size, nr_params
            self.rnn = getattr(nn, name)(input_size, hidden_dim, num_layers, batch_first=True)
            self.V = nn.Linear(hidden_dim, target_size * nr_params)

        def forward(self, x_in, h=None):
            x, _ = x_in
            batch_size = x.shape[0]
            out, last_hidden_state = self.rnn(x) if h is None else self.rnn(x, h)
            predictions = self.V(out)
            predictions = predictions.view(batch_size, out.shape[1], self.target_size, self.nr_params)
            return predictions, last_hidden_state


    @dataclasses.dataclass
    class PLModuleInput:
        """darts (0.3x+)'s model-facing batch, condensed: the module reads fields, replaces them
        and concatenates the past features itself."""

        past_target: torch.Tensor
        past_covariates: Optional[torch.Tensor] = None
        historic_future_covariates: Optional[torch.Tensor] = None
        static_covariates: Optional[torch.Tensor] = None
        state: Any = None
        stage: str = "predict"

        def replace(self, **changes):
            return dataclasses.replace(self, **changes)

        def concatenate_past_features(self):
            parts = (self.past_target, self.past_covariates, self.historic_future_covariates)
            return torch.cat([t for t in parts if t is not None], dim=2)


    @dataclasses.dataclass
    class PLModuleOutput:
        prediction: torch.Tensor
        state: Any = None


    class DartsRNNModule(nn.Module):
        """darts 0.48's CustomRNNModule: PLModuleInput in, PLModuleOutput out, a per-step V,
        the last step kept at prediction time; criterion and metrics children."""

        def __init__(self, name="LSTM", input_size=6, hidden_dim=16, num_layers=2, target_size=1, nr_params=1):
            super().__init__()
            self.criterion = nn.MSELoss()
            self.train_metrics = nn.ModuleDict({"mse": nn.MSELoss()})
            self.target_size, self.nr_params = target_size, nr_params
            self.rnn = getattr(nn, name)(input_size, hidden_dim, num_layers, batch_first=True)
            self.V = nn.Linear(hidden_dim, target_size * nr_params)

        def forward(self, x_in: PLModuleInput) -> PLModuleOutput:
            past_target = x_in.past_target
            if x_in.state is not None:
                past_target = past_target[:, -1:]
            x_in = x_in.replace(past_target=past_target)
            x = x_in.concatenate_past_features()
            batch_size = x.shape[0]
            out, last_hidden_state = self.rnn(x) if x_in.state is None else self.rnn(x, x_in.state)
            predictions = self.V(out)
            predictions = predictions.view(batch_size, -1, self.target_size, self.nr_params)
            if x_in.stage == "predict":
                predictions = predictions[:, -1:, :]
            return PLModuleOutput(prediction=predictions, state=last_hidden_state)


    class DartsBlockRNNModule(nn.Module):
        """darts 0.48's CustomBlockRNNModule: the fc on the last output_chunk_length RNN outputs."""

        def __init__(self, output_chunk_length=1, input_size=6, hidden_dim=16):
            super().__init__()
            self.criterion = nn.MSELoss()
            self.output_chunk_length = output_chunk_length
            self.rnn = nn.GRU(input_size, hidden_dim, 1, batch_first=True)
            self.fc = nn.Sequential(nn.Linear(hidden_dim, 8), nn.ReLU(), nn.Linear(8, 1))

        def forward(self, x_in: PLModuleInput) -> PLModuleOutput:
            x_past = x_in.concatenate_past_features()
            batch_size = x_past.shape[0]
            out, _ = self.rnn(x_past)
            out = out[:, -self.output_chunk_length :, :]
            predictions = self.fc(out)
            return PLModuleOutput(prediction=predictions.view(batch_size, self.output_chunk_length, 1, 1))


    class ActivationHeads(nn.Module):
        """A Linear + GELU before a seq-first LSTM (input permuted in forward), GELU (tanh) and
        LeakyReLU heads."""

        def __init__(self):
            super().__init__()
            self.embed = nn.Sequential(nn.Linear(6, 12), nn.GELU())
            self.rnn = nn.LSTM(12, 16)
            self.head = nn.Sequential(nn.Linear(16, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 8),
                                      nn.LeakyReLU(0.1), nn.Linear(8, 2))

        def forward(self, x):
            out, _ = self.rnn(self.embed(x).permute(1, 0, 2))
            return self.head(out[-1])


    class MeanPooled(nn.Module):
        """Averages the LSTM output over the window: needs every step at once."""

        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(6, 8, batch_first=True)
            self.fc = nn.Linear(8, 1)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.fc(out.mean(dim=1))


    class BranchOnValues(nn.Module):
        """forward() branches on tensor values: not traceable; the sigmoid it applies is unseen."""

        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(6, 8, batch_first=True)
            self.fc = nn.Linear(8, 1)

        def forward(self, x):
            out, _ = self.lstm(x)
            y = self.fc(out[:, -1])
            if bool(y.abs().sum() >= 0):
                y = torch.sigmoid(y)
            return y


    class BiGRU(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(6, 8, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(16, 1)

        def forward(self, x):
            out, _ = self.gru(x)
            return self.fc(out[:, -1])
    '''
)


def _factory_module(folder: Path):
    import importlib.util
    import sys

    path = folder / "corpus_models.py"
    if not path.exists():
        path.write_text(TORCH_CLASSES)
    name = "corpus_models"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name], path


def _torch_entry(cls: str, *, window: int = 12, outputs: int = 1, tuple_input: bool = False, save: str = "state_dict",
                 seed: int = 11, kwargs: str = "", darts_batch: bool = False) -> Callable[[Path], Built]:
    """Train the class (6 features), save it (state_dict + factory, or TorchScript)."""

    def build(folder: Path) -> Built:
        import torch

        classes, file = _factory_module(folder)
        torch.manual_seed(seed)
        module = eval(f"classes.{cls}({kwargs})", {"classes": classes})  # noqa: S307 - our own corpus text
        call = None
        if darts_batch:
            def call(m, b):
                return m(classes.PLModuleInput(past_target=b)).prediction
        if tuple_input:
            def call(m, b):
                out = m((b, None))
                out = out[0] if isinstance(out, tuple) else out
                return out[:, -1] if out.dim() == 4 and out.shape[1] == b.shape[1] else out
        held = _fit_torch(module, window, 6, outputs, seed=seed, call=call)

        def predict(windows: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                x = torch.from_numpy(windows)
                if darts_batch:
                    return module(classes.PLModuleInput(past_target=x)).prediction.reshape(len(windows), -1).numpy()
                out = module((x, None)) if tuple_input else module(x)
                out = out[0] if isinstance(out, tuple) else out
                if out.dim() == 4 and out.shape[1] == windows.shape[1]:  # darts RNNModel: every step
                    out = out[:, -1]
                return out.reshape(len(windows), -1).numpy()

        extra: dict[str, Any] = {"window": window}
        if save == "state_dict":
            path = folder / f"{cls}.pt"
            torch.save(module.state_dict(), path)
            builder = folder / f"build_{cls}.py"
            builder.write_text(f"from corpus_models import {cls}\n\n\ndef build():\n    return {cls}({kwargs})\n")
            extra["torch_factory"] = f"{builder}:build"
            return Built(path, window, held, predict, extra)
        path = folder / f"{cls}.scripted.pt"
        torch.jit.save(torch.jit.script(module), str(path))
        return Built(path, window, held, predict, extra)

    return build


# ------------------------------------------------------------------------------------ the list


ENTRIES: tuple[Entry, ...] = (
    Entry("mlm-lag1", "keras", "Machine Learning Mastery multivariate LSTM, lag 1: `LSTM(50, input_shape=(1, 8))` -> `Dense(1)`",
          "exact", _keras_entry(_mlm(1), 1, 8, 1)),
    Entry("mlm-lag3", "keras", "the same recipe with 3 lags: `input_shape=(3, 8)`", "exact", _keras_entry(_mlm(3), 3, 8, 1)),
    Entry("stock-22", "keras", "stock-repository stack: `LSTM(return_sequences)` -> `Dropout` -> `LSTM` -> `Dropout` -> `Dense(30)`, 22 features",
          "exact", _keras_entry(_stock_stack, 20, 22, 30)),
    Entry("weather", "keras", "Keras weather tutorial: Functional `Input((72, 7))` -> `LSTM(32)` -> `Dense(1)`, legacy `.h5`",
          "exact", _keras_entry(_weather, 72, 7, 1, save_as=".h5")),
    Entry("tf-tutorial", "keras", "TensorFlow time-series tutorial `lstm_model`: `LSTM(32, return_sequences=True)` -> `Dense(1)`, no Input layer",
          "exact", _keras_entry(_tf_tutorial, 24, 19, 1)),
    Entry("dense-first", "keras", "`TimeDistributed(Dense(relu))` and `Dense` before the LSTM, `LeakyReLU` layer, gelu head",
          "exact", _keras_entry(_dense_first, 10, 5, 2)),
    Entry("gru-elu", "keras", "stacked GRU, elu Dense, `ELU(alpha=0.5)` layer, sigmoid output", "exact",
          _keras_entry(_gru_elu, 8, 3, 1)),
    Entry("keras22-lstm-h5", "keras", "Keras 2.2 `.h5`: LSTM with `batch_input_shape` and hard_sigmoid (Keras 2's 0.2x+0.5)",
          "exact", _keras2_h5("lstm")),
    Entry("keras22-gru-h5", "keras", "Keras 2.2 `.h5`: GRU `reset_after=False`, hard_sigmoid", "exact", _keras2_h5("gru")),
    Entry("bidirectional", "keras", "`Bidirectional(LSTM)`", "refused: needs the future",
          _refused_keras(_bidirectional), "bilstm"),
    Entry("cnn-lstm", "keras", "`Conv1D` -> `LSTM`", "refused: neighbouring samples of the window at once", _refused_keras(_cnn_lstm), "conv"),
    Entry("encoder-decoder", "keras", "`LSTM` -> `RepeatVector` -> `LSTM` -> `TimeDistributed(Dense)`",
          "refused: runs after the window has ended", _refused_keras(_encoder_decoder), "repeat"),
    Entry("lstm-model", "torch", "the usual `class LSTMModel(nn.Module)`: `fc` registered before `lstm`, zero h0/c0, `out[:, -1, :]`, `.squeeze()`",
          "exact", _torch_entry("LSTMModel")),
    Entry("sigmoid-forward", "torch", "`torch.sigmoid(self.out(h[-1]))` in forward(), GRU, TorchScript file", "exact",
          _torch_entry("SigmoidForward", save="script")),
    Entry("lightning-like", "torch", "Lightning-style module holding `criterion` and metrics children, Dropout", "exact",
          _torch_entry("LitForecaster")),
    Entry("darts-block-gru", "torch", "older darts `BlockRNNModel` module (GRU): tuple input, fc on `h_n[-1]`, `.view(B, 3, 1, 1)`",
          "exact", _torch_entry("BlockRNNModule", outputs=3, tuple_input=True)),
    Entry("darts-block-lstm", "torch", "older darts `BlockRNNModel` module (LSTM)", "exact",
          _torch_entry("BlockRNNModule", outputs=3, tuple_input=True, kwargs="name='LSTM'")),
    Entry("darts-rnn-lstm", "torch", "older darts `RNNModel` module (LSTM): per-step head on every output step", "exact",
          _torch_entry("RNNModule", outputs=2, tuple_input=True)),
    Entry("darts-rnn-gru", "torch", "older darts `RNNModel` module (GRU)", "exact",
          _torch_entry("RNNModule", outputs=2, tuple_input=True, kwargs="name='GRU'")),
    Entry("darts48-rnn-lstm", "torch", "darts 0.48 `RNNModel` module: `PLModuleInput` dataclass in, `PLModuleOutput` out, `concatenate_past_features()`",
          "exact", _torch_entry("DartsRNNModule", darts_batch=True)),
    Entry("darts48-rnn-gru", "torch", "darts 0.48 `RNNModel` module (GRU)", "exact",
          _torch_entry("DartsRNNModule", darts_batch=True, kwargs="name='GRU'")),
    Entry("darts48-block-1", "torch", "darts 0.48 `BlockRNNModel` module, `output_chunk_length=1`", "exact",
          _torch_entry("DartsBlockRNNModule", darts_batch=True)),
    Entry("darts48-block-3", "torch", "darts 0.48 `BlockRNNModel` module, `output_chunk_length=3` (fc on the last 3 RNN outputs)",
          "refused: keeps the last 3 time steps", _torch_entry("DartsBlockRNNModule", darts_batch=True,
                                                               kwargs="output_chunk_length=3", outputs=3), "getitem"),
    Entry("activation-heads", "torch", "`Linear`+`GELU` before a sequence-first LSTM, `GELU(approximate='tanh')` and `LeakyReLU(0.1)` heads",
          "exact", _torch_entry("ActivationHeads", outputs=2)),
    Entry("mean-pooled", "torch", "`fc(out.mean(dim=1))`: the output averaged over the window", "refused: applies 'mean' to the data",
          _torch_entry("MeanPooled"), "mean"),
    Entry("bidirectional-gru", "torch", "`nn.GRU(bidirectional=True)`", "refused: needs the future",
          _torch_entry("BiGRU"), "gru"),
    Entry("branch-on-values", "torch", "forward() branching on tensor values (untraceable) around a `torch.sigmoid`",
          "parity fails", _torch_entry("BranchOnValues")),
)
BY_NAME = {e.name: e for e in ENTRIES}


def exact_mode_error(built: Built, bundle: Path, backend: str = "onnx") -> tuple[float, int]:
    """(max abs error, windows): the bundle's exact mode fed `built.series` one sample at a time
    against the framework's own prediction for every window ending at each sample."""
    from edge_lstm.forecaster import Runtime

    windows = sliding(built.series, built.window)
    want = built.predict(windows).reshape(len(windows), -1)
    rt = Runtime.open(bundle, backend=backend, mode="exact")
    got = np.array([rt.push("s", x).values[0] for x in built.series])[built.window - 1 :]
    return float(np.abs(got - want).max()), len(want)


def measure() -> None:
    """Export every "exact" entry and print its exact-mode error (the README's figures)."""
    import tempfile
    import warnings

    from edge_lstm_export import export_model

    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        for e in ENTRIES:
            if e.outcome != "exact":
                continue
            folder = Path(tmp) / e.name
            folder.mkdir()
            built = e.build(folder)
            export_model(built.source, folder / "bundle", data=built.series, **built.export_kwargs)
            err, n = exact_mode_error(built, folder / "bundle")
            print(f"{e.name:18} {e.framework:6} window {built.window:3d}  {n} windows  max abs {err:.1e}")


def readme_table() -> str:
    """The README's "Models accepted" corpus table, from ENTRIES."""
    rows = ["| corpus model | source | edge-lstm |", "|---|---|---|"]
    shown = {"exact": f"exports; exact mode = framework (1e-5, {CHECKED_WINDOWS} windows)", "parity fails": "export fails (exit 1), no bundle"}
    for e in ENTRIES:
        result = shown.get(e.outcome) or f"refused ({e.outcome.removeprefix('refused: ')})"
        rows.append(f"| {e.recipe} | {e.framework} | {result} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import sys

    measure() if "--measure" in sys.argv else print(readme_table())
