"""rnn-export: train the notes' RNNs, export them to ONNX with explicit state, prove parity.

The package imports torch only when a torch-backed name is first used, so that
the CLI's --help, `inspect` and `stream` stay fast and torch-free.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "ModelConfig": "rnn_export.config",
    "build_model": "rnn_export.models",
    "CellRNN": "rnn_export.models",
    "StackedRNN": "rnn_export.models",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rnn_export' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["__version__", *_LAZY]
