"""The model corpus (tests/corpus.py): models built the way public recipes build them export
exactly, or are refused for the true reason, or fail the export when parity does.

"Exact" is checked the way a device runs the bundle: the runtime's exact mode fed the series
one sample at a time must give, after each sample, what the framework itself predicts for the
window ending there, on CHECKED_WINDOWS (52) windows, with ONNX Runtime and with NumPy.
Tolerance 1e-5 in model units (data in [0, 1]): fp32 rounding through up to 72 recurrent
steps stays near 1e-6; a wrong activation, gate order or missed layer is off by 1e-2 or more.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner

import corpus
from edge_lstm.cli import main
from edge_lstm_export.exporter import export_model
from edge_lstm_export.parity import ParityError
from edge_lstm_export.stack import UnsupportedModelError

TOL = 1e-5
README = Path(__file__).resolve().parent.parent / "README.md"


class Corpus(Mapping):
    """Entry name -> `corpus.Built`, trained and saved on first use (once per session)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._built: dict[str, corpus.Built] = {}

    def __getitem__(self, name: str) -> corpus.Built:
        if name not in self._built:
            entry = corpus.BY_NAME[name]
            pytest.importorskip("keras" if entry.framework == "keras" else "torch")
            folder = self._folder / name
            folder.mkdir(exist_ok=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # keras input_shape= and torch.jit deprecations: the recipes' own
                self._built[name] = entry.build(folder)
        return self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(corpus.BY_NAME)

    def __len__(self) -> int:
        return len(corpus.BY_NAME)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    return Corpus(tmp_path_factory.mktemp("corpus"))


def _marks(entry: corpus.Entry) -> list:
    return [pytest.mark.tensorflow if entry.framework == "keras" else pytest.mark.torch]


def _ids(outcome: str) -> list:
    return [pytest.param(e.name, marks=_marks(e), id=e.name) for e in corpus.ENTRIES if e.outcome.startswith(outcome)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", _ids("exact"))
def test_exports_and_exact_mode_equals_the_framework(models: Corpus, name: str, tmp_path: Path) -> None:
    built = models[name]
    result = export_model(built.source, tmp_path / "bundle", data=built.series, **built.export_kwargs)
    if name.startswith("keras22"):  # Keras 3 cannot be the reference for Keras 2's hard_sigmoid: said so
        assert any("hard_sigmoid (clip(0.2x+0.5))" in note for note in result.notes), result.notes
    for backend in ("onnx", "numpy"):
        err, windows = corpus.exact_mode_error(built, tmp_path / "bundle", backend)
        assert windows >= 50
        assert err <= TOL, f"{name} {backend}: exact mode is {err:.2e} from the framework"


@pytest.mark.parametrize("name", _ids("refused"))
def test_refused_with_the_layer_and_the_reason(models: Corpus, name: str, tmp_path: Path) -> None:
    entry, built = corpus.BY_NAME[name], models[name]
    with pytest.raises(UnsupportedModelError) as caught:
        export_model(built.source, tmp_path / "bundle", **built.export_kwargs)
    message = str(caught.value)
    assert entry.refused_layer in message and entry.outcome.removeprefix("refused: ") in message, message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", _ids("parity fails"))
def test_failed_parity_exits_1_and_writes_nothing(models: Corpus, name: str, tmp_path: Path) -> None:
    """The export's own parity check catches what the reader could not see: exit 1, the
    message names the variants, the tolerance and why, and no bundle (nor a temporary folder)
    is left; an older bundle at --out stays as it was."""
    built = models[name]
    with pytest.raises(ParityError, match=r"(?s)onnx/fp32 vs torch\.forward .* > tolerance .*could not be traced"):
        export_model(built.source, tmp_path / "bundle", **built.export_kwargs)
    assert list(tmp_path.iterdir()) == []
    old = tmp_path / "bundle"
    old.mkdir()
    (old / "manifest.json").write_text('{"an": "older bundle"}')
    args = [str(built.source), "--out", str(old), "--window", str(built.window),
            "--torch-factory", built.export_kwargs["torch_factory"]]
    result = CliRunner().invoke(main, ["export", *args])
    assert result.exit_code == 1, result.output
    assert "error: the exported bundle does not reproduce the source model" in result.output
    assert "runtime exact mode (onnx/fp32)" in result.output  # the figures are printed too
    assert list(tmp_path.iterdir()) == [old] and list(old.iterdir()) == [old / "manifest.json"]
    assert (old / "manifest.json").read_text() == '{"an": "older bundle"}'


def test_readme_lists_the_corpus() -> None:
    """README's "Models accepted" corpus table is `python tests/corpus.py`'s output."""
    text = README.read_text()
    found = re.search(r"<!-- corpus table: python tests/corpus.py -->\n(.*?)\n\n", text, re.S)
    assert found, "README has no corpus table marker"
    assert found.group(1).strip() == corpus.readme_table().strip()
