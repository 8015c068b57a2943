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
