"""Workstation-side toolchain: trained Keras/PyTorch models become edge-lstm bundles.

    from edge_lstm_export import export_model
    result = export_model(model, out="bundles/mine", window=12, data=series)  # model: a file, keras.Model or nn.Module
"""

from edge_lstm_export.exporter import ExportResult, export_model
from edge_lstm_export.parity import ParityError
from edge_lstm_export.scaler import Scaler
from edge_lstm_export.stack import UnsupportedModelError

__all__ = ["ExportResult", "ParityError", "Scaler", "UnsupportedModelError", "export_model"]
