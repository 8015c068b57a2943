"""edge-lstm: streaming LSTM/GRU inference on small devices.

The device side: it imports NumPy, one inference engine, paho-mqtt, pyserial and click, and
never TensorFlow, Keras or PyTorch.

    >>> from edge_lstm import Runtime                                    # doctest: +SKIP
    >>> rt = Runtime.open("bundles/airline", mode="exact")               # doctest: +SKIP
    >>> rt.push("sensor-7", [431.0], ts=1764072000.0).values             # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from edge_lstm.bundle import Bundle
from edge_lstm.errors import BackendUnavailableError, BundleError, ConfigError, EdgeLstmError, SampleError
from edge_lstm.forecaster import Dropped, Forecast, Quality, Runtime, Sample, StateExport

try:
    __version__ = version("edge-lstm")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "BackendUnavailableError",
    "Bundle",
    "BundleError",
    "ConfigError",
    "Dropped",
    "EdgeLstmError",
    "Forecast",
    "Quality",
    "Runtime",
    "Sample",
    "SampleError",
    "StateExport",
    "__version__",
]
