"""The main job (`rnn-export demo`) end to end, as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx

from rnn_export.checkpoint import load_checkpoint

# Streaming the validation split through the runtime decides like PyTorch on every
# text but those whose top two classes tie within float32 rounding.
MAX_ACCURACY_GAP = 0.002


def test_demo_runs_the_whole_path(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "rnn_export.cli", "demo", "--out", str(out), "--epochs", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["archs"]) == ["cell", "stacked"]
    for arch, result in summary["archs"].items():
        ckpt = load_checkpoint(out / arch)
        assert ckpt.config.arch == arch
        assert result["val_accuracy"] == ckpt.metrics["val_accuracy"]
        # One epoch on the embedded task is already far above chance (0.25).
        assert result["val_accuracy"] > 0.5
        onnx.checker.check_model(onnx.load(result["onnx"]), full_check=True)

        parity = json.loads((out / f"{arch}.parity.json").read_text())
        assert parity["passed"] is True
        assert result["parity_cases"] == len(parity["cases"]) > 30
        assert (out / f"{arch}.drift.png").stat().st_size > 0

        assert abs(result["streamed_accuracy"] - result["val_accuracy"]) <= MAX_ACCURACY_GAP
        assert f"[{arch}] stream: " in proc.stdout
        assert set(result["seconds"]) == {"train", "convert", "verify", "stream"}
