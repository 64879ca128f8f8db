"""`rnn-export inspect` on paths of the wrong kind: it says what the path is (exit 2)."""

from __future__ import annotations

import os
import re

import pytest
from click.testing import CliRunner

from rnn_export.cli import main


def _run_dir(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"{}")
    (folder / "config.json").write_text("{}")
    return folder


@pytest.mark.parametrize(
    "make, message",
    [
        (
            _run_dir,
            r"run: is a folder; expected a .onnx file made by `rnn-export convert`; it looks "
            r"like a RUN_DIR \(it holds model.safetensors\): make its model file with "
            r"`rnn-export convert \S+run --out model.onnx`",
        ),
        (lambda t: t, r": is a folder; expected a .onnx file made by `rnn-export convert`\n"),
        (lambda t: os.devnull, r"/dev/null: is a character device; expected a .onnx file"),
        (lambda t: t / "nothing.onnx", r"nothing.onnx: no such model file"),
    ],
    ids=["run-dir", "folder", "device", "missing"],
)
def test_inspect_says_what_the_path_is(tmp_path, make, message):
    path = make(tmp_path)
    for args in (["inspect", str(path)], ["inspect", str(path), "--json"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert re.search(message, result.stderr), result.stderr
        assert result.stdout == "" and "Traceback" not in result.output


def test_inspect_shows_a_model(exported):
    result = CliRunner().invoke(main, ["inspect", str(exported[1])])
    assert result.exit_code == 0, result.output
    assert f"model       {exported[0].config.arch}" in result.stdout


def test_inspect_refuses_metadata_that_promises_another_class_count(exported, tmp_path):
    from reference import edit_json, rewrite

    def more_classes(props, m):
        edit_json("model", lambda d: d.__setitem__("num_classes", 4))(props, m)
        edit_json("labels", lambda labels: [*labels, "west"])(props, m)

    path = rewrite(exported[1], tmp_path / "lying.onnx", more_classes)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 2, result.output
    assert re.fullmatch(
        r"error: \S+lying.onnx: the metadata promises 4 classes \(model.num_classes, 4 "
        r"labels\); the graph's log_probs has 3\n",
        result.stderr,
    ), result.stderr
