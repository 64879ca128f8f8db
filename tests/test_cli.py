"""The command line: help everywhere, --version, `train` and its errors (exit 2, no traceback)."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys

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
    "bad arch": (["--arch", "lstm"], "'lstm' is not one of 'cell', 'stacked'"),
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
    from pathlib import Path

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

    cases, providers = [], []

    def failures(self) -> list:
        return []

    def rule(self) -> str:
        return "a rule"

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
        (lambda: OSError(28, "No space left on device"), 2, "error: I/O: No space left"),
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
