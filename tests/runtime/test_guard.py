"""The runtime needs neither torch nor onnx, and works copied alone onto a device."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from reference import LABELS, REPO, close, ids, torch_run

_GUARD = r"""
import json, sys

class _NoTorchNoOnnx:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx"):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, _NoTorchNoOnnx())
import rnn_runtime
from rnn_export.cli import main

stream = rnn_runtime.open_model(sys.argv[1]).stream()
print(json.dumps(stream.feed("abc").log_probs.tolist()))
for args in (["stream", sys.argv[1], "--json"], ["inspect", sys.argv[1], "--json"]):
    try:
        main(args)
    except SystemExit as e:
        assert e.code == 0, e.code
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx"))
print(json.dumps(leaked))
"""


def test_guard_runtime_and_cli_work_without_torch_and_onnx(exported):
    model, path = exported
    out = subprocess.run(
        [sys.executable, "-c", _GUARD, str(path)],
        input="abc\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    first, record, rest = out.split("\n", 2)
    lp = torch_run(model, ids("abc"))[0]
    close(np.array(json.loads(first), np.float32), lp)
    assert json.loads(record)["label"] == LABELS[int(np.argmax(lp))]
    info, leaked = rest.rstrip("\n").rsplit("\n", 1)
    assert json.loads(info)["metadata"]["model"]["arch"] == model.config.arch
    assert json.loads(leaked) == []


def test_runtime_folder_works_copied_alone(exported, tmp_path):
    shutil.copytree(REPO / "runtime" / "rnn_runtime", tmp_path / "device" / "rnn_runtime")
    code = (
        "import sys; sys.path.insert(0, sys.argv[2]); import rnn_runtime;"
        "assert rnn_runtime.__file__.startswith(sys.argv[2]);"
        "print(rnn_runtime.open_model(sys.argv[1]).stream().feed('abc').label)"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code, str(exported[1]), str(tmp_path / "device")],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(Path(np.__file__).parents[1])},
        check=True,
    )
    lp = torch_run(exported[0], ids("abc"))[0]
    assert out.stdout.strip() == LABELS[int(np.argmax(lp))]
