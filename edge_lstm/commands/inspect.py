"""`edge-lstm inspect`: what a bundle holds, how big, and its state layout."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_lstm.bundle import Bundle
from edge_lstm.drift import recorded, verdict


def describe(bundle: Bundle) -> str:
    """A human-readable summary of the bundle (the text `inspect` prints)."""
    m = bundle.manifest
    src = m.get("source", {})
    lines = [
        f"bundle    {bundle.path}  ({bundle.name}, format v{m['format_version']}, manifest sha256 {bundle.sha256[:12]})",
        f"source    {src.get('framework', '?')} {src.get('file', '')} {src.get('sha256', '')[:12]}",
        f"created   {m.get('created', '?')}",
        f"features  {', '.join(bundle.features)}   targets {', '.join(bundle.targets)}   window {bundle.window}",
    ]
    sc = m.get("scaler", {"kind": "none"})
    if sc.get("kind", "none") == "none":
        lines.append("scaler    none (the model sees raw sensor values)")
    else:
        lines.append(f"scaler    {sc['kind']}: x_min {sc['x_min']} x_scale {[round(v, 6) for v in sc['x_scale']]} (folded into the step model)")
    lines.append(f"state     {bundle.state_size} floats per stream ({bundle.state_size * 4} bytes)")
    for j, d in enumerate(m.get("pre", [])):
        lines.append(f"  pre {j}    dense {d['units']:4d} units  activation {d['activation']}  (on each sample)")
    for k, layer in enumerate(bundle.layers):
        slices = "  ".join(f"{key}[{layer[key][0]}:{layer[key][1]}]" for key in ("h", "c") if key in layer)
        extra = f" reset_after={layer['reset_after']}" if "reset_after" in layer else ""
        lines.append(f"  layer {k}  {layer['kind']:4} {layer['units']:4d} units  {slices}{extra}")
    for j, d in enumerate(m.get("head", [])):
        lines.append(f"  head {j}   dense {d['units']:4d} units  activation {d['activation']}")
    lines.append("variants")
    report = _report(bundle)
    for v in bundle.variants:
        r = report.get(v.file, {})
        parity = r.get("parity") or {}
        extra = f"  max abs {parity['max_abs']:.1e} vs {parity['reference']}" if parity else ""
        lat = f"  p50 {r['p50_step_us']:.1f} us" if r.get("p50_step_us") else ""
        lines.append(f"  {v.file:26} {v.backend:7} {v.precision:13} {v.bytes:>9,d} B  sha256 {v.sha256[:12]}{extra}{lat}")
    for b in m.get("baselines", []):
        lines.append(f"  {b['file']:26} baseline: whole window of {b['window']} re-run per sample  {b['bytes']:>9,d} B")
    summary = recorded(bundle)
    lines.append(f"drift     {verdict(summary)}" if summary else
                 "drift     continuous mode not measured (exported without --data): "
                 f"edge-lstm verify {bundle.path} --data SERIES.csv")
    return "\n".join(lines)


def _report(bundle: Bundle) -> dict:
    try:
        doc = json.loads((bundle.path / "report.json").read_text())
        return {row["file"]: row for row in doc.get("variants", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON instead.")
def inspect(bundle: Path, as_json: bool) -> None:
    """Show what a bundle holds: model, scaler, state layout, variants and their sizes.

    \b
    Example:
      edge-lstm inspect bundles/airline
    """
    b = Bundle.open(bundle)
    click.echo(json.dumps(b.manifest, indent=2) if as_json else describe(b))
