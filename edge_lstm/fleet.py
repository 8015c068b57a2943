"""Fleet features attached to the daemon as add-ons: Home Assistant discovery, signed rollout.

The daemon knows them only through the `AddOn` hooks below and gives them a narrow `Host`
(its config, its broker link, the running runtime, events, errors, and a way to run code on
the inference thread). Everything else about them lives in their own modules
(`edge_lstm.homeassistant`, `edge_lstm.rollout`), which use nothing of the daemon's but this
`Host` (and `daemon.verify_bundle`, the one way a bundle is checked whole).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from edge_lstm.config import Config


class Host(Protocol):
    """What an add-on may use of the daemon that runs it."""

    cfg: Config
    link: Any  # edge_lstm.mqtt.MqttLink (None without a broker; add-ons that need one are refused by config)
    runtime: Any  # edge_lstm.forecaster.Runtime: read it only on the inference thread (or attributes elsewhere)

    def event(self, name: str, **fields: Any) -> None:
        """Publish one event on the events topic."""

    def report(self, code: str, problem: str, **where: Any) -> None:
        """Publish one error document on the errors topic (rate limited)."""

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the inference thread between two batches (where the runtime may change)."""

    def load_bundle(self, path: Path, *, reason: str) -> None:
        """Inference thread: verify and hot-swap to the bundle at `path` (raises on failure)."""


class AddOn:
    """Hooks the daemon calls; each does nothing unless an add-on overrides it."""

    def start(self) -> None:
        """Before the broker link connects: subscribe, register on-connect hooks."""

    def after_batch(self, batch: Sequence[Any], results: Sequence[Any]) -> None:
        """Inference thread: a batch was stepped and its forecasts sent (`results[i]` is the
        runtime's answer to `batch[i]`: a Forecast, Dropped or SampleError)."""

    def batch_failed(self, exc: BaseException) -> None:
        """Inference thread: stepping a batch raised `exc` (the daemon reported it and carries on)."""

    def model_loaded(self) -> None:
        """Inference thread: a bundle was swapped in."""

    def stop(self) -> None:
        """At shutdown, after the last batch, before the link disconnects."""


def bundle_to_run(cfg: Config) -> None:
    """Before the runtime opens: with rollout on, the bundle a rollout installed last (and did
    not roll back) replaces `model.bundle`; a rollout that was still being watched when the
    daemon died is rolled back here."""
    if cfg.rollout.enabled:
        from edge_lstm.rollout import Store

        current = Store.for_config(cfg).recover()
        if current is not None:
            cfg.model.bundle = str(current)


def attach(host: Host) -> list[AddOn]:
    """The add-ons `host.cfg` switches on, in the order their hooks run."""
    addons: list[AddOn] = []
    if host.cfg.homeassistant.enabled:
        from edge_lstm.homeassistant import HomeAssistant

        addons.append(HomeAssistant(host))
    if host.cfg.rollout.enabled:
        from edge_lstm.rollout import RolloutAgent

        addons.append(RolloutAgent(host))
    return addons
