"""The `edge-lstm` subcommands, one module each."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click

from edge_lstm.errors import EdgeLstmError


def exit_with(exc: EdgeLstmError) -> NoReturn:
    """End a command on one of edge-lstm's own errors: an `error: ...` line on stderr for each
    problem it reports, and its exit code (1 failure, 2 usage or config)."""
    for line in str(exc).splitlines() or [type(exc).__name__]:
        click.echo(f"error: {line}", err=True)
    sys.exit(exc.exit_code)


def connect_or_exit(broker: str, *, ca_file: str | None, password_env: str | None):
    """A connected paho client for a command-line tool, or one clear error line and the exit code.

    (The commands also run as `python -m edge_lstm.commands.<name>`, outside the CLI group
    that reports errors, so they say it themselves.)
    """
    from edge_lstm.config import password_in_url_warning
    from edge_lstm.mqtt import connect_client

    warning = password_in_url_warning(broker, "--password-env VAR")
    if warning:
        click.echo(warning, err=True)
    password = os.environ.get(password_env) if password_env else None
    try:
        return connect_client(broker, ca_file=ca_file, password=password)
    except EdgeLstmError as exc:
        exit_with(exc)
