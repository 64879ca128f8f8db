"""evaluate_model and `rnn-export evaluate`: the figures against training's and PyTorch's,
the JSON report and PNG, and every bad input with its message."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rnn_export.checkpoint import load_checkpoint
from rnn_export.cli import main
from rnn_export.data import encode_batch, folder_spec, load_dataset
from rnn_export.evaluation import EvaluationError, evaluate_model
from rnn_export.export import export_onnx

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def exported_run(tiny_run_dir, tmp_path_factory):
    run_dir = tiny_run_dir("stacked")
    path = export_onnx(run_dir, tmp_path_factory.mktemp("eval") / "stacked.onnx")
    return run_dir, path


def _torch_confusion(ckpt, samples, labels):
    """PyTorch's own confusion matrix of samples [(text, label name)]."""
    tokens, lengths = encode_batch([t for t, _ in samples], ckpt.vocab)
    with torch.no_grad():
        predicted = ckpt.model(tokens, lengths=lengths)[0].argmax(-1).tolist()
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for (_, label), p in zip(samples, predicted, strict=True):
        confusion[labels.index(label), p] += 1
    return confusion


def test_checkpoint_split_gives_training_accuracy_and_pytorch_figures(exported_run):
    _check_split(*exported_run)


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_a_gated_run_evaluates_as_training_and_pytorch_did(arch, tiny_run_dir, tmp_path):
    run_dir = tiny_run_dir(arch)
    _check_split(run_dir, export_onnx(run_dir, tmp_path / f"{arch}.onnx"))


def _check_split(run_dir, path) -> None:
    """The file's figures on its RUN_DIR's split equal training's and PyTorch's."""
    ckpt = load_checkpoint(run_dir)
    report = evaluate_model(path, checkpoint=run_dir)
    assert report.accuracy == ckpt.metrics["val_accuracy"]
    assert report.total == ckpt.metrics["num_val"]
    dataset = load_dataset(ckpt.data)
    samples = [(t, dataset.labels[y]) for t, y in dataset.val]
    want = _torch_confusion(ckpt, samples, list(ckpt.config.labels))
    np.testing.assert_array_equal(report.confusion, want)
    for i, row in enumerate(report.classes()):
        assert row["support"] == want[i].sum()
        assert row["recall"] == pytest.approx(want[i, i] / want[i].sum())
        predicted = want[:, i].sum()
        assert row["precision"] == (pytest.approx(want[i, i] / predicted) if predicted else None)


def test_cli_evaluate_folder_with_report_and_plot(exported_run, tmp_path):
    run_dir, path = exported_run
    ckpt = load_checkpoint(run_dir)
    data = tmp_path / "data"
    data.mkdir()
    texts = {"A": ["AAbA", "xAyAz"], "C": ["CCqC", "CbCaC", "DDCCC"]}  # two of four classes
    for label, lines in texts.items():
        (data / f"{label}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    report_path, plot_path = tmp_path / "r.json", tmp_path / "c.png"
    args = ["evaluate", str(path), "--data", str(data)]
    result = CliRunner().invoke(
        main, [*args, "--report", str(report_path), "--plot", str(plot_path)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    samples = [(t, label) for label, lines in texts.items() for t in lines]
    want = _torch_confusion(ckpt, samples, list(ckpt.config.labels))
    assert report["confusion"]["matrix"] == want.tolist()
    assert report["texts"] == 5 and report["correct"] == int(np.trace(want))
    assert f"accuracy {np.trace(want) / 5:.4f} ({np.trace(want)} of 5 texts)" in result.stdout
    supports = {row["label"]: row["support"] for row in report["classes"]}
    assert supports == {"A": 2, "B": 0, "C": 3, "D": 0}
    assert plot_path.read_bytes().startswith(PNG)


def test_names_run_reports_the_accuracy_training_reported(names_dir, tmp_path):
    from rnn_export.config import TrainOptions
    from rnn_export.training import train

    options = TrainOptions(arch="cell", hidden_size=32, epochs=1, batch_size=128)
    ckpt = train(options, tmp_path / "run", data=folder_spec(names_dir), progress=False)
    path = export_onnx(ckpt, tmp_path / "names.onnx")
    result = CliRunner().invoke(main, ["evaluate", str(path), "--checkpoint", str(ckpt.run_dir)])
    assert result.exit_code == 0, result.output
    accuracy, num_val = ckpt.metrics["val_accuracy"], ckpt.metrics["num_val"]
    correct = round(accuracy * num_val)
    assert f"accuracy {accuracy:.4f} ({correct:,} of {num_val:,} texts)" in result.stdout
    assert evaluate_model(path, checkpoint=ckpt.run_dir).accuracy == accuracy


def test_an_imported_run_has_no_split(exported_run, tmp_path):
    run_dir, path = exported_run
    copy = tmp_path / "imported"
    shutil.copytree(run_dir, copy)
    train_json = json.loads((copy / "train.json").read_text())
    train_json.update(data=None, imported={"source": "w.pt", "sha256": "0" * 64})
    (copy / "train.json").write_text(json.dumps(train_json))
    with pytest.raises(EvaluationError, match="imported model has no validation split"):
        evaluate_model(path, checkpoint=copy)


@pytest.mark.parametrize(
    "args, match",
    [
        ([], r"evaluate needs --data DIR or --checkpoint RUN_DIR \(one of them\)"),
        (["--data", "DATA", "--checkpoint", "RUN"], "one of them"),
        (["--data", "FOREIGN"], r"the classes \['Z'\] are not labels of"),
        (["--data", "MISSING"], "expected a folder with one .txt file per class; not found"),
        (["--checkpoint", "OTHER"], "model and checkpoint do not belong together"),
        (["--checkpoint", "RUN", "--report", "FOLDER"], "is a folder; expected the path of the"),
        (["--checkpoint", "RUN", "--plot", "NOPARENT"], "cannot write: folder .* does not exist"),
    ],
)
def test_cli_evaluate_bad_input(exported_run, tiny_run_dir, tmp_path, args, match):
    run_dir, path = exported_run
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "A.txt").write_text("AAA\n")
    (foreign / "Z.txt").write_text("ZZZ\n")
    names = {
        "DATA": foreign,
        "RUN": run_dir,
        "FOREIGN": foreign,
        "MISSING": tmp_path / "missing",
        "OTHER": tiny_run_dir("cell"),
        "FOLDER": tmp_path,
        "NOPARENT": tmp_path / "no" / "c.png",
    }
    args = [str(names.get(a, a)) for a in args]
    result = CliRunner().invoke(main, ["evaluate", str(path), *args])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert len(result.stderr.splitlines()) == 1
    assert re.search(match, result.stderr), result.stderr
