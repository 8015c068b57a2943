"""The command topic: parse and check remote commands before the daemon acts on them.

Commands are JSON objects on `edge/<device>/cmd`:

    {"cmd": "reset", "stream": "s1"}
    {"cmd": "prime", "stream": "s1", "values": [[112], [118], [132]]}
    {"cmd": "load", "bundle": "airline-gru"}
    {"cmd": "snapshot"}

An optional `"id"` (string, up to 64 characters) is echoed in the reply on the events topic.
The topic is a way into the device, so everything is checked: the size, the JSON, the
command name against `commands.allow`, unknown keys, the stream id, and above all the bundle
name of `load`: a plain name (letters, digits, `.`, `_`, `-`), no path and no `..`, resolved
inside the configured bundle directory; the daemon then verifies every file of that bundle
against its manifest hashes before swapping.

Whatever the bytes, `parse` returns a `Command` or raises `CommandError` (tests fuzz it): the
JSON rules are the sample payloads' (`edge_lstm.payload.parse_json`: no NaN, no number outside
the float32 range, no repeated key, bounded nesting).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_lstm.errors import EdgeLstmError
from edge_lstm.payload import PayloadError, number, parse_json, validate_stream_id

MAX_COMMAND = 65536
COMMANDS = {
    "reset": {"stream"},
    "prime": {"stream", "values"},
    "load": {"bundle"},
    "snapshot": set(),
}
_BUNDLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class CommandError(EdgeLstmError):
    """Raised when a command is refused; the message says why (published on the errors topic)."""

    def __init__(self, problem: str, *, cmd: str | None = None, id: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.cmd = cmd
        self.id = id


@dataclass(frozen=True)
class Command:
    """A checked command, ready to run."""

    cmd: str
    id: str | None = None
    stream: str | None = None
    values: list[list[float]] = field(default_factory=list)
    bundle: Path | None = None


def bundle_path(name: Any, bundle_dir: Path) -> Path:
    """The bundle directory `name` names inside `bundle_dir`; CommandError for anything else."""
    if not isinstance(name, str) or not _BUNDLE_NAME.fullmatch(name) or ".." in name:
        raise CommandError(
            f"bundle must be a plain bundle name (letters, digits, '.', '_', '-'; no path, no '..'), "
            f"found {name!r}"
        )
    root = bundle_dir.resolve()
    path = (root / name).resolve()
    if path.parent != root:  # a symlink pointing out of the bundle directory
        raise CommandError(f"bundle {name!r} resolves outside the bundle directory {root}")
    if not (path / "manifest.json").is_file():
        have = sorted(p.name for p in root.iterdir() if (p / "manifest.json").is_file()) if root.is_dir() else []
        raise CommandError(f"no bundle {name!r} in {root}; available: {have}")
    return path


def parse(payload: bytes, *, allow: list[str], bundle_dir: Path, features: int) -> Command:
    """Check one command payload; raise CommandError saying exactly what is wrong."""
    if len(payload) > MAX_COMMAND:
        raise CommandError(f"command is {len(payload)} bytes, the limit is {MAX_COMMAND}")
    try:
        doc = parse_json(bytes(payload).decode("utf-8").removeprefix("\ufeff"), what="command")
    except UnicodeDecodeError as exc:
        raise CommandError(f"command is not UTF-8 text (byte 0x{payload[exc.start]:02x} at offset {exc.start})") from None
    except PayloadError as exc:
        raise CommandError(exc.problem) from None
    if not isinstance(doc, dict):
        raise CommandError('command must be a JSON object like {"cmd": "reset", "stream": "s1"}')
    cid = doc.get("id")
    if cid is not None and (not isinstance(cid, str) or len(cid) > 64):
        raise CommandError("'id' must be a string of at most 64 characters")
    name = doc.get("cmd")
    if not isinstance(name, str) or name not in COMMANDS:
        raise CommandError(f"'cmd' must be one of {sorted(COMMANDS)}, found {_shown(name)}", id=cid)
    if name not in allow:
        raise CommandError(f"command {name!r} is switched off on this device (commands.allow)", cmd=name, id=cid)
    extra = set(doc) - COMMANDS[name] - {"cmd", "id"}
    if extra:
        raise CommandError(f"{name}: unexpected keys {sorted(extra)}; expected {sorted(COMMANDS[name])}", cmd=name, id=cid)
    missing = COMMANDS[name] - set(doc)
    if missing:
        raise CommandError(f"{name}: missing {sorted(missing)}", cmd=name, id=cid)
    try:
        stream = validate_stream_id(doc["stream"]) if "stream" in doc else None
    except PayloadError as exc:
        raise CommandError(f"{name}: {exc.problem}", cmd=name, id=cid) from None
    values: list[list[float]] = []
    if name == "prime":
        rows = doc["values"]
        if not isinstance(rows, list) or not rows:
            raise CommandError(f"prime: 'values' must be a non-empty list of samples, found {_shown(rows)}", cmd=name, id=cid)
        for i, row in enumerate(rows):
            row = row if isinstance(row, list) else [row]
            if len(row) != features:
                raise CommandError(
                    f"prime: sample {i} must be {features} number(s), found {_shown(row)}", cmd=name, id=cid
                )
            try:
                values.append([number(v, f"sample {i} value {j + 1}") for j, v in enumerate(row)])
            except PayloadError as exc:
                raise CommandError(f"prime: {exc.problem}", cmd=name, id=cid) from None
    bundle = None
    if name == "load":
        try:
            bundle = bundle_path(doc["bundle"], bundle_dir)
        except CommandError as exc:
            raise CommandError(f"load: {exc.problem}", cmd=name, id=cid) from None
    return Command(name, cid, stream, values, bundle)


def _shown(x: Any) -> str:
    """`x` for a message: its repr, cut short."""
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."
