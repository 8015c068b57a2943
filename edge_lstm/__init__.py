"""edge-lstm: streaming LSTM/GRU inference on small devices.

The device side: it imports NumPy, one inference engine, paho-mqtt, pyserial and click, and
never TensorFlow, Keras or PyTorch.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edge-lstm")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
