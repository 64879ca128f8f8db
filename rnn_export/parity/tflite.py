"""TFLite behind verify's verdict: onnx2tf converts the file, LiteRT's interpreter runs it.

onnx2tf (2.6, no TensorFlow) needs Python 3.12 and pins its own onnx, onnxruntime and
numpy, so it runs in an interpreter of its own (made by `python scripts/onnx2tf_env.py`)
through onnx2tf_main.py; the converted file runs here, in ai-edge-litert's interpreter
(the `tflite` extra), with its default CPU delegate (XNNPACK), as on a device.

Which interpreter converts: --onnx2tf-python, else $RNN_EXPORT_ONNX2TF_PYTHON, else this
Python if it has onnx2tf, else the one onnx2tf_env.py made (ONNX2TF_ENV).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from rnn_export.parity.compare import CaseFailure
from rnn_export.parity.results import ParityUsageError

ONNX2TF_VERSION = "2.6.9"
ONNX2TF_ENV = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rnn-export" / "onnx2tf"
)
CONVERT_TIMEOUT_S = 600


def find_onnx2tf(explicit: str | Path | None = None) -> tuple[str, str]:
    """The interpreter that runs onnx2tf (see the module docstring for the order).

    Returns:
        (its path, onnx2tf's version there).

    Raises:
        ParityUsageError: none is found, or the one named has no onnx2tf.
    """
    named = explicit or os.environ.get("RNN_EXPORT_ONNX2TF_PYTHON")
    if named:
        python = str(named)
    elif importlib.util.find_spec("onnx2tf") is not None:
        python = sys.executable
    elif (ONNX2TF_ENV / "bin" / "python").is_file():
        python = str(ONNX2TF_ENV / "bin" / "python")
    else:
        raise ParityUsageError(
            "runtime tflite converts the file with onnx2tf, which needs Python 3.12: make its "
            "environment with python scripts/onnx2tf_env.py, or name one with "
            "--onnx2tf-python or RNN_EXPORT_ONNX2TF_PYTHON"
        )
    try:
        done = subprocess.run(
            [python, "-c", "import onnx2tf; print(onnx2tf.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ParityUsageError(f"cannot run the onnx2tf Python {python}: {e}") from None
    if done.returncode != 0:
        raise ParityUsageError(f"{python} cannot import onnx2tf: {_last_line(done.stderr)}")
    return python, done.stdout.strip()


def convert(model_bytes: bytes, python: str) -> bytes:
    """model_bytes (ONNX) as a float32 .tflite, converted by onnx2tf under `python`.

    Raises:
        CaseFailure: onnx2tf cannot convert it (its message).
    """
    script = Path(__file__).with_name("onnx2tf_main.py")
    with tempfile.TemporaryDirectory(prefix="rnn-export-tflite-") as tmp:
        source, target = Path(tmp) / "model.onnx", Path(tmp) / "model.tflite"
        source.write_bytes(model_bytes)
        try:
            done = subprocess.run(
                [python, str(script), str(source), str(target)],
                capture_output=True,
                text=True,
                timeout=CONVERT_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise CaseFailure(f"onnx2tf did not finish in {CONVERT_TIMEOUT_S} s") from None
        if done.returncode != 0:
            raise CaseFailure(f"onnx2tf cannot convert it: {_last_line(done.stderr)}")
        return target.read_bytes()


def _last_line(text: str) -> str:
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    line = lines[-1] if lines else "(no message)"
    return line if len(line) <= 300 else line[:297] + "..."


class TFLiteSession:
    """run(output names, feeds) on a .tflite file, like an onnxruntime session.

    Inputs and outputs keep the ONNX file's names (onnx2tf keeps them); every input is
    resized to the feed's shape when it changes (B varies between verify's cases).
    """

    def __init__(self, tflite_bytes: bytes, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self._bytes = tflite_bytes  # the interpreter reads the buffer it was given
        self._interpreter = Interpreter(model_content=tflite_bytes, num_threads=threads)
        self._inputs = {d["name"]: d for d in self._interpreter.get_input_details()}
        # Tensor indices stay what they are when inputs are resized.
        self._outputs = {d["name"]: d["index"] for d in self._interpreter.get_output_details()}
        self._shapes: dict[str, tuple] = {}

    def run(self, names, feeds, run_options=None):
        interpreter = self._interpreter
        unknown = sorted(set(feeds) - set(self._inputs))
        if unknown:
            raise CaseFailure(f"tflite has no input {unknown}; it has {sorted(self._inputs)}")
        missing = [n for n in names if n not in self._outputs]
        if missing:
            raise CaseFailure(f"tflite has no output {missing}; it has {sorted(self._outputs)}")
        try:
            shapes = {n: tuple(np.shape(v)) for n, v in feeds.items()}
            if shapes != self._shapes:
                for n, shape in shapes.items():
                    interpreter.resize_tensor_input(self._inputs[n]["index"], list(shape))
                interpreter.allocate_tensors()
                self._shapes = shapes
            for n, value in feeds.items():
                dtype = self._inputs[n]["dtype"]
                interpreter.set_tensor(self._inputs[n]["index"], np.asarray(value, dtype=dtype))
            interpreter.invoke()
            return [interpreter.get_tensor(self._outputs[n]).copy() for n in names]
        except (RuntimeError, ValueError) as e:  # the interpreter's own errors
            raise CaseFailure(f"tflite raised {type(e).__name__}: {_last_line(str(e))}") from None


def open_tflite(tflite_bytes: bytes, threads: int) -> TFLiteSession:
    """A TFLiteSession on a .tflite file's bytes.

    Raises:
        CaseFailure: the interpreter cannot load it.
    """
    try:
        return TFLiteSession(tflite_bytes, threads)
    except (RuntimeError, ValueError) as e:
        raise CaseFailure(f"tflite cannot load it: {_last_line(str(e))}") from None
