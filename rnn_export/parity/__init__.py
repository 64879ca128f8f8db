"""Parity: does an exported .onnx file compute what its checkpoint's PyTorch model computes?

`verify_parity` runs the file under each execution provider asked for and holds every
output to a float32 allowance: |file - float64| may not exceed the rounding that a
correct float32 implementation can make (rnn_export.parity.bounds), carried through the
model from the same inputs. The cases (rnn_export.parity.cases): local-error checks from
many states of real trajectories over a short horizon, through every path of the graph
and the embedded step model (they decide for a correct file, whatever the model's
conditioning or the runtime's last bits), and whole runs (batch sizes, lengths up to
1000, mixed lengths, the validation split, chunks, a 10,000-step stream) that report
the drift from PyTorch float32 and float64 and decision agreement.

Modules: bounds (the rounding model and its arithmetic), reference (the model in
float64 with its allowance; PyTorch float32), compare (one output against both),
runners (the file through onnxruntime), cases and stream (what runs), module (the
user's own class and weights as a reference), labels (the label order against labelled
data), results (the report), table and plot (the report for people), verify
(verify_parity).
"""

from rnn_export.parity import runners
from rnn_export.parity.cases import BATCH_SIZES, EXAMPLE_LENGTH, HORIZON, LONG_LENGTH
from rnn_export.parity.compare import CaseFailure, OutputCheck, Tolerance, compare
from rnn_export.parity.results import (
    LOCAL,
    REPORT_SCHEMA,
    CaseResult,
    DriftCurve,
    ParityError,
    ParityReport,
    ParityUsageError,
    ProviderStatus,
)
from rnn_export.parity.runners import PROVIDERS, parse_providers
from rnn_export.parity.stream import STREAM_STEPS
from rnn_export.parity.verify import verify_parity

__all__ = [
    "BATCH_SIZES",
    "EXAMPLE_LENGTH",
    "HORIZON",
    "LOCAL",
    "LONG_LENGTH",
    "PROVIDERS",
    "REPORT_SCHEMA",
    "STREAM_STEPS",
    "CaseFailure",
    "CaseResult",
    "DriftCurve",
    "OutputCheck",
    "ParityError",
    "ParityReport",
    "ParityUsageError",
    "ProviderStatus",
    "Tolerance",
    "compare",
    "parse_providers",
    "runners",
    "verify_parity",
]
