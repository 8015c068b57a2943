"""`edge-lstm run`: the edge daemon (MQTT or serial samples in, forecasts out)."""

from __future__ import annotations

import logging
import sys

import click

from edge_lstm import config as config_mod
from edge_lstm.commands import exit_with
from edge_lstm.errors import ConfigError, EdgeLstmError


def setup_logging(level: str) -> None:
    """One line per record on stderr (journald adds its own timestamps under systemd)."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def continuous_drift_warning(cfg: config_mod.Config) -> str | None:
    """The drift export measured, when the config runs continuous mode on a bundle whose
    forecasts wander off in that mode (see edge_lstm.drift)."""
    from edge_lstm.drift import continuous_mode_warning, recorded

    return continuous_mode_warning(recorded(cfg.model.bundle)) if cfg.model.mode == "continuous" else None


def check_config(cfg: config_mod.Config, problems: list[str] | None = None) -> str:
    """What `--check` verifies beyond the config: files, the bundle's hashes, the engine.

    `problems` (from `config.load(..., problems=...)`) gets what these checks find too, and
    one ConfigError then reports them all; with none, a summary of what would run."""
    from edge_lstm.daemon import open_runtime, verify_bundle

    problems = [] if problems is None else problems
    config_mod.check_files(cfg, problems)
    if cfg.model.bundle:  # else the config check has said that model.bundle is missing
        try:
            bundle = verify_bundle(cfg.model.bundle)
            rt = open_runtime(cfg, bundle)
        except EdgeLstmError as exc:
            problems.append(f"{cfg.source_file}: key 'model.bundle': {exc}")
    if problems:
        raise ConfigError(*problems)
    fleet = ""
    if cfg.homeassistant.enabled:
        fleet += f"\n  homeassistant  discovery configs under {cfg.homeassistant.prefix}/"
    if cfg.rollout.enabled:
        from edge_lstm.signing import key_id, load_public_key

        ids = ", ".join(key_id(load_public_key(p)) for p in cfg.rollout.trusted_keys)
        from edge_lstm.rollout import Store

        cur = Store.for_config(cfg).state.get("current")
        fleet += (f"\n  rollout  signed bundles on {cfg.rollout.topic.format(device=cfg.device_id)}, trusted keys {ids}; "
                  f"runs {cur['path'] + ' (installed by a rollout)' if cur else 'model.bundle until a rollout'}")
    where = f"{cfg.mqtt.host}:{cfg.broker_port}" + (" (TLS)" if cfg.mqtt.tls.enabled else "") if cfg.uses_mqtt else "no broker"
    warning = continuous_drift_warning(cfg)
    return (
        f"{cfg.source_file}: OK\n"
        f"  device   {cfg.device_id}   broker {where}\n"
        f"  model    {bundle.name} ({bundle.path}, sha256 {bundle.sha256[:12]}) on {rt.backend_name}/{rt.precision}, "
        f"{cfg.model.mode} mode, window {rt.window}, features {', '.join(rt.features)}\n"
        f"  source   {cfg.source.kind}   sink {cfg.sink.kind}   snapshot {cfg.snapshot.path or 'off'}"
        + fleet
        + (f"\n  warning: {warning}" if warning else "")
    )


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Daemon config file (TOML); see configs/ for examples.")
@click.option("--check", is_flag=True, help="Validate the config, the files it names and the bundle, then exit.")
@click.option("--bundle", metavar="DIR", help="Bundle directory to run instead of the config's model.bundle.")
@click.option("--broker", metavar="URL", help="mqtt://[user@]host[:port] or mqtts://...; overrides [mqtt] "
              "(a bare host[:port] keeps the config's TLS setting).")
@click.option("--allow-plaintext", is_flag=True,
              help="Let an mqtt:// --broker turn off the TLS the config enables (clear-text password and samples).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None,
              help="Override log.level.")
def run(config_path: str, check: bool, bundle: str | None, broker: str | None, allow_plaintext: bool,
        log_level: str | None) -> None:
    """Run the edge daemon: samples in (MQTT or serial), forecasts out.

    \b
    Examples:
      edge-lstm run --config configs/pi-mqtt.toml
      edge-lstm run --config configs/pi-mqtt.toml --check
      edge-lstm run --config configs/demo.toml --bundle bundles/airline
      EDGE_MQTT_PASSWORD=... edge-lstm run --config configs/serial.toml --broker mqtts://dev@broker.lan

    SIGTERM/SIGINT drain the queue, snapshot the streams and exit 0; SIGHUP reloads the
    bundle. Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.
    """
    try:
        problems: list[str] = []  # every problem of the config and its files (--check: and bundle) at once
        cfg = config_mod.load(config_path, bundle=bundle, broker=broker, allow_plaintext=allow_plaintext,
                              problems=problems)
        if broker is not None:
            env = cfg.mqtt.password_env or "e.g. EDGE_MQTT_PASSWORD"
            warning = config_mod.password_in_url_warning(broker, f"${env}, named by mqtt.password_env")
            if warning:
                click.echo(warning, err=True)
        setup_logging(log_level or cfg.log.level)
        if check:
            click.echo(check_config(cfg, problems))
            return
        config_mod.check_files(cfg, problems)
        if problems:
            raise ConfigError(*problems)
        warning = continuous_drift_warning(cfg)
        if warning:
            logging.getLogger("edge_lstm.run").warning("%s", warning)
        from edge_lstm.daemon import Daemon

        daemon = Daemon(cfg)
    except EdgeLstmError as exc:
        exit_with(exc)
    sys.exit(daemon.run_forever())


if __name__ == "__main__":  # python -m edge_lstm.commands.run (tests, or without the entry point)
    run()
