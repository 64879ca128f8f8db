"""scripts/profile_step.py: onnxruntime's per-node times of a step model and a main graph."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rnn_export.export import export_onnx

ROOT = Path(__file__).resolve().parents[1]


PROFILER = "(within the rows above: the profiler's own cost)"


def _rows(out: str) -> dict[str, list[str]]:
    """{first cell: other cells} of every Markdown table row but the headers and the
    profiler's row (checked apart: it is part of the rows above, not one of the sum)."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("node", "operator", "---", PROFILER):
            rows[cells[0]] = cells[1:]
    return rows


def _profiler_cost(out: str, unit: str) -> tuple[float, float, float]:
    """(profiled median, plain median, the profiler row's figure) of the first table."""
    head = out.split("median run ")[1]
    profiled = float(head.split(f" {unit} under the profiler, ")[0])
    plain = float(head.split(" under the profiler, ")[1].split(f" {unit} without it")[0])
    row = next(line for line in out.splitlines() if line.startswith(f"| {PROFILER} |"))
    return profiled, plain, float(row.split("|")[2])


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
    out = _run(model, "--rows", "4", "--runs", "50")
    rows = _rows(out)
    ops = {name.split(":")[0] for name in rows}
    assert {"Gather", "LogSoftmax", "(executor, per call)"} <= ops
    assert ops & {"Gemm", "FusedGemm"}
    shares = [int(cells[1].removesuffix("%")) for cells in rows.values()]
    assert all(x >= 0 for x in shares) and 90 <= sum(shares) <= 110  # each rounded to 1%
    # The same calls without the profiler, and the difference as the profiler's own cost.
    profiled, plain, added = _profiler_cost(out, "us")
    assert plain > 0 and added == pytest.approx(profiled - plain, abs=1.0)  # printed .0f/.1f


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
    whole, plain, added = _profiler_cost(out, "ms")
    assert sum(ms) <= whole * 1.05 + 0.01 * len(ms)
    assert plain > 0 and added == pytest.approx(whole - plain, abs=0.011)  # printed .2f
    # The products alone, at the sorted schedule's rows and at the bench's roofline.
    found = re.search(
        r"the run ([\d.]+) ms; .* schedule\), ([\d.]+) ms \((\d+)% of the run\); .* "
        r"roofline\) ([\d.]+) ms \((\d+)% of the run, (\d+)% of the sorted schedule's\)",
        out,
    )
    assert found, out
    run_ms, sorted_ms, p_sorted, roofline_ms, p_roofline, p_of_sorted = map(float, found.groups())
    assert run_ms == pytest.approx(plain, abs=0.0051)
    assert roofline_ms > 0 and sorted_ms > 0
    assert _ratio_shown(p_sorted, sorted_ms, run_ms)
    assert _ratio_shown(p_roofline, roofline_ms, run_ms)
    assert _ratio_shown(p_of_sorted, roofline_ms, sorted_ms)


def _ratio_shown(percent: float, a: float, b: float) -> bool:
    """Whether a percentage printed .0% can be a / b of the exact figures that a and b
    are printed .3f of (each within 0.0005 of its exact figure)."""
    low, high = (a - 0.0005) / (b + 0.0005), (a + 0.0005) / max(b - 0.0005, 1e-9)
    return low * 100 - 0.5 <= percent <= high * 100 + 0.5
