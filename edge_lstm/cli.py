"""The `edge-lstm` command line: one click group; each subcommand lives in edge_lstm.commands.

Exit codes: 0 ok, 1 runtime failure, 2 usage or config error (bad file, bad option, bad bundle).
"""

from __future__ import annotations

import click

from edge_lstm import __version__
from edge_lstm.commands import exit_with
from edge_lstm.errors import EdgeLstmError


class _Group(click.Group):
    """Turns edge-lstm's own errors into one clear line on stderr and the right exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgeLstmError as exc:
            exit_with(exc)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-lstm")
def main() -> None:
    """edge-lstm: LSTM/GRU forecasters stepped one sample at a time, on small devices.

    \b
    Workstation:  edge-lstm export model.keras --out bundles/airline --fit-scaler train.csv
    Device:       edge-lstm run --config configs/pi-mqtt.toml
    Anywhere:     edge-lstm subscribe --broker localhost 'edge/+/pred/#'
    """


def _register() -> None:
    from edge_lstm.commands.bench import bench
    from edge_lstm.commands.demo import demo
    from edge_lstm.commands.export import export
    from edge_lstm.commands.inspect import inspect
    from edge_lstm.commands.publish_bundle import keygen, publish_bundle
    from edge_lstm.commands.replay import replay
    from edge_lstm.commands.run import run
    from edge_lstm.commands.subscribe import subscribe
    from edge_lstm.commands.verify import verify

    for command in (demo, export, inspect, verify, run, subscribe, replay, bench, publish_bundle, keygen):
        main.add_command(command)


_register()
