"""scripts/cold_start.py: one row per fresh process, every phase timed, the peak RSS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rnn_export.export import export_onnx

ROOT = Path(__file__).resolve().parents[1]


def test_cold_start_prints_a_row_per_run_whose_phases_add_up(tiny_run_dir, tmp_path):
    model = export_onnx(tiny_run_dir(), tmp_path / "model.onnx")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cold_start.py"), str(model), "--runs", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")][2:]
    assert [r.split("|")[1].strip() for r in rows] == ["1", "2"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")[2:-1]]
        *phases, total, peak = cells
        ms = [int(c.removesuffix(" ms")) for c in phases]
        assert len(ms) == 6 and all(x >= 0 for x in ms)
        # Each cell is rounded to 1 ms: the parts add up to the total within that.
        assert abs(sum(ms) - int(total.removesuffix(" ms"))) <= len(ms)
        assert 10.0 < float(peak.removesuffix(" MiB")) < 1000.0


def test_cold_start_runs_time_the_runtime_compiled_even_where_bytecode_is_off(
    tiny_run_dir, tmp_path, monkeypatch
):
    """With PYTHONDONTWRITEBYTECODE=1 (as on the project's machines) every start would
    parse the runtime's sources again; an install has them compiled, so the untimed first
    process caches the bytecode and the timed ones load it."""
    from rnn_export.bench import COLD_START_PHASES, cold_start_runs

    model = export_onnx(tiny_run_dir(), tmp_path / "model.onnx")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    runs = cold_start_runs(model, threads=1, runs=2)
    assert len(runs) == 2
    for run in runs:
        assert run["bytecode_cached"] is True
        assert list(run["phases"]) == list(COLD_START_PHASES)
        assert all(x >= 0 for x in run["phases"].values())
        assert abs(sum(run["phases"].values()) - run["seconds"]) < 1e-6
        assert run["torch_imported"] is False and run["onnx_imported"] is False
