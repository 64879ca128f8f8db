"""rnn-export: train the notes' RNNs, export them to ONNX with explicit state, prove parity.

The package imports torch only when a torch-backed name is first used, so that
the CLI's --help, `inspect` and `stream` stay fast and torch-free.

The version is written in one place, rnn_runtime.__version__ (the runtime is installed
with the toolkit, and alone on devices); both pyproject.toml files read it from there,
and rnn_export.__version__ is the same string, looked up when first asked for.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "ModelConfig": "rnn_export.config",
    "TrainOptions": "rnn_export.config",
    "InputError": "rnn_export.errors",
    "WriteError": "rnn_export.atomic",
    "build_model": "rnn_export.models",
    "CellRNN": "rnn_export.models",
    "StackedRNN": "rnn_export.models",
    "GatedRNN": "rnn_export.models",
    # data, checkpoints, training
    "Vocabulary": "rnn_export.data",
    "DataError": "rnn_export.data",
    "embedded_dataset": "rnn_export.data",
    "load_dataset": "rnn_export.data",
    "load_splits": "rnn_export.data",
    "encode_batch": "rnn_export.data",
    "Checkpoint": "rnn_export.checkpoint",
    "CheckpointError": "rnn_export.checkpoint",
    "load_checkpoint": "rnn_export.checkpoint",
    "save_checkpoint": "rnn_export.checkpoint",
    "train": "rnn_export.training",
    "import_weights": "rnn_export.importing",
    "ImportWeightsError": "rnn_export.importing",
    "TrainingError": "rnn_export.training",
    # export
    "export_onnx": "rnn_export.export",
    "export_model": "rnn_export.export",
    "ExportError": "rnn_export.export",
    "OnnxExport": "rnn_export.export",
    # parity
    "verify_parity": "rnn_export.parity",
    "ParityReport": "rnn_export.parity",
    "ParityError": "rnn_export.parity",
    "ParityUsageError": "rnn_export.parity",
    # benchmarks
    "run_bench": "rnn_export.bench",
    "BenchReport": "rnn_export.bench",
    "BenchError": "rnn_export.bench",
    # evaluation
    "evaluate_model": "rnn_export.evaluation",
    "EvaluationReport": "rnn_export.evaluation",
    "EvaluationError": "rnn_export.evaluation",
    # the main job
    "run_demo": "rnn_export.demo",
}


def __getattr__(name: str):
    if name == "__version__":
        import rnn_runtime

        return rnn_runtime.__version__
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rnn_export' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["__version__", *_LAZY]
