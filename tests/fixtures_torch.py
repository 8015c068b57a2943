"""Session fixtures: small PyTorch forecasters trained for real on the airline series.

Each model is trained for a few seconds (fixed seed, one thread) on the first 80 % of the
windows of the min-max scaled series, saved the way a user would hand it to
`edge-lstm export`, and described by a `SourceModel` whose `expected` is the module's own
forward output (eval mode, no_grad) on the held-out last 20 % of the windows.
"""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import datasets

WINDOW = 12
EPOCHS = 60

#: The factory file a user would write next to a state_dict: it builds the same
#: architecture as `Forecaster(nn.LSTM(1, 32, num_layers=2, batch_first=True), nn.Linear(32, 1))`.
FACTORY_SOURCE = textwrap.dedent(
    '''
    """Builds the airline forecaster the weights in model.state_dict.pt were trained with."""
    import torch
    from torch import nn


    class AirlineLstm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(1, 32, num_layers=2, batch_first=True)
            self.head = nn.Linear(32, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(x)
            return self.head(out[:, -1])


    def build() -> nn.Module:
        return AirlineLstm()
    '''
)


def _forecaster_class():
    """The fixtures' module class, defined lazily so collecting without torch works."""
    import torch
    from torch import nn

    class Forecaster(nn.Module):
        """`rnn` over the window, then `head` on the last step's output.

        `rnn` and `head` are public so the continuous-mode oracle can step `rnn` itself.
        """

        def __init__(self, rnn: nn.Module, head: nn.Module) -> None:
            super().__init__()
            self.rnn = rnn
            self.head = head
            self.batch_first: bool = bool(rnn.batch_first)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(x)
            last = out[:, -1] if self.batch_first else out[-1]
            return self.head(last)

    return Forecaster


def _layout(module, windows: np.ndarray):
    """[N, W, F] numpy windows as the tensor the module's forward expects."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(windows, np.float32))
    return x if module.batch_first else x.transpose(0, 1).contiguous()


def _train(module, x: np.ndarray, y: np.ndarray, seed: int) -> float:
    """Full-batch Adam on MSE for EPOCHS steps; returns the final training loss."""
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=0.02)
    xt, yt = _layout(module, x), torch.from_numpy(y)
    module.train()
    for _ in range(EPOCHS):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(module(xt), yt)
        loss.backward()
        opt.step()
    module.eval()
    return loss.item()


def _predict(module, windows: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module(_layout(module, windows)).numpy().astype(np.float32)


@pytest.fixture(scope="session")
def torch_models(tmp_path_factory) -> dict[str, datasets.SourceModel]:
    """Trained torch forecasters by name, saved as TorchScript or state_dict + factory."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        # torch 2.13 deprecates torch.jit (still the way users save these); tracing an RNN
        # warns about its shape checks. Neither is about these models.
        warnings.filterwarnings("ignore", message="`torch.jit", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        try:
            return _build_models(tmp_path_factory.mktemp("torch_models"))
        finally:
            torch.set_num_threads(threads)


def _build_models(folder: Path) -> dict[str, datasets.SourceModel]:
    """Train, save and describe the four fixture models (see `torch_models`)."""
    import torch
    from torch import nn

    offset, scale = datasets.minmax(datasets.airline())
    scaled = ((datasets.airline()[:, None] - offset) * scale).astype(np.float32)
    x, y = datasets.windows(scaled, WINDOW)
    split = int(len(x) * 0.8)
    held_out = x[split:]
    Forecaster = _forecaster_class()
    models: dict[str, datasets.SourceModel] = {}

    def make(seed: int, rnn: nn.Module, head: nn.Module) -> nn.Module:
        """Train `rnn` + `head` (built right after `torch.manual_seed(seed)`)."""
        module = Forecaster(rnn, head)
        _train(module, x[:split], y[:split], seed)
        return module

    def add(name: str, module: nn.Module, path: Path, **reader_kwargs) -> None:
        models[name] = datasets.SourceModel(
            name=name,
            framework="torch",
            path=path,
            windows=held_out,
            expected=_predict(module, held_out),
            reader_kwargs=reader_kwargs,
            module=module,
        )

    torch.manual_seed(1)
    lstm2 = make(
        1,
        nn.LSTM(1, 32, num_layers=2, batch_first=True),
        nn.Linear(32, 1),
    )
    scripted = folder / "lstm2.scripted.pt"
    torch.jit.save(torch.jit.script(lstm2), str(scripted))
    add("torch-lstm2", lstm2, scripted, window=WINDOW)

    state = folder / "lstm2.state_dict.pt"
    torch.save(lstm2.state_dict(), state)
    factory = folder / "airline_factory.py"
    factory.write_text(FACTORY_SOURCE)
    add("torch-lstm2-factory", lstm2, state, factory=f"{factory}:build", window=WINDOW)

    torch.manual_seed(2)
    gru = make(2, nn.GRU(1, 16), nn.Linear(16, 1))  # seq-first input
    traced = folder / "gru.traced.pt"
    torch.jit.save(torch.jit.trace(gru, _layout(gru, held_out[:2])), str(traced))
    add("torch-gru", gru, traced, window=WINDOW)

    torch.manual_seed(3)
    nobias = make(
        3,
        nn.LSTM(1, 16, bias=False, batch_first=True),
        nn.Sequential(nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1)),
    )
    nobias_file = folder / "lstm_nobias.scripted.pt"
    torch.jit.save(torch.jit.script(nobias), str(nobias_file))
    add("torch-lstm-nobias", nobias, nobias_file, window=WINDOW)
    return models
