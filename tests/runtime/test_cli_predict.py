"""`rnn-export predict`: texts from arguments, a file or stdin; top-k, JSON, warnings, errors."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from reference import LABELS, close, ids, torch_run

from rnn_export.cli import main


def _predict(*args, stdin=None):
    return CliRunner().invoke(main, ["predict", *map(str, args)], input=stdin)


def _top(model, text, k):
    lp = torch_run(model, ids(text))[0]
    order = np.argsort(-lp, kind="stable")[:k]
    return [LABELS[i] for i in order], np.exp(lp[order])


def test_cli_predict_texts_with_top_k(exported):
    model, path = exported
    result = _predict(path, "abc", "jjh", "--top-k", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    records = [json.loads(x) for x in _predict(path, "abc", "jjh", "--json").stdout.splitlines()]
    assert [(r["index"], r["text"]) for r in records] == [(1, "abc"), (2, "jjh")]
    for line, text in zip(lines, ["abc", "jjh"], strict=True):
        cells = line.split("\t")
        labels, probs = _top(model, text, 2)
        assert cells[0::2] == labels
        close(np.array(cells[1::2], float), probs.round(4))
    assert result.stderr == ""


def test_cli_predict_json_from_a_file(exported, tmp_path):
    model, path = exported
    file = tmp_path / "texts.txt"
    file.write_text("abc\n\nhg\n", encoding="utf-8")
    result = _predict(path, "--file", file, "--json", "--top-k", "3")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3]
    assert records[1] == {"line": 2, "text": "", "label": None, "probability": None, "top_k": []}
    for record in (records[0], records[2]):
        labels, probs = _top(model, record["text"], 3)
        assert record["label"] == labels[0]
        assert [pair[0] for pair in record["top_k"]] == labels
        close(np.array([pair[1] for pair in record["top_k"]]), probs)
        assert record["probability"] == pytest.approx(float(probs[0]), abs=1e-5)


def test_cli_predict_from_stdin_and_unknown_characters_warn(exported):
    model, path = exported
    result = _predict(path, "--file", "-", stdin="aqqb\nab\n")
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "warning: line 1: 2 of 4 characters are not in the model's vocabulary "
        "(read as the unknown token)\n"
    )
    first = result.stdout.splitlines()[0].split("\t")
    assert first[0] == _top(model, "aqqb", 1)[0][0]


# What a process loads besides its job. hashlib's OpenSSL is 3.6 MiB of a cold start's
# peak RSS and dataclasses a few ms (docs/benchmarks.md): the runtime needs neither.
_LOADED = (
    "print(sorted({'torch', 'onnx', 'hashlib', '_hashlib', 'dataclasses'} & set(sys.modules)))"
)


@pytest.mark.parametrize(
    "code, loaded",
    [
        (
            "from rnn_export.cli import main\n"
            "try:\n    main(['predict', sys.argv[1], 'abc'])\n"
            "except SystemExit:\n    pass\n",
            None,  # the CLI may load what it likes, but not torch or onnx
        ),
        ("import rnn_runtime\nprint(rnn_runtime.open_model(sys.argv[1]).stream().step('a'))\n", []),
    ],
    ids=["cli-predict", "runtime-stream"],
)
def test_a_predicting_process_imports_no_torch(exported, code, loaded):
    _, path = exported
    done = subprocess.run(
        [sys.executable, "-c", "import sys\n" + code + _LOADED, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    got = ast.literal_eval(done.stdout.splitlines()[-1])
    assert "torch" not in got and "onnx" not in got
    if loaded is not None:
        assert got == loaded
    assert any(label in done.stdout.splitlines()[0] for label in LABELS)


@pytest.mark.parametrize(
    "args, stdin, match",
    [
        ((), None, "expected TEXT arguments or --file FILE; got neither"),
        (("abc", "--file", "-"), "x\n", "give TEXT arguments or --file, not both"),
        (("aqb", "--strict"), None, "text 1: 1 of 3 characters are not in the model's vocab"),
        (("--file", "-", "--strict"), "ab\nqq\n", "line 2: 2 of 2 characters are not in"),
        (("--file", "-"), b"ab\n\xff\n", r"stdin:2: expected UTF-8 text; byte 3 \(0xff\)"),
        (("--file", "MISSING"), None, "MISSING: No such file or directory"),
        (("abc", "--top-k", "0"), None, "0 is not in the range x>=1"),
    ],
)
def test_cli_predict_bad_input(exported, tmp_path, args, stdin, match):
    _, path = exported
    args = [str(tmp_path / a) if a == "MISSING" else a for a in args]
    result = _predict(path, *args, stdin=stdin)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert re.search(match, result.stderr), result.stderr


def test_cli_predict_refuses_a_run_dir_as_the_model(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    result = _predict(tmp_path, "abc")
    assert result.exit_code == 2
    assert "looks like a RUN_DIR" in result.stderr
