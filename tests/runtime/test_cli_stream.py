"""`rnn-export stream`: output per line and per step, warnings, hint, errors, as a process."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from reference import LABELS, close, ids, torch_run

from rnn_export.cli import main
from rnn_runtime.session import MAX_THREADS


def _expected_lines(model, lines):
    out = []
    for line in lines:
        lp = torch_run(model, ids(line))[0]
        out.append((LABELS[int(np.argmax(lp))], float(np.exp(lp.max()))))
    return out


def _stream(path, *args, stdin=""):
    return CliRunner().invoke(main, ["stream", str(path), *args], input=stdin)


def test_cli_default_one_line_per_input_line(exported):
    model, path = exported
    result = _stream(path, stdin="abc\njjh\n\nhg\n")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[2] == "-"
    for got, (label, p) in zip(
        lines[:2] + lines[3:], _expected_lines(model, ["abc", "jjh", "hg"]), strict=True
    ):
        got_label, got_p = got.split("\t")
        assert got_label == label
        assert abs(float(got_p) - p) < 1e-4
    assert result.stderr == ""


def test_cli_every_step_and_top_k(exported):
    model, path = exported
    result = _stream(path, "--every-step", "--top-k", "3", stdin="abc\n")
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [r[0] for r in rows] == ["a", "b", "c"]
    for i, row in enumerate(rows):
        lp = torch_run(model, ids("abc"[: i + 1]))[0]
        assert row[1::2] == [LABELS[j] for j in np.argsort(-lp, kind="stable")]
        close(np.array(row[2::2], float), np.exp(np.sort(lp)[::-1]).round(4))


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_cli_every_step_shows_an_empty_line(exported, as_json):
    _, path = exported
    args = ["--every-step", "--json"] if as_json else ["--every-step"]
    result = _stream(path, *args, stdin="ab\n\nc\n")
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert len(out) == 4
    if as_json:
        records = [json.loads(line) for line in out]
        assert [(r["line"], r["char"]) for r in records] == [(1, "a"), (1, "b"), (2, ""), (3, "c")]
        assert records[2]["label"] is None
    else:
        assert [line.split("\t")[0] for line in out] == ["a", "b", "-", "c"]
        assert out[2] == "-"


def test_cli_json_and_carry(exported):
    model, path = exported
    result = _stream(path, "--json", "--carry", stdin="ab\ncd\n")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == ["ab", "cd"]
    lp = torch_run(model, ids("abcd"))[0]
    assert records[1]["label"] == LABELS[int(np.argmax(lp))]
    close(records[1]["probability"], float(np.exp(lp.max())))
    assert records[1]["top_k"] == [[records[1]["label"], records[1]["probability"]]]


def test_cli_warns_about_unknown_characters(exported):
    model, path = exported
    result = _stream(path, stdin="abc\nqqq\nxyab\n")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "warning: line 2: 3 of 3 characters are not in the model's vocabulary "
        "(read as the unknown token)",
        "warning: line 3: 2 of 4 characters are not in the model's vocabulary "
        "(read as the unknown token)",
    ]
    assert len(result.stdout.splitlines()) == 3  # the lines still get their prediction


def test_cli_reads_input_that_is_not_utf8(exported):
    _, path = exported
    result = CliRunner().invoke(main, ["stream", str(path)], input=b"ab\xff\n")
    assert result.exit_code == 0, result.output
    assert "1 of 3 characters are not in the model's vocabulary" in result.stderr
    assert len(result.stdout.splitlines()) == 1


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (["--strict"], "aq\n", r"character 'q' at position 1"),
        (["--providers", "NoSuchExecutionProvider"], "", r"unknown execution provider"),
        (["--providers", "cpu,cuda"], "", r"\['CUDAExecutionProvider'\] not available"),
        (["--providers", ","], "", r"providers must be a non-empty list"),
        (["--threads", str(2**31)], "", rf"threads must be an integer in \[1, {MAX_THREADS}\]"),
        (["--threads", str(MAX_THREADS + 1)], "", r"threads must be an integer in"),
    ],
)
def test_cli_errors_exit_2(exported, args, stdin, message):
    result = _stream(exported[1], *args, stdin=stdin)
    assert result.exit_code == 2, result.output
    assert re.search(message, result.stderr), result.output
    assert "Traceback" not in result.output


def test_cli_takes_full_provider_names(exported):
    result = _stream(exported[1], "--providers", "CPUExecutionProvider", stdin="ab\n")
    assert result.exit_code == 0, result.output


def test_cli_help_documents_the_options():
    out = " ".join(CliRunner().invoke(main, ["stream", "--help"]).output.split())
    for words in ("--providers", "cpu, cuda, tensorrt, dml", 'empty line prints "-"', "stderr"):
        assert words in out, words


def test_cli_answers_each_line_before_the_next_is_typed(exported):
    model, path = exported
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnn_export.cli", "stream", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for line, (label, _) in zip(
            ["abc", "hgf"], _expected_lines(model, ["abc", "hgf"]), strict=True
        ):
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], 120)
            assert ready, f"no answer to {line!r} while stdin stays open"
            assert proc.stdout.readline().split("\t")[0] == label
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()


def test_cli_prints_a_hint_when_stdin_is_a_terminal(exported):
    pty = pytest.importorskip("pty")
    model, path = exported
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnn_export.cli", "stream", str(path)],
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(follower)
    try:
        os.write(leader, b"abc\n")
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "no answer from a stream on a terminal"
        assert proc.stdout.readline().split("\t")[0] == _expected_lines(model, ["abc"])[0][0]
        os.write(leader, b"\x04")  # Ctrl-D: the end of the input
        assert proc.wait(timeout=60) == 0
        assert proc.stderr.read().splitlines() == [
            "stream: type a line and press Enter for its prediction (label, probability); "
            "Ctrl-D ends the input."
        ]
    finally:
        proc.kill()
        os.close(leader)
