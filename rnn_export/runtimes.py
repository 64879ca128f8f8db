"""The runtimes `verify --runtime` executes a file under: one record each.

A record names the runtime and the session-like class that runs a serialized ONNX model
under it (rnn_export.parity.backends; the class checks that its runtime is installed).
This module needs only the standard library, so the command line lists the names (its
`--runtime` choice) without importing any runtime.
"""

from __future__ import annotations

from typing import NamedTuple


class RuntimeRecord(NamedTuple):
    """One runtime: its name, its backend class ("module:Class") and a line for --help."""

    name: str
    backend: str
    summary: str


_BACKENDS = "rnn_export.parity.backends"
RUNTIMES = (
    RuntimeRecord("onnxruntime", f"{_BACKENDS}:OnnxRuntime", "the runtime's own session"),
    RuntimeRecord("openvino", f"{_BACKENDS}:OpenVino", "OpenVINO's CPU plugin (extra openvino)"),
    RuntimeRecord("tract", f"{_BACKENDS}:Tract", "tract's ONNX loader (extra tract)"),
    RuntimeRecord("onnx-reference", f"{_BACKENDS}:Reference", "the ONNX specification in numpy"),
    RuntimeRecord("tflite", f"{_BACKENDS}:TFLite", "onnx2tf's conversion in LiteRT (extra tflite)"),
    RuntimeRecord(
        "onnxruntime-node",
        "rnn_export.parity.js:OrtNode",
        "onnxruntime-node through the JavaScript runtime (runtime/js; Node 20+)",
    ),
    RuntimeRecord(
        "onnxruntime-web",
        "rnn_export.parity.js:OrtWeb",
        "onnxruntime-web (WASM) in Debian's headless Chromium, through the JavaScript runtime",
    ),
)
RUNTIME_NAMES = tuple(r.name for r in RUNTIMES)
