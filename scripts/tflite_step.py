"""Run a step file on TFLite: onnx2tf converts it, LiteRT steps it through a sequence.

    PYTHON312 scripts/tflite_step.py STEP.onnx FEEDS.npz OUT.npz

Runs under an interpreter that has onnx2tf (2.6 or newer: Python 3.12, no TensorFlow) and
ai-edge-litert, and nothing of this package: scripts/runtime_table.py --tflite-python
calls it. FEEDS.npz holds "tokens" (T, B) int64, "pairs" (the step file's state names,
rows [input, output], from its metadata) and each state input (B, H) float32 under its
name; OUT.npz gets each output of the last step under its name, the new states fed back
between steps. onnx2tf rewrites the .onnx it reads, so it converts a copy.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    import onnx2tf
    from ai_edge_litert.interpreter import Interpreter

    step, feeds_path, out_path = (Path(a) for a in sys.argv[1:4])
    feeds = dict(np.load(feeds_path))
    tokens = feeds.pop("tokens")
    pairs = {str(i): str(o) for i, o in feeds.pop("pairs")}
    with tempfile.TemporaryDirectory(prefix="tflite-step-") as tmp:
        copy = Path(tmp) / "step.onnx"
        shutil.copyfile(step, copy)
        onnx2tf.convert(
            input_onnx_file_path=str(copy),
            output_folder_path=str(Path(tmp) / "out"),
            non_verbose=True,
        )
        interpreter = Interpreter(model_path=str(Path(tmp) / "out" / "step_float32.tflite"))
    inputs = {d["name"]: d for d in interpreter.get_input_details()}
    B = tokens.shape[1]
    for name, detail in inputs.items():
        shape = [B] + ([] if name not in feeds else list(feeds[name].shape[1:]))
        interpreter.resize_tensor_input(detail["index"], shape)
    interpreter.allocate_tensors()
    inputs = {d["name"]: d for d in interpreter.get_input_details()}
    outputs = {d["name"]: d for d in interpreter.get_output_details()}
    state = dict(feeds)
    token_name = next(n for n in inputs if n not in state)
    got = {}
    for t in range(tokens.shape[0]):
        interpreter.set_tensor(
            inputs[token_name]["index"], tokens[t].astype(inputs[token_name]["dtype"])
        )
        for name, value in state.items():
            interpreter.set_tensor(inputs[name]["index"], value)
        interpreter.invoke()
        got = {n: interpreter.get_tensor(d["index"]).copy() for n, d in outputs.items()}
        state = {name: got[pairs[name]] for name in state}
    np.savez(out_path, **got)


if __name__ == "__main__":
    main()
