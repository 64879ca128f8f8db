"""Runtimes other than onnxruntime, run behind the same verdict (`verify --runtime NAME`).

Each backend opens a serialized ONNX model and answers `run(output names, feeds)` like an
onnxruntime session, so verify's runners (runners.MainGraph, runners.StepModel) and
every parity case run unchanged on it. The names come from the file's metadata, so a
backend needs no knowledge of how many states a model has.

    onnxruntime     the runtime's own session (rnn_runtime.session.open_session)
    openvino        OpenVINO's CPU plugin at INFERENCE_PRECISION_HINT f32 unless asked
                    otherwise: on a CPU with AMX its default is bf16 (8 significant
                    bits against float32's 24: no float32 allowance admits it)
    tract           tract's ONNX loader (the `tract` package), the model typed and
                    optimised once for symbolic B and T
    onnx-reference  onnx.reference.ReferenceEvaluator: the ONNX specification in numpy
    tflite          onnx2tf's conversion run by LiteRT's interpreter (rnn_export.parity.tflite)
    onnxruntime-node, onnxruntime-web   the JavaScript runtime's platforms (rnn_export.parity.js)

A runtime is one record in rnn_export.runtimes (its name and class) and one class here
or in its own module, with version() (raising ParityUsageError, naming what installs it,
when it is not installed) and a constructor on the model's bytes. Each Python runtime but
the ONNX reference (onnx is a dependency) is an optional extra of the package
(`pip install ".[openvino]"`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import tempfile
from pathlib import Path

import numpy as np

from rnn_export.parity.compare import CaseFailure
from rnn_export.parity.results import ParityUsageError

OPENVINO_PRECISIONS = ("f32", "bf16", "f16")


def _backend_class(name: str):
    """The backend class of runtime `name` (its record in rnn_export.runtimes)."""
    from rnn_export.runtimes import RUNTIME_NAMES, RUNTIMES

    if name not in RUNTIME_NAMES:
        raise ParityUsageError(
            f"unknown runtime {name!r}; expected one of {', '.join(RUNTIME_NAMES)}"
        )
    module, cls = RUNTIMES[RUNTIME_NAMES.index(name)].backend.split(":")
    return getattr(importlib.import_module(module), cls)


def check_runtime(name: str) -> str:
    """A version line for runtime `name` when it is known and installed.

    Returns:
        A version line, e.g. "openvino 2026.4.1".

    Raises:
        ParityUsageError: an unknown name, or a runtime that is not installed (naming what
            installs it).
    """
    return _backend_class(name).version()


def installed(name: str, module: str, extra: str | None, distribution: str | None = None) -> str:
    """ "name version" when `module` imports; else a ParityUsageError naming the extra."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise ParityUsageError(
            f"runtime {name} is not installed; install it with pip install 'rnn-export[{extra}]'"
        ) from None
    return f"{name} {importlib.metadata.version(distribution or name)}"


def open_backend(name: str, model_bytes: bytes, threads: int = 1, precision: str = "f32"):
    """A session-like object on model_bytes under runtime `name` (see the module docstring).

    Args:
        name: a runtime of rnn_export.runtimes (check_runtime first).
        model_bytes: a serialized ONNX model.
        threads: onnxruntime's intra-op threads (the others pick their own).
        precision: OpenVINO's inference precision, one of OPENVINO_PRECISIONS.

    Returns:
        An object with .run(output names, feeds, run_options=None) -> list of arrays.

    Raises:
        CaseFailure: the runtime cannot load or compile the model (its message).
    """
    cls = _backend_class(name)
    try:
        return cls(model_bytes, threads=threads, precision=precision)
    except CaseFailure:
        raise
    except Exception as e:  # each runtime has its own error types; the message is kept
        raise CaseFailure(f"{name} cannot load it: {type(e).__name__}: {_first_line(e)}") from None


def _first_line(error: BaseException) -> str:
    """The error's first line that says something: OpenVINO's messages open with lines
    naming only its source files ("Exception from src/...")."""
    lines = [x.strip() for x in str(error).splitlines() if x.strip()]
    useful = [x for x in lines if not x.startswith("Exception from src/")]
    line = (useful or lines or ["(no message)"])[0]
    return line if len(line) <= 300 else "..." + line[-297:]  # the end says what failed


class OnnxRuntime:
    """The runtime's own onnxruntime session (its run() is onnxruntime's)."""

    @staticmethod
    def version() -> str:
        return installed("onnxruntime", "onnxruntime", "cpu")

    # The constructor returns onnxruntime's own session: verify's runners call its run().
    def __new__(cls, model_bytes: bytes, threads: int = 1, precision: str = "f32"):
        from rnn_export.parity.runners import open_errors, open_session

        try:
            return open_session(model_bytes, "CPUExecutionProvider", threads)
        except open_errors() as e:
            raise CaseFailure(f"onnxruntime cannot open it: {e}") from None


class TFLite:
    """onnx2tf and LiteRT's interpreter: open_runtime_runners converts and opens (tflite.py)."""

    @staticmethod
    def version() -> str:
        return installed("tflite", "ai_edge_litert.interpreter", "tflite", "ai-edge-litert")


class Backend:
    """run() for a runtime whose own call returns outputs by name (`_run`)."""

    name = ""

    def run(self, names, feeds, run_options=None):
        try:
            got = self._run(feeds)
        except Exception as e:  # the runtime's own errors: recorded in the case
            raise CaseFailure(f"{self.name} raised {type(e).__name__}: {_first_line(e)}") from None
        missing = [n for n in names if n not in got]
        if missing:
            raise CaseFailure(f"{self.name} returned no output {missing}; got {sorted(got)}")
        return [np.asarray(got[n]) for n in names]


class Reference(Backend):
    name = "onnx-reference"

    @staticmethod
    def version() -> str:
        return installed("onnx-reference", "onnx.reference", None, "onnx")

    def __init__(self, model_bytes: bytes, threads: int = 1, precision: str = "f32"):
        import onnx
        from onnx.reference import ReferenceEvaluator

        self._evaluator = ReferenceEvaluator(onnx.load_from_string(model_bytes))
        self._outputs = list(self._evaluator.output_names)

    def _run(self, feeds):
        return dict(zip(self._outputs, self._evaluator.run(None, feeds), strict=True))


class OpenVino(Backend):
    name = "openvino"

    @staticmethod
    def version() -> str:
        return installed("openvino", "openvino", "openvino")

    def __init__(self, model_bytes: bytes, threads: int = 1, precision: str = "f32"):
        import openvino as ov

        if precision not in OPENVINO_PRECISIONS:
            raise ValueError(f"precision must be one of {OPENVINO_PRECISIONS}; got {precision!r}")
        core = ov.Core()
        with tempfile.TemporaryDirectory(prefix="rnn-export-ov-") as tmp:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(model_bytes)
            model = core.read_model(str(path))
        self._compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision})
        self._request = self._compiled.create_infer_request()
        # A port may carry several names (OpenVINO folds an Identity into its producer):
        # the graph's own output name is the one among them, in the graph's output order.
        wanted = [o.get_any_name() for o in model.outputs]
        self._outputs = [
            (port, next((n for n in port.get_names() if n in wanted), name))
            for port, name in zip(self._compiled.outputs, wanted, strict=True)
        ]

    def _run(self, feeds):
        result = self._request.infer(feeds)
        return {name: np.array(result[port]) for port, name in self._outputs}


class Tract(Backend):
    name = "tract"

    @staticmethod
    def version() -> str:
        return installed("tract", "tract", "tract")

    def __init__(self, model_bytes: bytes, threads: int = 1, precision: str = "f32"):
        import tract

        with tempfile.TemporaryDirectory(prefix="rnn-export-tract-") as tmp:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(model_bytes)
            inference = tract.onnx().load(str(path))
        self._inputs = [inference.input_name(i) for i in range(inference.input_count())]
        self._outputs = [inference.output_name(i) for i in range(inference.output_count())]
        self._runnable = inference.into_model().into_runnable()

    def _run(self, feeds):
        got = self._runnable.run([np.ascontiguousarray(feeds[n]) for n in self._inputs])
        return {n: t.to_numpy() for n, t in zip(self._outputs, got, strict=True)}


def open_runtime_runners(
    runtime: str,
    path: Path,
    meta,
    threads: int,
    precision: str = "f32",
    onnx2tf_python: str | Path | None = None,
    tflite_model: str | Path | None = None,
):
    """verify's runners for the file at path under `runtime`, on the CPU.

    A main file gives its main graph and its embedded step model; a step file gives
    itself as the step model. Under tflite, onnx2tf converts each graph (onnx2tf_python:
    rnn_export.parity.tflite.find_onnx2tf); tflite_model, a .tflite converted elsewhere,
    is run as the step model instead, and nothing is converted.

    Returns:
        (ProviderStatus, [runners], [CaseResult for a graph that would not load]).
    """
    from rnn_export.parity.results import CaseResult, ProviderStatus
    from rnn_export.parity.runners import MainGraph, StepModel

    version = check_runtime(runtime)
    label = runtime if runtime != "openvino" else f"openvino-{precision}"
    data = path.read_bytes()
    graphs = [("step model", data)] if meta.is_step_file else [("main graph", data)]
    if meta.step is not None and not meta.is_step_file:
        graphs.append(("step model", meta.step.model_bytes()))
    if tflite_model is not None and runtime != "tflite":
        raise ParityUsageError("a .tflite model is verified with --runtime tflite")
    python = None
    if runtime == "tflite":
        from rnn_export.parity import tflite

        if tflite_model is not None:  # already converted: run as the step model
            tflite_model = Path(tflite_model)
            graphs = [("step model", _read_tflite(tflite_model))]
            version = f"{version} ({tflite_model.name})"
        else:
            python, converter = tflite.find_onnx2tf(onnx2tf_python)
            version = f"{version}, onnx2tf {converter}"
    runners, failures = [], []
    for what, model_bytes in graphs:
        try:
            if runtime == "tflite":
                converted = model_bytes if python is None else tflite.convert(model_bytes, python)
                session = tflite.open_tflite(converted, threads)
            else:
                session = open_backend(runtime, model_bytes, threads, precision)
        except CaseFailure as e:
            failures.append(CaseResult(label, f"load the {what}", "shapes", 0, 0, error=str(e)))
            continue
        runner_type = StepModel if what == "step model" else MainGraph
        runner = runner_type(session, meta, label)
        runners.append(runner)
    reason = None if runners else "; ".join(f.error for f in failures)
    status = ProviderStatus(label, version, "ran" if runners else "unavailable", reason)
    return status, runners, failures


def _read_tflite(path: Path) -> bytes:
    """A .tflite file's bytes; a file that is not a TFLite flatbuffer is a ParityUsageError."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ParityUsageError(f"cannot read the TFLite model {path}: {e.strerror}") from None
    if data[4:8] != b"TFL3":  # the flatbuffer's file identifier
        raise ParityUsageError(f"{path} is not a TFLite model (no TFL3 identifier)")
    return data
