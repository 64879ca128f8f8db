"""rnn_runtime: a torch-free streaming runner for files made by `rnn-export convert`.

Needs only numpy and onnxruntime; copy this folder to a device and import it.
"""

__version__ = "0.1.0"
