"""rnn_runtime: a torch-free streaming runner for files made by `rnn-export convert`.

Needs only numpy and onnxruntime; copy this folder to a device and import it.

    model = open_model("model.onnx")            # validated file, CPU, 1 thread
    stream = model.stream()
    stream.feed("Hinton").label                 # or stream.step("n") one char at a time
    blob = stream.save(); stream.restore(blob)  # pause, move, resume
    pool = model.pool(); a = pool.join(); b = pool.join()
    pool.step(["x", "y"])                       # both streams in one onnxruntime call
"""

from rnn_runtime.errors import (
    MetadataError,
    ModelFileError,
    ProviderError,
    SnapshotError,
    StreamError,
    ThreadsError,
    UnknownCharError,
)
from rnn_runtime.metadata import ModelMetadata, StateSpec, read_metadata
from rnn_runtime.model import StreamModel, load_metadata, open_model
from rnn_runtime.pool import BatchPrediction, StreamPool
from rnn_runtime.session import (
    DEFAULT_PROVIDERS,
    PROVIDERS,
    open_session,
    resolve_providers,
)
from rnn_runtime.stream import Prediction, StreamSession, stream_lines
from rnn_runtime.tokens import Tokenizer

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PROVIDERS",
    "PROVIDERS",
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
    "ThreadsError",
    "Tokenizer",
    "UnknownCharError",
    "__version__",
    "load_metadata",
    "open_model",
    "open_session",
    "read_metadata",
    "resolve_providers",
    "stream_lines",
]
