"""rnn_runtime: a torch-free streaming runner for files made by `rnn-export convert`.

Needs only numpy and onnxruntime; copy this folder to a device and import it.

    model = open_model("model.onnx")            # validated metadata, CPU, 1 thread
    stream = model.stream()
    stream.feed("Hinton").label                 # or stream.step("n") one char at a time
    blob = stream.save(); stream.restore(blob)  # pause, move, resume
    pool = model.pool(); a = pool.join(); b = pool.join()
    pool.step(["x", "y"])                       # both streams in one onnxruntime call
"""

from rnn_runtime.metadata import MetadataError, ModelMetadata, StateSpec, read_metadata
from rnn_runtime.model import (
    DEFAULT_PROVIDERS,
    ModelFileError,
    ProviderError,
    StreamError,
    StreamModel,
    UnknownCharError,
    load_metadata,
    open_model,
)
from rnn_runtime.pool import BatchPrediction, StreamPool
from rnn_runtime.snapshot import SnapshotError
from rnn_runtime.stream import Prediction, StreamSession, stream_lines

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PROVIDERS",
    "BatchPrediction",
    "MetadataError",
    "ModelFileError",
    "ModelMetadata",
    "Prediction",
    "ProviderError",
    "SnapshotError",
    "StateSpec",
    "StreamError",
    "StreamModel",
    "StreamPool",
    "StreamSession",
    "UnknownCharError",
    "__version__",
    "load_metadata",
    "open_model",
    "read_metadata",
    "stream_lines",
]
