"""The PyTorch reader: parity with the modules' own output, refusals and bad inputs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from typing import Optional

import numpy as np
import pytest

import datasets

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from edge_lstm_export.emit_numpy import reference  # noqa: E402
from edge_lstm_export.readers.torch import TorchSourceError, read_torch  # noqa: E402
from edge_lstm_export.stack import UnsupportedModelError  # noqa: E402

pytestmark = [
    pytest.mark.torch,
    # torch 2.13 deprecates torch.jit, still how users save these; tracing an RNN warns too.
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]

MODELS = ["torch-lstm2", "torch-lstm2-factory", "torch-gru", "torch-lstm-nobias"]
TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    """Keep torch on one thread while a test runs (the machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _predict(module: nn.Module, windows: np.ndarray, batch_first: bool = True) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(windows, np.float32))
    if not batch_first:
        x = x.transpose(0, 1).contiguous()
    with torch.no_grad():
        return module.eval()(x).numpy()


def _random_windows(n: int = 5, window: int = 12, features: int = 1) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (n, window, features)).astype(np.float32)


# ------------------------------------------------------------------------ parity, saved files


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["fp32", "fp64"])
def test_saved_model_matches_its_own_forward(torch_models, name, dtype):
    """The reference engine built from the saved file reproduces the module on held-out windows."""
    model = torch_models[name]
    stack = read_torch(model.path, **model.reader_kwargs)
    got = reference(stack, dtype=dtype).run_window(model.windows)
    assert got.shape == model.expected.shape
    assert np.abs(got - model.expected).max() <= TOL


@pytest.mark.parametrize("name", MODELS)
def test_live_module_matches_its_own_forward(torch_models, name):
    """Reading the live nn.Module gives the same answer as reading its saved file."""
    model = torch_models[name]
    stack = read_torch(model.module)
    got = reference(stack, dtype=np.float32).run_window(model.windows)
    assert np.abs(got - model.expected).max() <= TOL
    assert stack.source["format"] == "module"


def test_stack_describes_the_modules(torch_models):
    """Layer kinds, sizes, window and source info come out as the fixtures built them."""
    lstm2 = read_torch(torch_models["torch-lstm2"].path, window=12)
    layers = [(layer.kind, layer.units, layer.inputs) for layer in lstm2.recurrent]
    assert layers == [("lstm", 32, 1), ("lstm", 32, 32)]
    assert (lstm2.features, lstm2.outputs, lstm2.window, lstm2.state_size) == (1, 1, 12, 128)
    assert lstm2.source["format"] == "torchscript" and lstm2.source["batch_first"] is True
    assert lstm2.source["file"] == "lstm2.scripted.pt" and len(lstm2.source["sha256"]) == 64

    factory = torch_models["torch-lstm2-factory"]
    from_state = read_torch(factory.path, **factory.reader_kwargs)
    assert from_state.source["format"] == "state_dict"
    assert from_state.source["class"] == "AirlineLstm"
    for a, b in zip(lstm2.recurrent, from_state.recurrent):
        np.testing.assert_array_equal(a.kernel, b.kernel)

    gru = read_torch(torch_models["torch-gru"].path)
    (layer,) = gru.recurrent
    assert (layer.kind, layer.units, layer.reset_after, gru.window) == ("gru", 16, True, None)
    # PyTorch's GRU rows are (r, z, n); canonical columns are (z, r, h).
    weight_ih = torch_models["torch-gru"].module.rnn.weight_ih_l0.detach().numpy()
    np.testing.assert_allclose(layer.kernel[:, :16], weight_ih[16:32].T, rtol=0, atol=0)
    np.testing.assert_allclose(layer.kernel[:, 16:32], weight_ih[:16].T, rtol=0, atol=0)

    nobias = read_torch(torch_models["torch-lstm-nobias"].path)
    assert not nobias.recurrent[0].bias.any()
    assert [d.activation for d in nobias.head] == ["tanh", "linear"]


# ----------------------------------------------------------------- continuous-mode oracle


@pytest.mark.parametrize("name", ["torch-lstm2", "torch-gru", "torch-lstm-nobias"])
def test_carried_state_matches_torch_step_by_step(torch_models, name):
    """40 samples fed one at a time with the state carried: torch and NumpyStep agree."""
    model = torch_models[name]
    module = model.module.eval()
    rnn, head = module.rnn, module.head
    offset, scale = datasets.minmax(datasets.airline())
    samples = ((datasets.airline()[-40:, None] - offset) * scale).astype(np.float32)
    engine = reference(read_torch(model.path, **model.reader_kwargs), dtype=np.float32)
    state = np.zeros((1, engine.state_size), np.float32)
    hidden = None
    for t, sample in enumerate(samples):
        x = torch.from_numpy(sample.reshape(1, 1, 1))
        with torch.no_grad():
            out, hidden = rnn(x, hidden)
            want = head(out[:, -1] if rnn.batch_first else out[-1]).numpy()
        got, state = engine.step(sample[None, :], state)
        assert np.abs(got - want).max() <= TOL, f"step {t}"
    # The packed state holds, per layer, h then c (LSTM) or h (GRU): torch's final hidden.
    h = hidden[0] if isinstance(hidden, tuple) else hidden
    parts = []
    for k in range(h.shape[0]):
        parts.append(h[k, 0].numpy())
        if isinstance(hidden, tuple):
            parts.append(hidden[1][k, 0].numpy())
    assert np.abs(np.concatenate(parts) - state[0]).max() <= TOL


# --------------------------------------------------------------------- module shapes read


class _LastStep(nn.Module):
    """The nn.Sequential shim that keeps the last time step of an nn.LSTM's output."""

    def forward(self, x):
        return x[0][:, -1]


def test_sequential_with_dropout_shim_and_activations():
    """Dropout is skipped, the last-step shim's own forward is read, activations join the Linear."""
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.LSTM(1, 8, num_layers=2, batch_first=True, dropout=0.3),
        _LastStep(),
        nn.Sequential(nn.Dropout(0.2), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2), nn.Sigmoid()),
    )
    windows = _random_windows()
    stack = read_torch(module)
    assert [d.activation for d in stack.head] == ["relu", "sigmoid"]
    assert stack.source["read_from"] == "forward() graph"
    assert stack.source["calls"] == ["0", "2.0", "2.1", "2.2", "2.3", "2.4"]
    got = reference(stack).run_window(windows)
    assert np.abs(got - _predict(module, windows)).max() <= TOL


class _HeadFirst(nn.Module):
    """The usual tutorial class: fc registered before the LSTM, zero h0/c0, a squeezed output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 1)
        self.lstm = nn.LSTM(2, 8, num_layers=2, batch_first=True)
        self.loss = nn.MSELoss()

    def forward(self, x):
        h0 = torch.zeros(2, x.size(0), 8)
        out, (hn, cn) = self.lstm(x, (h0, h0))
        return torch.sigmoid(self.fc(out[:, -1, :])).squeeze()


@pytest.mark.parametrize("how", ["module", "script", "trace"])
def test_forward_order_not_registration_order(tmp_path, how):
    """The forward's call order counts, in a live module and in TorchScript files (scripted or
    traced): fc first in __init__ is still the head, the sigmoid in forward() is in the bundle,
    and the loss child forward() never calls is ignored."""
    torch.manual_seed(6)
    module = _HeadFirst().eval()
    windows = _random_windows(features=2)
    source = module
    if how != "module":
        saved = torch.jit.script(module) if how == "script" else torch.jit.trace(module, torch.zeros(3, 12, 2))
        source = tmp_path / f"{how}.pt"
        torch.jit.save(saved, str(source))
    stack = read_torch(source)
    assert stack.source["calls"] == ["lstm", "fc"]
    assert [d.activation for d in stack.head] == ["sigmoid"]
    got = reference(stack).run_window(windows)[:, 0]
    assert np.abs(got - _predict(module, windows)).max() <= TOL


class _Forward(nn.Module):
    """An LSTM(2 layers) and a Linear, with forward() given as code: refusal cases."""

    def __init__(self, code) -> None:
        super().__init__()
        self.lstm = nn.LSTM(2, 4, num_layers=2, batch_first=True)
        self.fc = nn.Linear(4, 1)
        self.wide = nn.Linear(48, 1)
        self.h0 = nn.Parameter(torch.zeros(2, 1, 4))
        self.code = code

    def forward(self, x):
        return self.code(self, x)


FORWARD_REFUSALS = {
    "cat": (lambda m, x: m.wide(torch.cat([m.lstm(x)[0][:, -1]] * 12, dim=1)), r"applies 'cat' to the data"),
    "inner-layer-h": (lambda m, x: m.fc(m.lstm(x)[1][0][0]), r"reads h_n\[0\]; .*h_n\[-1\]"),
    "cell-state": (lambda m, x: m.fc(m.lstm(x)[1][1][-1]), r"reads the LSTM's cell state c_n"),
    "learned-h0": (lambda m, x: m.fc(m.lstm(x, (m.h0.expand(2, x.size(0), 4).contiguous(),) * 2)[0][:, -1]),
                   r"self\.h0 directly"),
    "flatten-window": (lambda m, x: m.wide(m.lstm(x)[0].reshape(x.size(0), -1)), r"flattening the window"),
    "dropout-in-eval": (lambda m, x: m.fc(torch.nn.functional.dropout(m.lstm(x)[0][:, -1], 0.2)),
                        r"training=True"),
    "first-step": (lambda m, x: m.fc(m.lstm(x)[0][:, 0]), r"indexes the seq with \[:, 0\]"),
}


@pytest.mark.parametrize("case", sorted(FORWARD_REFUSALS))
def test_forward_operations_it_cannot_map_are_named(case):
    """Operations in forward() that a step model cannot reproduce are refused by name."""
    code, message = FORWARD_REFUSALS[case]
    with pytest.raises(UnsupportedModelError, match=message):
        read_torch(_Forward(code), window=12)


class _PerStep(nn.Module):
    """darts RNNModel's shape: a head on every output step, an optional state argument."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(3, 4, batch_first=True)
        self.V = nn.Linear(4, 2)

    def forward(self, x, h: Optional[torch.Tensor] = None):
        out, last = self.rnn(x) if h is None else self.rnn(x, h)
        return self.V(out), last


@pytest.mark.parametrize("how", ["module", "script"])
def test_per_step_head_with_an_optional_state(tmp_path, how):
    """forward(x, h=None) is read as called with x alone; its per-step output's last step is the forecast."""
    torch.manual_seed(7)
    module = _PerStep().eval()
    source = module
    if how == "script":
        source = tmp_path / "per-step.pt"
        torch.jit.save(torch.jit.script(module), str(source))
    stack = read_torch(source)
    assert stack.source["sequence_output"] and stack.source["output_time_axis"] == 1
    windows = _random_windows(features=3)
    with torch.no_grad():
        want = module(torch.from_numpy(windows))[0][:, -1].numpy()
    assert np.abs(reference(stack).run_window(windows) - want).max() <= TOL


class _TwoRecurrent(nn.Module):
    """An LSTM feeding a batch-first two-layer GRU, then a head on the last step."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(2, 6)
        self.gru = nn.GRU(6, 5, num_layers=2, bias=False)
        self.out = nn.Linear(5, 3, bias=False)

    def forward(self, x):
        a, _ = self.lstm(x)
        b, _ = self.gru(a)
        return self.out(b[-1])


def test_stacked_lstm_then_gru_without_biases():
    """Separate recurrent modules chain; GRU without biases and a bias-free Linear read as zeros."""
    torch.manual_seed(1)
    module = _TwoRecurrent()
    windows = _random_windows(features=2)
    stack = read_torch(torch.jit.script(module), features=2)
    assert [l.kind for l in stack.recurrent] == ["lstm", "gru", "gru"]
    got = reference(stack).run_window(windows)
    assert np.abs(got - _predict(module, windows, batch_first=False)).max() <= TOL


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_checkpoint_dict_holding_a_state_dict(tmp_path, torch_models, zip_format):
    """A training checkpoint {"model_state_dict": ..., "epoch": ...} is read like a state_dict,
    in torch.save's zip format and its pre-1.6 pickle format."""
    model = torch_models["torch-lstm2-factory"]
    checkpoint = tmp_path / "checkpoint.pt"
    content = {"model_state_dict": model.module.state_dict(), "epoch": 60}
    torch.save(content, checkpoint, _use_new_zipfile_serialization=zip_format)
    stack = read_torch(checkpoint, factory=model.reader_kwargs["factory"])
    got = reference(stack).run_window(model.windows)
    assert np.abs(got - model.expected).max() <= TOL


def test_features_argument_is_a_cross_check(torch_models):
    """features= equal to weight_ih_l0's width passes; a different value names the layer."""
    path = torch_models["torch-lstm2"].path
    assert read_torch(path, features=1).features == 1
    with pytest.raises(TorchSourceError, match=r"features=3 .*'rnn\.l0' reads 1 value"):
        read_torch(path, features=3)


def test_importing_the_reader_does_not_import_torch():
    """`import edge_lstm_export.readers.torch` works without loading torch (lazy import)."""
    code = (
        "import sys, edge_lstm_export.readers, edge_lstm_export.readers.torch as r;"
        "assert 'torch' not in sys.modules, 'torch imported';"
        "assert callable(r.read_torch)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------ refusals


class _Wrap(nn.Module):
    """A forecaster around any `rnn`-like body, for refusal cases."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.body = nn.ModuleList(layers)


REFUSALS = {
    "bidirectional": (
        lambda: _Wrap(nn.LSTM(1, 4, bidirectional=True), nn.Linear(8, 1)),
        r"'body\.0' \(LSTM\) is bidirectional.*needs the future",
    ),
    "proj_size": (
        lambda: _Wrap(nn.LSTM(1, 8, proj_size=4), nn.Linear(4, 1)),
        r"'body\.0' \(LSTM\) has proj_size=4",
    ),
    "conv1d": (
        lambda: _Wrap(nn.Conv1d(1, 4, 3), nn.LSTM(4, 4), nn.Linear(4, 1)),
        r"'body\.0' \(Conv1d\) is a convolution over the time axis",
    ),
    "attention": (
        lambda: _Wrap(nn.LSTM(1, 4), nn.MultiheadAttention(4, 2), nn.Linear(4, 1)),
        r"'body\.1' \(MultiheadAttention\) is attention",
    ),
    "transformer": (
        lambda: _Wrap(nn.TransformerEncoderLayer(4, 2, 8), nn.Linear(4, 1)),
        r"'body\.0' \(TransformerEncoderLayer\) is a transformer",
    ),
    "plain_rnn": (lambda: _Wrap(nn.RNN(1, 4), nn.Linear(4, 1)), r"'body\.0' \(RNN\) is a plain"),
    "no_recurrent": (
        lambda: _Wrap(nn.Linear(12, 4), nn.Linear(4, 1)),
        r"'body\.0' \(Linear\) comes before any LSTM/GRU",
    ),
    "nothing_to_stream": (lambda: _Wrap(nn.Dropout()), r"_Wrap has no nn\.LSTM or nn\.GRU"),
    "no_head": (lambda: _Wrap(nn.GRU(1, 4)), r"_Wrap has no nn\.Linear after 'body\.0'"),
    "head_width": (
        lambda: _Wrap(nn.LSTM(1, 8), nn.Linear(4, 1)),
        r"'body\.1' \(Linear\) takes in_features=4 but 'body\.0' \(hidden size\) gives 8",
    ),
    "activation_on_rnn": (
        lambda: _Wrap(nn.LSTM(1, 4), nn.ReLU(), nn.Linear(4, 1)),
        r"'body\.1' \(ReLU\) follows 'body\.0', not a Linear",
    ),
    "layer_norm": (
        lambda: _Wrap(nn.LSTM(1, 4), nn.LayerNorm(4), nn.Linear(4, 1)),
        r"'body\.1' \(LayerNorm\) is not supported",
    ),
    "rnn_after_head": (
        lambda: _Wrap(nn.LSTM(1, 4), nn.Linear(4, 4), nn.GRU(4, 2)),
        r"'body\.2' \(GRU\) comes after the Linear head 'body\.1'",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refuses_unstreamable_modules(case):
    """Each unsupported module is refused with its name and the reason."""
    build, message = REFUSALS[case]
    with pytest.raises(UnsupportedModelError, match=message):
        read_torch(build())


@pytest.mark.parametrize("how", ["script", "trace"])
def test_refuses_bidirectional_torchscript_file(tmp_path, how):
    """A saved TorchScript module is refused from its weights, traced or scripted."""

    class Bi(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(1, 4, batch_first=True, bidirectional=True)
            self.head = nn.Linear(8, 1)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(out[:, -1])

    module = Bi().eval()
    if how == "script":
        saved = torch.jit.script(module)
    else:
        saved = torch.jit.trace(module, torch.zeros(2, 12, 1))
    path = tmp_path / "bi.pt"
    torch.jit.save(saved, str(path))
    with pytest.raises(UnsupportedModelError, match=r"'rnn' \(GRU\) is bidirectional"):
        read_torch(path)


def test_refuses_tensors_held_outside_submodules():
    """A container with its own parameter (used who knows how in forward) is refused."""
    module = _Wrap(nn.LSTM(1, 4), nn.Linear(4, 1))
    module.body.register_parameter("scale", nn.Parameter(torch.ones(1)))
    message = r"'body' \(ModuleList\) holds its own tensors \(scale\)"
    with pytest.raises(UnsupportedModelError, match=message):
        read_torch(module)


# ---------------------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path):
    """A path that does not exist is named, with the accepted forms."""
    path = tmp_path / "nope.pt"
    with pytest.raises(TorchSourceError, match=r"nope\.pt: no such file .*TorchScript"):
        read_torch(path)


@pytest.mark.parametrize(
    "content",
    [b"this is not a model\n", np.random.default_rng(1).bytes(4096), b"PK\x03\x04broken zip"],
    ids=["text", "random-bytes", "broken-zip"],
)
def test_garbage_file(tmp_path, content):
    """Bytes that are not a PyTorch file are named as such."""
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(TorchSourceError, match=r"garbage\.pt: is not a PyTorch file"):
        read_torch(path)


def test_pickle_prefix_that_is_not_torch(tmp_path):
    """Bytes that open like a pickle (legacy torch.save) but are not one: not a PyTorch file."""
    path = tmp_path / "fake.pt"
    path.write_bytes(b"\x80\x02" + np.random.default_rng(2).bytes(512))
    with pytest.raises(TorchSourceError, match=r"fake\.pt: is not a PyTorch file torch\.load"):
        read_torch(path)


def test_source_of_another_type():
    """A state dict passed as a dict (not a file) is refused with the accepted forms."""
    with pytest.raises(TorchSourceError, match=r"got a OrderedDict; expected a live torch\.nn"):
        read_torch(nn.Linear(2, 1).state_dict())


def test_zip_that_is_not_torch(tmp_path):
    """A zip archive (a .keras file, say) is not mistaken for a torch file."""
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(TorchSourceError, match=r"model\.keras: is not a PyTorch file"):
        read_torch(path)


def test_state_dict_without_factory(torch_models):
    """A state_dict alone cannot say how its weights are wired: the error asks for factory=."""
    message = r"lstm2\.state_dict\.pt: holds a state_dict.*factory="
    with pytest.raises(TorchSourceError, match=message):
        read_torch(torch_models["torch-lstm2-factory"].path)


def test_pickled_whole_module_is_refused(tmp_path):
    """torch.save(model) needs unpickling arbitrary code: refused, listing the accepted forms."""
    path = tmp_path / "whole.pt"
    torch.save(_Wrap(nn.LSTM(1, 4), nn.Linear(4, 1)), path)
    message = r"whole\.pt: holds a pickled Python object \(test_torch_reader\._Wrap\).*Accepted:"
    with pytest.raises(TorchSourceError, match=message):
        read_torch(path, factory="x.py:build")


def test_factory_with_torchscript_or_live_module(torch_models):
    """factory= only makes sense with a state_dict file."""
    model = torch_models["torch-lstm2"]
    message = r"scripted\.pt: is a TorchScript archive.*drop factory="
    with pytest.raises(TorchSourceError, match=message):
        read_torch(model.path, factory="x.py:build")
    with pytest.raises(TorchSourceError, match=r"factory= applies only to a state_dict file"):
        read_torch(model.module, factory="x.py:build")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_colon_here", r"factory 'no_colon_here': expected 'path/to/file\.py:build'"),
        ("{dir}/absent.py:build", r"file .*absent\.py does not exist"),
        ("{dir}/airline_factory.py:make", r"airline_factory\.py has no attribute 'make'"),
        ("{dir}/airline_factory.py:", r"expected 'path/to/file\.py:build'"),
        ("edge_lstm_nonexistent_pkg.models:build", r"module 'edge_lstm_nonexistent_pkg\.models'"),
        ("{dir}/broken.py:build", r"importing .*broken\.py failed: NameError"),
        ("{dir}/not_module.py:build", r"build\(\) returned a dict, not a torch\.nn\.Module"),
    ],
    ids=["no-colon", "no-file", "no-attribute", "no-name", "no-module", "raises", "not-a-module"],
)
def test_bad_factory(torch_models, spec, message):
    """Each way a factory spec can be wrong names the file or module and the attribute."""
    model = torch_models["torch-lstm2-factory"]
    folder = model.path.parent
    (folder / "broken.py").write_text("undefined_name\n")
    (folder / "not_module.py").write_text("def build():\n    return {}\n")
    with pytest.raises(TorchSourceError, match=message):
        read_torch(model.path, factory=spec.format(dir=folder))


def test_factory_from_an_importable_module(torch_models, monkeypatch):
    """'package.module:attr' imports from sys.path, like any Python module."""
    model = torch_models["torch-lstm2-factory"]
    monkeypatch.syspath_prepend(str(model.path.parent))
    stack = read_torch(model.path, factory="airline_factory:build")
    assert np.abs(reference(stack).run_window(model.windows) - model.expected).max() <= TOL


def test_state_dict_that_does_not_fit_the_factory(tmp_path, torch_models):
    """Weights for another architecture: the error lists the keys and shapes that differ."""
    model = torch_models["torch-lstm2-factory"]
    other = tmp_path / "small_factory.py"
    other.write_text(
        "from torch import nn\n"
        "class Small(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.rnn = nn.LSTM(1, 16, batch_first=True)\n"
        "        self.head = nn.Linear(16, 1)\n"
        "def build():\n"
        "    return Small()\n"
    )
    with pytest.raises(TorchSourceError) as caught:
        read_torch(model.path, factory=f"{other}:build")
    text = str(caught.value)
    assert "lstm2.state_dict.pt: state_dict does not fit the module built by" in text
    assert "not in the module: rnn.bias_hh_l1" in text
    assert "rnn.weight_hh_l0 [128, 32] in the file vs [64, 16] in the module" in text
