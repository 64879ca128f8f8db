"""Seeded fuzzing of `rnn-export import`: mutated .pt and .safetensors files, never a
traceback, and the RUN_DIR replaced whole or left as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

N = 100  # mutants: a few seconds of CPU


def test_mutated_weights_import_or_exit_2_with_one_line(tmp_path):
    """A subprocess, so that a crash or a hang fails this test (timeout) and not the run."""
    worker = Path(__file__).with_name("import_fuzz.py")
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(repo), str(repo / "runtime")])
    out = subprocess.run(
        [sys.executable, str(worker), str(tmp_path), "0", str(N)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["problems"] == []
    outcomes = report["outcomes"]
    assert sum(outcomes.values()) == N + 1  # the clean import first
    # The mutations reach both outcomes: some mutants still import, most are refused.
    assert outcomes["imported"] >= 3 and outcomes["refused"] >= N // 2, outcomes
