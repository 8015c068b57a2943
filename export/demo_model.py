"""Retrain the demo bundle shipped in `edge_lstm/demo/airline/` (the classic tutorial recipe).

    python -m edge_lstm_export.demo_model            # writes edge_lstm/demo/airline/
    python -m edge_lstm_export.demo_model --out bundles/airline --keras-out bundles/airline-lstm.keras \
        --baseline-windows 12,48,96                   # the bundle the README's benchmark uses

Keras: LSTM(50, return_sequences=True) -> LSTM(50) -> Dense(1) on windows of the last 12
months of the airline-passengers series, MinMax-scaled, trained on the first 80 % of the
series; exported with ONNX, TFLite and quantized variants. Seeds are fixed, so a rerun on
the same versions gives the same weights.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edge_lstm_export.quiet import framework_chatter_filtered

DEMO = Path(__file__).resolve().parent.parent / "edge_lstm" / "demo"
WINDOW = 12


@framework_chatter_filtered()
def train(csv: Path, epochs: int = 150, seed: int = 7) -> Path:
    """Train the seed model on the first 80 % of the series; return the saved .keras file."""
    import keras

    from edge_lstm_export.scaler import read_csv_columns

    keras.utils.set_random_seed(seed)
    _, data = read_csv_columns(csv)
    series = data[:, 0]
    lo, hi = series.min(), series.max()
    scaled = ((series - lo) / (hi - lo)).astype(np.float32)
    train_part = scaled[: int(len(scaled) * 0.8)]
    x = np.stack([train_part[i : i + WINDOW] for i in range(len(train_part) - WINDOW)])[..., None]
    y = train_part[WINDOW:, None]
    model = keras.Sequential([
        keras.Input((WINDOW, 1)),
        keras.layers.LSTM(50, return_sequences=True),
        keras.layers.LSTM(50),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    path = Path(tempfile.mkdtemp(prefix="edge-lstm-demo-")) / "airline-lstm.keras"
    model.save(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEMO / "airline")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--keras-out", type=Path, help="Also keep the trained .keras file here (for `bench --keras`).")
    ap.add_argument("--baseline-windows", default="", help="Whole-window ONNX baselines for `bench`, e.g. 12,48,96.")
    args = ap.parse_args()
    from edge_lstm_export.exporter import export_model

    csv = DEMO / "airline-passengers.csv"
    model = train(csv, args.epochs)
    result = export_model(model, args.out, name="airline-lstm", fit_scaler=csv, feature_names=["Passengers"],
                          formats=("onnx", "tflite"), quantize=("dynamic",),
                          baseline_windows=tuple(int(w) for w in args.baseline_windows.split(",") if w.strip()))
    if args.keras_out:
        args.keras_out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model, args.keras_out)
    for p in result.parity:
        print(f"{p.variant}: max abs {p.max_abs:.2e} vs {p.reference}")
    if result.drift is not None:
        from edge_lstm.drift import verdict

        print(verdict(result.drift))
    print(f"wrote {result.bundle} ({sum(f.stat().st_size for f in result.bundle.iterdir()):,} bytes)")


if __name__ == "__main__":
    main()
