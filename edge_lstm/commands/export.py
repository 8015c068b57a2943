"""`edge-lstm export`: the workstation side, imported only when the command runs."""

from __future__ import annotations

from pathlib import Path

import click

from edge_lstm.errors import ConfigError


def _names(value: str | None) -> list[str] | None:
    return [n.strip() for n in value.split(",") if n.strip()] if value else None


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option("--name", help="Model name in the manifest and in every prediction (default: the file's stem).")
@click.option("--scaler", "scaler_specs", multiple=True, metavar="SPEC",
              help="minmax:MIN,MAX or standard:MEAN,STD, once per feature (or once for all), or a scaler .json file.")
@click.option("--target-scaler", "target_scaler_specs", multiple=True, metavar="SPEC",
              help="Same for the targets, when they are not the features.")
@click.option("--fit-scaler", type=click.Path(path_type=Path), metavar="CSV",
              help="Fit a MinMaxScaler on this CSV's numeric columns (the classic recipe); also used for parity.")
@click.option("--data", type=click.Path(path_type=Path), metavar="CSV", help="Held-out series for the parity check.")
@click.option("--feature-names", help="Comma-separated feature names (default: the CSV header, else x0,x1,...).")
@click.option("--target-names", help="Comma-separated target names (default: the feature names).")
@click.option("--torch-factory", metavar="FILE.py:FUNC", help="PyTorch: code that builds the module a state_dict file fits.")
@click.option("--features", type=int, help="PyTorch: input feature count, as a cross-check.")
@click.option("--window", type=int, help="Samples per training window, when the model does not record it (PyTorch).")
@click.option("--cell", type=click.Choice(["matmul", "op"]), default="matmul", show_default=True,
              help="ONNX form of the recurrent cell (matmul measured faster; see README).")
@click.option("--formats", default="onnx", show_default=True, help="Comma-separated: onnx, tflite (tflite needs TensorFlow).")
@click.option("--quantize", default="", metavar="KINDS", help="Comma-separated: dynamic, static, fp16, int16x8 (TFLite only).")
@click.option("--calibration", type=click.Path(path_type=Path), metavar="CSV",
              help="Series for static quantization (default: --data / --fit-scaler).")
@click.option("--baseline-windows", default="", metavar="W,W", help="Also write whole-window ONNX models for `bench` (e.g. 12,48,96).")
@click.option("--unit", "units", multiple=True, metavar="TARGET=UNIT",
              help="A target's unit, recorded in the manifest (Home Assistant shows it); repeatable.")
def export(model: Path, out: Path, name, scaler_specs, target_scaler_specs, fit_scaler, data, feature_names,
           target_names, torch_factory, features, window, cell, formats, quantize, calibration, baseline_windows,
           units) -> None:
    """Turn a trained Keras or PyTorch model into a bundle, and prove it matches.

    Every fp32 variant, and the runtime's exact mode, must reproduce the framework's own
    prediction (within 1e-4 of the output scale) or the export exits 1 and writes nothing.

    \b
    Accepted models:
      model.keras / model.h5           Keras 3 archive or legacy HDF5 (no TensorFlow needed)
      model.pt                         TorchScript (torch.jit.script / trace + save); add --window
      weights.pt --torch-factory f.py:build   a state_dict plus the code that builds the module

    \b
    Examples (the classic airline recipe, scaled with a MinMaxScaler fitted on the series):
      edge-lstm export airline.keras --out bundles/airline --fit-scaler airline-passengers.csv
      edge-lstm export airline.keras --out bundles/airline --fit-scaler airline-passengers.csv \\
          --formats onnx,tflite --quantize dynamic,static,fp16
    """
    try:
        from edge_lstm_export.exporter import export_model
        from edge_lstm_export.parity import ParityError
    except ImportError as exc:
        raise ConfigError(
            f"export needs the workstation tools ({exc.name} is missing): pip install 'edge-lstm[export]'"
        ) from None
    windows = tuple(int(w) for w in baseline_windows.split(",") if w.strip())
    unit_map = dict(u.split("=", 1) for u in units if "=" in u)
    if len(unit_map) != len(units) or not all(unit_map.values()):
        raise click.BadParameter("expected TARGET=UNIT, e.g. --unit passengers=k", param_hint="--unit")
    try:
        result = export_model(
            model, out, name=name, scaler_specs=scaler_specs, target_scaler_specs=target_scaler_specs,
            fit_scaler=fit_scaler, data=data, feature_names=_names(feature_names), target_names=_names(target_names),
            torch_factory=torch_factory, features=features, window=window, cell=cell, baseline_windows=windows,
            formats=tuple(_names(formats) or ("onnx",)), quantize=tuple(_names(quantize) or ()),
            calibration=calibration, progress=True, units=unit_map or None,
        )
    except ParityError as exc:
        if exc.result is not None:
            _print_parity(exc.result)
        raise
    click.echo(f"wrote {result.bundle}")
    _print_parity(result)
    if result.accuracy:
        from edge_lstm_export.variant_report import format_table

        click.echo("")
        click.echo("held-out forecasts (last 20 % of --data), sensor units:")
        click.echo(format_table(result.accuracy))
    for note in result.notes:
        click.echo(f"note: {note}")
    if result.drift is not None:
        from edge_lstm.drift import verdict

        click.echo(verdict(result.drift))


def _print_parity(result) -> None:
    click.echo(f"{'variant':31} {'compared with':18} {'windows':>7} {'max abs':>10} {'rmse':>10} {'p50 step':>9}")
    for p in result.parity:
        lat = result.latency_us.get(p.variant)
        click.echo(f"{p.variant:31} {p.reference:18} {p.windows:7d} {p.max_abs:10.2e} {p.rmse:10.2e} "
                   f"{(f'{lat:.1f} us' if lat else '-'):>9}")
