"""README.md stays true: its opening commands, its config reference, its command names."""

from __future__ import annotations

import re
from pathlib import Path

from edge_lstm import config
from edge_lstm.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_opens_with_the_two_commands() -> None:
    """The first code block: install + demo, install + tests (what CI runs)."""
    first = re.search(r"```bash\n(.*?)```", README, re.S).group(1).splitlines()
    assert first[0].startswith("pip install -e '.[demo]' && edge-lstm demo")
    assert first[1].startswith("pip install -e '.[dev]' && pytest")
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "pip install -q -e '.[dev]' && pytest" in ci


def test_config_reference_matches_the_schema() -> None:
    """Every key of the config schema is in the reference table with its default, and the
    table names no key the schema does not have."""
    rows = re.findall(r"^\| `([a-z_.]+)` \| ([a-z ]+) \| (.*?) \|", README, re.M)
    documented = {key: (typ, default) for key, typ, default in rows}
    keys = config.schema()
    assert set(documented) == {k.key for k in keys}
    for k in keys:
        typ, default = documented[k.key]
        assert typ == k.type, k.key
        shown = default.strip("`")
        if isinstance(k.default, bool):
            assert shown == str(k.default).lower(), k.key
        elif isinstance(k.default, str):
            assert shown == f'"{k.default}"', k.key
        elif isinstance(k.default, (int, float)):
            assert float(shown) == float(k.default), k.key


def test_every_command_named_exists() -> None:
    """Each `edge-lstm <command>` the README shows is a real subcommand."""
    named = set(re.findall(r"(?:^|&& |`)edge-lstm ([a-z][a-z-]*[a-z])", README, re.M))
    assert {"demo", "export", "inspect", "run", "subscribe", "bench", "verify", "replay"} <= named
    assert named <= set(main.commands), named - set(main.commands)


def _inspect_lines(text: str) -> list[str]:
    """`inspect` output with what differs from run to run masked: the bundle's path, its
    creation time, the hashes of the manifest and of the .keras file (a zip with timestamps),
    and the step timings."""
    for pattern, repl in (
        (r"^bundle    \S+  \(", "bundle    <path>  ("),
        (r"manifest sha256 [0-9a-f]{12}", "manifest sha256 <sha>"),
        (r"^(source    keras \S+) [0-9a-f]{12}$", r"\1 <sha>"),
        (r"^created   \S+$", "created   <time>"),
        (r"p50 [\d.]+ us", "p50 <t> us"),
    ):
        text = re.sub(pattern, repl, text, flags=re.M)
    return text.strip("\n").splitlines()


def test_inspect_block_is_real_output() -> None:
    """The README's `inspect` block is what `edge-lstm inspect` prints for the Quick start's
    bundle. The Quick start retrains the shipped bundle's model (fixed seeds: the same model
    files, byte for byte), so a fresh `inspect` of the shipped bundle must match the block
    line by line, masked as above; the block's only extra lines are the baselines the Quick
    start adds with --baseline-windows."""
    from edge_lstm.bundle import Bundle
    from edge_lstm.commands.inspect import describe

    block = re.search(r"The real\noutput of `inspect`.*?```\n(.*?)```", README, re.S).group(1)
    shown = [line for line in _inspect_lines(block) if "baseline: whole window" not in line]
    shipped = Path(__file__).resolve().parent.parent / "edge_lstm" / "demo" / "airline"
    assert shown == _inspect_lines(describe(Bundle.open(shipped)))
    assert len(_inspect_lines(block)) == len(shown) + 3  # window-12, -48 and -96.onnx
