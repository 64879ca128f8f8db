"""Training and evaluating features models: `train --input features` on .npz, .ts and the
embedded frame task, the normalization in the input stage, the test split through the
deployed file, and (slow) the accuracy of the default settings on the real data sets."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rnn_export.checkpoint import load_checkpoint
from rnn_export.cli import main
from rnn_export.data import embedded_spec
from rnn_export.evaluation import evaluate_model
from rnn_export.export import export_onnx
from rnn_export.frames import (
    FEATURE_DEFAULTS,
    frame_batch,
    frames_embedded_spec,
    frames_file_spec,
    load_frames,
    normalization,
)
from rnn_export.training import TrainingError, train, train_options

TINY = {"hidden_size": 8, "epochs": 2, "progress": False}


def write_frames(path, n=48, steps=12, features=3, seed=0):
    """A tiny .npz of two classes: a frame sequence whose first feature drifts up or down,
    around an offset and spread far from 0 and 1 (so normalization matters)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, steps + 1, size=n)
    labels = np.arange(n) % 2
    x = np.zeros((n, steps, features), np.float32)
    for i, length in enumerate(lengths):
        drift = np.linspace(0, 1 if labels[i] else -1, length)[:, None]
        x[i, :length] = 50 + 10 * (rng.normal(size=(length, features)) + drift)
    np.savez(path, x=x, lengths=lengths, labels=labels, label_names=np.array(["down", "up"]))
    return path


def test_features_run_stores_the_train_split_normalization_and_test_accuracy(tmp_path):
    train_file = write_frames(tmp_path / "d_TRAIN.npz")
    write_frames(tmp_path / "d_TEST.npz", n=20, seed=1)
    spec = frames_file_spec(train_file)
    ckpt = train("gru", tmp_path / "run", spec, input_kind="features", **TINY)
    assert ckpt.config.input_kind == "features" and ckpt.config.input_size == 3
    assert ckpt.vocab is None and ckpt.data == spec
    mean, scale = normalization(load_frames(spec).train)
    np.testing.assert_array_equal(ckpt.model.frames.mean.numpy(), mean)
    np.testing.assert_array_equal(ckpt.model.frames.scale.numpy(), scale)
    assert ckpt.metrics["num_test"] == 20
    # The deployed file, on the same test split, gets PyTorch's accuracy exactly.
    path = export_onnx(tmp_path / "run", tmp_path / "m.onnx")
    report = evaluate_model(path, checkpoint=tmp_path / "run")
    assert report.source == f"test split of {tmp_path / 'run'}" and report.unit == "sequences"
    assert report.total == 20
    assert report.accuracy == ckpt.metrics["test_accuracy"]
    x, lengths, labels = frame_batch(load_frames(spec).test)
    with torch.no_grad():
        predicted = ckpt.model(x, lengths=lengths)[0].argmax(-1)
    assert report.correct == int((predicted == labels).sum())
    by_file = evaluate_model(path, data_dir=tmp_path / "d_TEST.npz")
    np.testing.assert_array_equal(by_file.confusion, report.confusion)


def test_training_is_deterministic_and_the_embedded_task_needs_no_data(tmp_path):
    spec = frames_embedded_spec(seed=2, size=40, features=4)
    a = train("lstm", tmp_path / "a", spec, input_kind="features", **TINY)
    b = train("lstm", tmp_path / "b", spec, input_kind="features", **TINY)
    assert a.sha256 == b.sha256
    assert a.config.input_size == 4 and a.metrics["num_test"] == 40


def test_feature_defaults_apply_where_an_option_is_not_given():
    options = train_options(arch="gru", input_kind="features", lr=0.02)
    assert options.hidden_size == FEATURE_DEFAULTS["hidden_size"]
    assert options.batch_size == FEATURE_DEFAULTS["batch_size"]
    assert options.epochs == FEATURE_DEFAULTS["epochs"]
    assert options.lr == 0.02
    assert train_options(arch="gru").hidden_size != FEATURE_DEFAULTS["hidden_size"]


@pytest.mark.parametrize(
    "input_kind, spec, match",
    [
        ("features", embedded_spec(size=40), r"features model trains on float frames"),
        ("tokens", frames_embedded_spec(size=40), r"tokens model trains on texts"),
    ],
)
def test_data_of_the_other_kind_is_refused(tmp_path, input_kind, spec, match):
    with pytest.raises(TrainingError, match=match):
        train("gru", tmp_path / "run", spec, input_kind=input_kind, **TINY)
    assert not (tmp_path / "run").exists()


def test_cli_trains_and_evaluates_a_features_model(tmp_path):
    data = write_frames(tmp_path / "frames.npz")
    test = write_frames(tmp_path / "held_out.npz", n=10, seed=3)
    run = tmp_path / "run"
    args = ["train", "--arch", "gru", "--input", "features", "--data", data, "--test", test]
    result = CliRunner().invoke(
        main, [str(a) for a in [*args, "--out", run, "--epochs", "1", "--hidden-size", "8"]]
    )
    assert result.exit_code == 0, result.output
    assert "features F=3, C=2" in result.output and "(10 test)" in result.output
    ckpt = load_checkpoint(run)
    assert ckpt.data["test_path"] == str(test.resolve())
    assert ckpt.config.hidden_size == 8 and ckpt.options.lr == FEATURE_DEFAULTS["lr"]
    export_onnx(run, tmp_path / "m.onnx")
    result = CliRunner().invoke(
        main, ["evaluate", str(tmp_path / "m.onnx"), "--checkpoint", str(run)]
    )
    assert result.exit_code == 0, result.output
    assert f"accuracy {ckpt.metrics['test_accuracy']:.4f}" in result.output
    assert "of 10 sequences" in result.output


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--input", "features", "--data", "frames.csv"], "expected a .npz or .ts file"),
        (["--input", "features", "--data", "missing.npz"], "missing.npz: expected a .npz file"),
        (["--test", "t.npz"], "--test is for --input features"),
    ],
)
def test_cli_errors_exit_2_in_one_line(tmp_path, extra, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["train", "--arch", "gru", "--out", "run", *extra])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_demo_runs_on_the_embedded_frame_task(tmp_path):
    from rnn_export.demo import run_demo

    lines = []
    summary = run_demo(
        tmp_path / "demo",
        archs=("cell",),
        epochs=1,
        progress=False,
        echo=lines.append,
        input_kind="features",
    )
    cell = summary["archs"]["cell"]
    assert summary["passed"] and cell["parity_passed"]
    # Streaming frame by frame gives PyTorch's validation accuracy, but for a row whose two
    # best classes tie within float32 rounding (a one-epoch model has such near-ties).
    assert abs(cell["streamed_accuracy"] - cell["val_accuracy"]) <= 1 / 48
    assert any("validation sequences, frame by frame" in line for line in lines)


# --- the real data sets: the default settings' accuracy through the deployed file -------

REAL = [
    ("japanese_vowels/JapaneseVowels_TRAIN.ts", 0.96),
    ("basic_motions/BasicMotions_TRAIN.ts", 0.95),
]


@pytest.mark.slow
@pytest.mark.parametrize("train_file, goal", REAL, ids=["JapaneseVowels", "BasicMotions"])
def test_default_settings_reach_the_accuracy_goal_on_real_frames(
    frames_data, tmp_path, train_file, goal
):
    """gru with every default of --input features; evaluate through the file equals
    PyTorch's test accuracy exactly, and verify passes. Times are printed (the machine is
    shared: CPU time is about what two cores of its own take), not asserted."""
    from rnn_export.parity import verify_parity

    cpu = time.process_time()
    ckpt = train(
        "gru",
        tmp_path / "run",
        frames_file_spec(frames_data / train_file),
        input_kind="features",
        progress=False,
    )
    cpu = time.process_time() - cpu
    path = export_onnx(tmp_path / "run", tmp_path / "m.onnx")
    report = evaluate_model(path, checkpoint=tmp_path / "run")
    print(
        f"{train_file}: test accuracy {report.accuracy:.4f}, training "
        f"{ckpt.metrics['train_seconds']:.1f} s wall, {cpu:.1f} s CPU"
    )
    assert report.accuracy == ckpt.metrics["test_accuracy"]
    assert report.accuracy >= goal
    assert verify_parity(path, tmp_path / "run").passed
