"""The main job (`rnn-export demo`) end to end, as a real subprocess, and when a check fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from rnn_export import demo, training
from rnn_export.checkpoint import load_checkpoint
from rnn_export.cli import main
from rnn_export.data import embedded_spec

# Streaming the validation split through the runtime decides like PyTorch on every
# text but those whose top two classes tie within float32 rounding.
MAX_ACCURACY_GAP = 0.002
sys.path.insert(0, str(Path(__file__).parent / "parity"))


def test_demo_runs_the_whole_path(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "rnn_export.cli", "demo", "--out", str(out), "--epochs", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is True
    assert sorted(summary["archs"]) == ["cell", "stacked"]
    for arch, result in summary["archs"].items():
        ckpt = load_checkpoint(out / arch)
        assert ckpt.config.arch == arch
        assert result["val_accuracy"] == ckpt.metrics["val_accuracy"]
        # One epoch on the embedded task is already far above chance (0.25).
        assert result["val_accuracy"] > 0.5
        onnx.checker.check_model(onnx.load(result["onnx"]), full_check=True)

        parity = json.loads((out / f"{arch}.parity.json").read_text())
        assert parity["passed"] is True and result["parity_passed"] is True
        assert result["parity_checks"] == len(parity["cases"]) > 30
        assert result["parity_summary"] == parity["summary_line"]
        assert 0 < result["parity_ratio"] <= 1
        assert f"[{arch}] verify: PASS: worst cpu/" in proc.stdout
        assert (out / f"{arch}.drift.png").stat().st_size > 0

        assert abs(result["streamed_accuracy"] - result["val_accuracy"]) <= MAX_ACCURACY_GAP
        assert f"[{arch}] stream: " in proc.stdout
        assert set(result["seconds"]) == {"train", "convert", "verify", "stream"}


@pytest.fixture
def small_demo(monkeypatch):
    """The demo on a small embedded dataset and a small model (seconds, not minutes)."""
    real = training.train

    def train(arch, out, epochs, seed, progress, input_kind="tokens"):
        data = embedded_spec(seed=seed, size=400)
        return real(
            arch,
            out,
            data=data,
            epochs=epochs,
            hidden_size=16,
            seed=seed,
            progress=False,
            input_kind=input_kind,
        )

    monkeypatch.setattr(training, "train", train)


def test_every_arch_runs_and_everything_is_written_when_one_fails(
    small_demo, monkeypatch, tmp_path
):
    import fakes

    import rnn_export.parity as parity

    real = parity.verify_parity

    def verify_broken_cell(path, ckpt, **kwargs):
        if Path(path).name == "cell.onnx":
            path = fakes.write_fake(path, Path(path).with_name("broken.onnx"), fakes.perturb_weight)
        return real(path, ckpt, stream_steps=300, **kwargs)

    monkeypatch.setattr(parity, "verify_parity", verify_broken_cell)
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--epochs", "1"])
    assert result.exit_code == 1, result.output
    assert "FAILED: verify failed for cell" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is False
    assert summary["archs"]["cell"]["parity_passed"] is False
    assert summary["archs"]["stacked"]["parity_passed"] is True  # it ran after the failure
    for arch in ("cell", "stacked"):
        assert json.loads((out / f"{arch}.parity.json").read_text())["passed"] is (arch != "cell")
        assert (out / f"{arch}.drift.png").read_bytes()[:4] == b"\x89PNG"
        assert summary["archs"][arch]["streamed_accuracy"] > 0


def test_demo_refuses_a_folder_that_is_not_a_demo_output(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--epochs", "1"])
    assert result.exit_code == 2
    assert "not a demo output (it holds notes.txt)" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_demo_may_rerun_over_its_own_output(small_demo, tmp_path):
    out = tmp_path / "demo"
    assert demo.run_demo(out, archs=("cell",), epochs=1, echo=lambda s: None)["passed"]
    again = demo.run_demo(out, archs=("cell",), epochs=1, echo=lambda s: None)
    assert again["passed"] and json.loads((out / "summary.json").read_text()) == again


def test_demo_refuses_an_out_that_is_a_file(tmp_path):
    out = tmp_path / "file"
    out.write_text("x\n")
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--epochs", "1"])
    assert result.exit_code == 2
    assert "is a regular file" in result.output and out.read_text() == "x\n"
