"""scripts/profile_step.py: onnxruntime's per-node times of a step model and a main graph."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rnn_export.export import export_onnx

ROOT = Path(__file__).resolve().parents[1]


def _rows(out: str) -> dict[str, list[str]]:
    """{first cell: other cells} of every Markdown table row but the headers."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("node", "operator", "---"):
            rows[cells[0]] = cells[1:]
    return rows


def _run(*args) -> str:
    script = ROOT / "scripts" / "profile_step.py"
    done = subprocess.run(
        [sys.executable, str(script), *map(str, args)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("arch", ["cell", "gru"])
def test_profile_step_times_every_node_of_the_step_model(tiny_run_dir, tmp_path, arch):
    model = export_onnx(tiny_run_dir(arch), tmp_path / "m.onnx")
    rows = _rows(_run(model, "--rows", "4", "--runs", "50"))
    ops = {name.split(":")[0] for name in rows}
    assert {"Gather", "LogSoftmax", "(executor, per call)"} <= ops
    assert ops & {"Gemm", "FusedGemm"}
    shares = [int(cells[1].removesuffix("%")) for cells in rows.values()]
    assert all(x >= 0 for x in shares) and 90 <= sum(shares) <= 110  # each rounded to 1%


@pytest.mark.parametrize("arch", ["cell", "lstm"])
def test_profile_offline_counts_the_scan_apart_from_the_nodes_inside_it(
    tiny_run_dir, tmp_path, arch
):
    model = export_onnx(tiny_run_dir(arch), tmp_path / "m.onnx")
    out = _run(model, "--offline", "8", "6", "--runs", "5")
    assert "B = 8, T = 6 (mixed lengths): median run" in out
    rows = _rows(out)
    # B > 1: the length-sorted Scan, its step's Gather of the input term and products.
    assert {"Scan (its own cost)", "If (its own cost)", "Gather", "Concat", "Slice"} <= set(rows)
    assert rows.keys() & {"Gemm", "FusedGemm"}
    ms = [float(cells[0]) for cells in rows.values()]
    assert all(x >= 0 for x in ms)
    # Counted once each: the kernels add up to no more than the whole run (rounding aside).
    whole = float(out.split("median run ")[1].split(" ms")[0])
    assert sum(ms) <= whole * 1.05 + 0.01 * len(ms)
