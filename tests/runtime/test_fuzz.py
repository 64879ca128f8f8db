"""Seeded fuzzing: mutated model files and saved states, never a traceback, crash or hang."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

N_MODELS, N_STATES = 200, 400  # per arch


@pytest.mark.filterwarnings("ignore")
def test_mutants_are_refused_with_typed_errors(exported, tmp_path):
    """A subprocess, so that a crash or a hang fails this test (timeout) and not the run."""
    worker = Path(__file__).with_name("fuzz.py")
    out = subprocess.run(
        [
            sys.executable,
            str(worker),
            str(exported[1]),
            str(tmp_path),
            "0",
            str(N_MODELS),
            str(N_STATES),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["problems"] == []
    models, states = report["models"], report["states"]
    assert sum(models.values()) == N_MODELS and sum(states.values()) == N_STATES
    # The mutations reach every kind of refusal, and some mutants still open or restore.
    for outcome in ("refused: ModelFileError", "refused: MetadataError", "opened"):
        assert models.get(outcome, 0) >= 5, models
    for outcome in ("refused: SnapshotError", "restored"):
        assert states.get(outcome, 0) >= 5, states
