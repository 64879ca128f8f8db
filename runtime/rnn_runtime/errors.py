"""Every error type the runtime raises, in one place (all are ValueErrors).

A caller that maps errors to exit codes catches these; the message always says what
was expected and what was got, and names the file when there is one.
"""

from __future__ import annotations


class ModelFileError(ValueError):
    """A path that is not a model file this runtime can load (missing, a folder, not ONNX,
    external data, non-finite weights)."""


class MetadataError(ValueError):
    """A file without our metadata, with an unknown schema, or with metadata that lies."""


class ProviderError(ValueError):
    """A requested execution provider that is unknown or not available (never silently
    replaced)."""


class ThreadsError(ValueError):
    """A thread count outside [1, the machine's logical CPUs]."""


class StreamError(ValueError):
    """Bad input to a stream or pool, or a step whose result is not finite. The stream is
    unchanged."""


class UnknownCharError(StreamError):
    """A character outside the model's vocabulary, in strict mode."""


class SnapshotError(StreamError):
    """Bytes that are not a saved stream of this model."""
