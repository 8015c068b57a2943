"""`edge-lstm verify`: what each variant costs in accuracy, and whether continuous mode drifts."""

from __future__ import annotations

from pathlib import Path

import click

from edge_lstm.bundle import Bundle
from edge_lstm.csvfile import read_series
from edge_lstm.drift import drift_report


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), metavar="CSV",
              help="A series with a header row; columns named like the bundle's features.")
@click.option("--backend", default="auto", show_default=True, help="Engine for the drift check: auto, onnx, litert, numpy.")
@click.option("--precision", default=None, help="Variant for the drift check (default: the most accurate).")
@click.option("--holdout", default=0.2, show_default=True, help="Share of the series (its end) the variants are scored on.")
@click.option("--strict", is_flag=True, help="Exit 1 when continuous mode drifts past the tolerance.")
def verify(bundle: Path, data: Path, backend: str, precision: str | None, holdout: float, strict: bool) -> None:
    """Score every variant on a held-out series, and measure continuous-mode drift.

    \b
    1. Each variant (fp32, int8, fp16; ONNX and TFLite) forecasts the last --holdout of the
       series in exact mode: RMSE and MAE in sensor units, change versus fp32, size, p50 step.
    2. Continuous mode (state carried forever) against exact mode (the window model
       reproduced): how far the forecasts drift, per step after the warm-up.

    \b
    Example:
      edge-lstm verify bundles/airline --data airline-passengers.csv
    """
    b = Bundle.open(bundle)
    series = read_series(data, b.features)
    try:
        from edge_lstm_export.variant_report import evaluate_variants, format_table
    except ImportError:
        click.echo("(variant scores need the export package's report module; showing drift only)")
    else:
        steppable = [v for v in b.variants if v.backend in ("onnx", "litert")]
        cols = [b.features.index(t) for t in b.targets] if set(b.targets) <= set(b.features) else None
        reports = evaluate_variants(steppable, series=series, window=b.window,
                                    holdout_start=int(len(series) * (1 - holdout)), target_columns=cols)
        click.echo(f"variants, forecasting the last {holdout:.0%} of {data.name} ({len(series)} rows):")
        click.echo(format_table(reports))
        click.echo("")
    report = drift_report(b, series, backend=backend, precision=precision)
    click.echo(report.table())
    if strict and not report.safe:
        raise SystemExit(1)
