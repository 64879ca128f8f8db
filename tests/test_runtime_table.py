"""scripts/runtime_table.py: its cells say what verify found, per kind of file."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from rnn_export.export import export_onnx

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location(
        "runtime_table", ROOT / "scripts" / "runtime_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cells_of_the_reference_runtime(script, tiny_run_dir, tmp_path):
    run_dir = tiny_run_dir("stacked", "relu", num_layers=2)
    paths = {k: export_onnx(run_dir, tmp_path / f"{k}.onnx", graph=k) for k in script.KINDS}
    cells = {k: script.cell(paths[k], run_dir, "onnx-reference", 200, k) for k in script.KINDS}
    assert re.fullmatch(r"pass \d\.\de-0[5-9]", cells["step"]), cells
    assert re.fullmatch(r"pass \d\.\de-0[5-9]", cells["portable"]), cells
    # The reference has no Relu activation for the RNN operator of the default graph.
    assert cells["default"].startswith("does not run: ") and "Relu" in cells["default"]
    assert "onnx-reference" in script.installed_runtimes()
