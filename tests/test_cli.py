"""The command line: help everywhere, --version, `train` and its errors (exit 2, no traceback)."""

from __future__ import annotations

import json
import os
import random
import re
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from rnn_export import __version__, config, training
from rnn_export.checkpoint import load_checkpoint
from rnn_export.cli import main
from rnn_export.config import TrainOptions

COMMANDS = sorted(main.commands)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A small folder dataset: class = first character."""
    folder = tmp_path_factory.mktemp("cli-data")
    rng = random.Random(1)
    for label, first in (("left", "a"), ("right", "b")):
        lines = [
            first + "".join(rng.choice("abc") for _ in range(rng.randint(0, 5))) for _ in range(30)
        ]
        (folder / f"{label}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"rnn-export, version {__version__}"


def test_group_help_lists_train():
    result = run("--help")
    assert result.exit_code == 0
    assert "train" in COMMANDS and "  train " in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_every_option_a_help_text(command):
    result = run(command, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: main {command}") or "Usage:" in result.output
    cmd = main.commands[command]
    assert cmd.help and cmd.help.strip()
    undocumented = [
        p.name
        for p in cmd.params
        if isinstance(p, click.Option) and not p.help and p.name != "help"
    ]
    assert undocumented == []


def test_train_help_defaults_match_the_library():
    text = " ".join(run("train", "--help").output.split())
    for option, default in (
        ("epochs", config.DEFAULT_EPOCHS),
        ("batch-size", config.DEFAULT_BATCH_SIZE),
        ("lr", config.DEFAULT_LR),
        ("hidden-size", config.DEFAULT_HIDDEN_SIZE),
    ):
        assert re.search(rf"--{option} .*?\[default: {default}[;\]]", text), option


def test_train(tmp_path, data_dir):
    out = tmp_path / "run"
    result = run(
        "train", "--arch", "stacked", "--data", data_dir, "--out", out, "--epochs", "2",
        "--hidden-size", "8", "--num-layers", "3", "--batch-size", "16", "--lr", "0.01",
        "--seed", "4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(out)
    assert ckpt.config.num_layers == 3 and ckpt.config.hidden_size == 8
    assert ckpt.config.labels == ("left", "right")
    assert ckpt.options == TrainOptions(
        arch="stacked", hidden_size=8, num_layers=3, epochs=2, batch_size=16, lr=0.01, seed=4
    )
    assert ckpt.data["path"] == str(data_dir.resolve()) and ckpt.data["seed"] == 4
    assert f"val_accuracy  {ckpt.metrics['val_accuracy']:.4f}" in result.output
    assert f"sha256        {ckpt.sha256}" in result.output


def write(folder, files):
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


ERRORS = {
    "no arch": ([], "Missing option '--arch'"),
    "bad arch": (["--arch", "rnn"], "'rnn' is not one of 'cell', 'stacked', 'gru', 'lstm'"),
    "no data folder": (["--arch", "cell", "--data", "{tmp}/nope"], "nope: expected a folder"),
    "one class": (
        ["--arch", "cell", "--data", "{one}"],
        "a classifier needs at least 2 classes (.txt files); got 1: only.txt",
    ),
    "not utf-8": (["--arch", "cell", "--data", "{latin}"], "b.txt:2: expected UTF-8 text"),
    "identity stacked": (
        ["--arch", "stacked", "--nonlinearity", "identity"],
        "nonlinearity for arch 'stacked' must be one of ('tanh', 'relu'); got 'identity'",
    ),
    "layers for cell": (
        ["--arch", "cell", "--num-layers", "2"],
        "arch 'cell' has exactly 1 layer; got num_layers=2",
    ),
    "zero epochs": (["--arch", "cell", "--epochs", "0"], "0 is not in the range x>=1"),
    "zero lr": (["--arch", "cell", "--lr", "0"], "0.0 is not in the range x>0"),
    "foreign out": (["--arch", "cell", "--out", "{foreign}"], "refusing to replace a non-empty"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_train_errors_exit_2_without_traceback(tmp_path, case):
    args, message = ERRORS[case]
    places = {
        "tmp": tmp_path,
        "one": write(tmp_path / "one", {"only.txt": b"a\n"}),
        "latin": write(tmp_path / "latin", {"a.txt": b"x\n", "b.txt": b"ok\ncaf\xe9\n"}),
        "foreign": write(tmp_path / "foreign", {"keep.txt": b"mine"}),
    }
    args = [a.format(**places) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "run")]
    result = run("train", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
    assert (tmp_path / "foreign" / "keep.txt").read_bytes() == b"mine"


def test_train_as_a_subprocess(tmp_path, data_dir):
    out = tmp_path / "run"
    args = ["--arch", "cell", "--data", data_dir, "--out", out, "--epochs", 1, "--hidden-size", 8]
    cmd = [sys.executable, "-m", "rnn_export.cli", "train", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {out}\n")
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"val_accuracy  {metrics['val_accuracy']:.4f}" in proc.stdout
    assert "epoch 1: train loss" in proc.stderr
    assert load_checkpoint(out).config.arch == "cell"


def test_import_and_help_do_not_import_torch():
    code = (
        "import sys, rnn_export\n"
        "from rnn_export.cli import main\n"
        "try:\n    main(['train', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines()[-1] == "[]"


def test_train_interrupted_keeps_the_earlier_run(tmp_path, data_dir, monkeypatch):
    out = tmp_path / "run"
    assert (
        run("train", "--arch", "cell", "--data", data_dir, "--out", out, "--epochs", 1).exit_code
        == 0
    )
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "_train_epoch", interrupt)
    result = run("train", "--arch", "cell", "--data", data_dir, "--out", out, "--seed", 3)
    assert result.exit_code == 130
    assert f"interrupted: nothing written; {out} is as it was" in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_the_version_is_written_in_one_place():
    """rnn_runtime.__version__ is the one place: both packages' metadata read it."""
    import importlib.metadata

    import rnn_runtime

    root = Path(__file__).resolve().parents[1]
    assert __version__ == rnn_runtime.__version__
    assert importlib.metadata.version("rnn-export") == rnn_runtime.__version__
    pyprojecttoml = pytest.importorskip("setuptools.config.pyprojecttoml")
    for pyproject in (root / "pyproject.toml", root / "runtime" / "pyproject.toml"):
        assert "version =" not in pyproject.read_text().split("[tool.setuptools.dynamic]")[0]
        project = pyprojecttoml.read_configuration(pyproject)["project"]
        assert project["version"] == rnn_runtime.__version__, pyproject


class _Report:
    """The part of a ParityReport that ParityError and the CLI read."""

    def summary_line(self) -> str:
        return "FAIL: the deciding check"

    def format_table(self) -> str:
        return "the parity table"


def _parity_error():
    from rnn_export.parity import ParityError

    return ParityError(_Report())


@pytest.mark.parametrize(
    ("make", "code", "line"),
    [
        (lambda: config.ConfigError("hidden_size must be ..."), 2, "error: hidden_size must be"),
        (lambda: OSError(28, "No space left on device", "/x/m.onnx"), 2, "error: /x/m.onnx: No sp"),
        (lambda: OSError(28, "No space left on device"), 2, "error: No space left on device"),
        (lambda: PermissionError(13, "Permission denied", "a", None, "b"), 2, "error: a -> b: P"),
        (lambda: __import__("rnn_runtime").ModelFileError("m.onnx: bad"), 2, "error: m.onnx: bad"),
        (_parity_error, 1, "the parity table"),
        (lambda: RuntimeError("a bug"), None, None),
    ],
    ids=["input", "os-path", "os-no-path", "os-two-paths", "runtime", "parity", "bug"],
)
def test_errors_become_exit_codes_in_one_place(make, code, line):
    @click.command("fail")
    def fail():
        """Fail."""
        raise make()

    main.add_command(fail)
    try:
        result = CliRunner().invoke(main, ["fail"])
    finally:
        del main.commands["fail"]
    if code is None:  # a bug keeps its traceback
        assert isinstance(result.exception, RuntimeError)
        return
    assert (result.exit_code, len(result.output.splitlines())) == (code, 1), result.output
    assert result.output.startswith(line)


def _one_error_line(result, match: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert re.search(match, lines[0]), lines[0]


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("--lr", "nan", r"lr must be a finite number in \(0, 1\]; got nan"),
        ("--lr", "1e38", r"lr must be a finite number in \(0, 1\]; got 1e\+38"),
        ("--seed", str(2**70), r"seed must be in 0 \.\. 4,294,967,295; got 1,180,591,620,"),
        ("--seed", "-1", r"seed must be in 0 \.\. 4,294,967,295; got -1"),
        ("--hidden-size", "1000000", r"hidden_size must be in 1 \.\. 4,096; got 1,000,000"),
        ("--epochs", str(10**6), r"epochs must be in 1 \.\. 100,000; got 1,000,000"),
        ("--num-layers", "17", r"num_layers must be in 1 \.\. 16; got 17"),
    ],
)
def test_train_options_out_of_bounds_exit_2_with_one_line(
    tmp_path, monkeypatch, option, value, match
):
    """Checked before any data is read or anything allocated."""
    monkeypatch.setattr(training, "load_dataset", lambda data: pytest.fail("read the data"))
    result = run("train", "--arch", "stacked", "--out", tmp_path / "run", option, value)
    _one_error_line(result, match)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("out", "match"),
    [
        ("file", r"file: is a regular file; expected a run directory to write"),
        ("file/run", r"file/run: cannot create it: .*file is a regular file"),
        ("/proc/nope/x", r"/proc/nope/x: cannot create it: /proc: "),
    ],
    ids=["file", "under-a-file", "proc"],
)
def test_train_refuses_an_out_it_cannot_write_before_training(tmp_path, monkeypatch, out, match):
    """Refused before an epoch is trained, with what the path is."""
    if out.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc")
    (tmp_path / "file").write_text("mine")
    monkeypatch.setattr(training, "_train", lambda *a: pytest.fail("trained"))
    result = run("train", "--arch", "cell", "--out", tmp_path / out if out[0] != "/" else out)
    _one_error_line(result, match)
    assert (tmp_path / "file").read_text() == "mine"


# Each command's output path, and what its message calls it. The work that would fill it
# (training, benchmarking) fails the test if it starts.
OUTPUTS = {
    "train --out": (lambda run_dir, out: ["train", "--arch", "cell", "--out", out], "a run dir"),
    "convert --out": (lambda run_dir, out: ["convert", run_dir, "--out", out], r"the \.onnx f"),
    "bench --json": (
        lambda run_dir, out: ["bench", "m.onnx", "--checkpoint", run_dir, "--json", out],
        "the JSON report",
    ),
}


@pytest.mark.parametrize("target", ["fifo", "char-device"])
@pytest.mark.parametrize("command", OUTPUTS)
def test_outputs_refuse_a_path_that_is_not_a_regular_file_or_folder(
    tmp_path, tiny_run_dir, monkeypatch, command, target
):
    """A FIFO or a device is refused, never replaced (as root, convert --out
    /dev/null used to replace /dev/null by a file)."""
    from rnn_export import bench

    run_dir = tiny_run_dir("cell")  # trained before training is forbidden
    monkeypatch.setattr(training, "_train", lambda *a: pytest.fail("trained"))
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: pytest.fail("benchmarked"))
    os.mkfifo(tmp_path / "fifo")
    out = {"fifo": tmp_path / "fifo", "char-device": Path(os.devnull)}[target]
    kind = {"fifo": r"a FIFO \(named pipe\)", "char-device": "a character device"}[target]
    make_args, what = OUTPUTS[command]
    result = run(*make_args(run_dir, out))
    _one_error_line(result, rf"{re.escape(str(out))}: is {kind}; expected {what}.* to write")
    assert stat.S_ISFIFO(os.stat(tmp_path / "fifo").st_mode)
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_train_data_that_is_a_class_file(tmp_path, data_dir):
    """A file where a folder is expected says so, and names the folder."""
    result = run(
        "train", "--arch", "cell", "--data", data_dir / "left.txt", "--out", tmp_path / "r"
    )
    _one_error_line(
        result,
        rf"left\.txt: expected a folder with one \.txt file per class; it is a file \(one class's "
        rf"file\? pass the folder that holds it, {re.escape(str(data_dir))}\)",
    )


def test_a_diverging_run_stops_and_keeps_the_earlier_run(tmp_path, data_dir, monkeypatch):
    """A NaN loss stops the run at once (exit 2, one line); the earlier run at
    --out stays as it was."""
    out = tmp_path / "run"
    assert (
        run("train", "--arch", "cell", "--data", data_dir, "--out", out, "--epochs", 1).exit_code
        == 0
    )
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_loss = training.F.nll_loss
    batches = []

    def diverging(log_probs, labels):
        batches.append(1)
        return real_loss(log_probs, labels) * (float("inf") if len(batches) >= 3 else 1.0)

    monkeypatch.setattr(training.F, "nll_loss", diverging)
    result = run(
        "train", "--arch", "cell", "--data", data_dir, "--out", out, "--epochs", 3,
        "--batch-size", 8,
    )  # fmt: skip
    _one_error_line(
        result,
        rf"training diverged in epoch 1: the loss is (inf|nan); nothing was written to "
        rf"{re.escape(str(out))}\. Lower the learning rate \(lr 0\.003\)",
    )
    assert len(batches) == 3  # stopped at the first bad batch
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_redirected_progress_is_one_line_per_epoch(tmp_path, data_dir):
    """No progress bar when stderr is not a terminal (CliRunner's is not)."""
    result = run(
        "train", "--arch", "cell", "--data", data_dir, "--out", tmp_path / "run", "--epochs", 3,
        "--batch-size", 4,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "\r" not in result.stderr
    epochs = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1", "epoch 2", "epoch 3"]
    assert result.stderr.splitlines() == epochs


def test_verify_refuses_a_bad_data_spec_when_it_loads_the_checkpoint(tmp_path, tiny_run_dir):
    """The data spec in train.json is checked as the checkpoint loads, not later."""
    import shutil

    from rnn_export.export import export_onnx

    run_dir = shutil.copytree(tiny_run_dir("cell"), tmp_path / "run")
    model = export_onnx(run_dir, tmp_path / "m.onnx")
    record = json.loads((run_dir / "train.json").read_text())
    record["data"]["size"] = "abc"
    (run_dir / "train.json").write_text(json.dumps(record))
    result = run("verify", model, "--checkpoint", run_dir)
    _one_error_line(
        result, r"train\.json: not a data spec: the embedded task's size must be an integer"
    )
