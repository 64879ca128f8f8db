"""score_file and `rnn-export score` (local engine): the same predictions as `rnn-export
predict` in every format, ids and line numbers kept, chunks, atomic output, bad input."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from rnn_export import corpus
from rnn_export.cli import main
from rnn_export.corpus import CorpusError
from rnn_export.export import export_onnx
from rnn_export.scoring import ScoreError, ScoreJob, score_file

N_TEXTS = 3000
P_ATOL = 1e-6  # batch composition changes the last float32 bits of a probability, no more


@pytest.fixture(scope="module", params=["cell", "stacked"])
def model_path(request, tiny_run_dir, tmp_path_factory):
    return export_onnx(tiny_run_dir(request.param), tmp_path_factory.mktemp("score") / "m.onnx")


def make_texts(n: int = N_TEXTS, seed: int = 0) -> list[str]:
    """Texts of 0 to 40 characters of the tiny task's alphabet, some with '#' (unknown)."""
    rng = random.Random(seed)
    return [
        "".join(rng.choice("ABCDabcdxyz#") for _ in range(rng.randint(0, 40))) for _ in range(n)
    ]


@pytest.fixture(scope="module")
def texts():
    return make_texts()


@pytest.fixture(scope="module")
def predicted(model_path, texts, tmp_path_factory):
    """`rnn-export predict --file --json --top-k 3` on the texts: its records, by line."""
    file = tmp_path_factory.mktemp("predict") / "texts.txt"
    file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        main, ["predict", str(model_path), "--file", str(file), "--json", "--top-k", "3"]
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def write_input(fmt: str, path, texts, with_id: bool):
    ids = [f"r{i}" for i in range(len(texts))]
    if fmt == "text":
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    elif fmt == "jsonl":
        records = [
            {"id": i, "text": t} if with_id else {"text": t}
            for i, t in zip(ids, texts, strict=True)
        ]
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "text"] if with_id else ["text"])
            w.writerows([i, t] if with_id else [t] for i, t in zip(ids, texts, strict=True))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = {"id": ids, "text": texts} if with_id else {"text": texts}
        pq.write_table(pa.table(table), path)


def read_output(fmt: str, path, top_k: int) -> list[dict]:
    """The output as records {key, label, probability, top_k: [[label, p]...]}."""
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if fmt == "text":
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            key, *cells = line.split("\t")
            pairs = (
                []
                if cells == ["-"]
                else [[cells[i], float(cells[i + 1])] for i in range(0, len(cells), 2)]
            )
            rows.append({"line": int(key), "top_k": pairs})
        return [_best(r) for r in rows]
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8") as f:
            raw = list(csv.DictReader(f))
        raw = [{k: (None if v == "" else v) for k, v in r.items()} for r in raw]
    else:
        import pyarrow.parquet as pq

        raw = pq.read_table(path).to_pylist()
    rows = []
    for r in raw:
        names = [("label", "probability")] + [
            (f"label_{k}", f"probability_{k}") for k in range(2, top_k + 1)
        ]
        pairs = [[r[a], float(r[b])] for a, b in names if r[a] is not None]
        key = {k: v for k, v in r.items() if not k.startswith(("label", "probability"))}
        rows.append(_best({**key, "top_k": pairs}))
    return rows


def _best(record):
    pairs = record["top_k"]
    return {
        **record,
        "label": pairs[0][0] if pairs else None,
        "probability": pairs[0][1] if pairs else None,
    }


def assert_same_predictions(rows, predicted, atol):
    assert len(rows) == len(predicted)
    for row, want in zip(rows, predicted, strict=True):
        assert [p[0] for p in row["top_k"]] == [p[0] for p in want["top_k"]], (row, want)
        np.testing.assert_allclose(
            [p[1] for p in row["top_k"]], [p[1] for p in want["top_k"]], atol=atol, rtol=0
        )


@pytest.mark.parametrize("fmt", ["text", "jsonl", "csv", "parquet"])
def test_score_gives_predict_s_predictions_in_every_format(
    model_path, texts, predicted, fmt, tmp_path, monkeypatch
):
    # Small chunks: the input is read, scored and written in dozens of pieces.
    monkeypatch.setattr(corpus, "CHUNK_TEXTS", 97)
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 1000)
    suffix = corpus.FORMATS[fmt][0]
    src, out = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    write_input(fmt, src, texts, with_id=fmt in ("jsonl", "csv"))
    summary = score_file(ScoreJob(model_path, src, out, top_k=3))
    rows = read_output(fmt, out, 3)
    # text output prints 4 decimals, as predict does
    assert_same_predictions(rows, predicted, atol=P_ATOL if fmt != "text" else 5e-5 + P_ATOL)
    keys = {"text": "line", "jsonl": "id", "csv": "id", "parquet": "row"}[fmt]
    want_keys = [f"r{i}" for i in range(N_TEXTS)] if keys == "id" else list(range(1, N_TEXTS + 1))
    assert [r[keys] if keys != "row" else r["row"] for r in rows] == want_keys
    empty = sum(not t for t in texts)
    assert summary.texts == N_TEXTS and summary.empty == empty > 0
    assert summary.unknown == sum("#" in t for t in texts) > 0
    assert sum(summary.labels.values()) == N_TEXTS - empty
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_cli_score_summary_line_and_no_progress_off_a_terminal(model_path, texts, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input("jsonl", src, texts[:500], with_id=False)
    result = CliRunner().invoke(
        main, ["score", str(model_path), "--input", str(src), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    empty = sum(not t for t in texts[:500])
    assert result.stdout.startswith("scored 500 texts in ")
    assert (
        "texts/s, local) -> " in result.stdout
        and f"({empty} empty, no prediction;" in result.stdout
    )
    assert result.stderr == ""  # no bar: stderr is not a terminal
    rows = read_output("jsonl", out, 1)
    assert [r["line"] for r in rows] == list(range(1, 501))


def test_score_named_text_and_id_columns(model_path, texts, predicted, tmp_path):
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    with open(src, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["key", "body", "extra"])
        w.writerows([f"k{i}", t, "x"] for i, t in enumerate(texts[:200]))
    args = [
        "score",
        str(model_path),
        "--input",
        str(src),
        "--output",
        str(out),
        "--column",
        "body",
        "--id",
        "key",
        "--top-k",
        "3",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = read_output("csv", out, 3)
    assert [r["key"] for r in rows] == [f"k{i}" for i in range(200)]
    assert_same_predictions(rows, predicted[:200], P_ATOL)


def test_failure_leaves_the_output_as_it_was(model_path, texts, tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 1000)
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input("jsonl", src, texts, with_id=False)
    with open(src, "a", encoding="utf-8") as f:
        f.write('{"text": 3}\n')  # the last line is bad: many chunks are written before it
    out.write_text("old\n")
    result = CliRunner().invoke(
        main, ["score", str(model_path), "--input", str(src), "--output", str(out)]
    )
    assert result.exit_code == 2
    assert (
        result.stderr == f"error: {src}:{N_TEXTS + 1}: the text 'text' must be a string; got int\n"
    )
    assert out.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "out.jsonl"]


def _bad_inputs(tmp_path):
    return {
        "no text field": (
            "a.jsonl",
            '{"body": "x"}\n',
            [],
            r"a\.jsonl: no field 'text' \(it has 'body'\); name the text field with --text-field",
        ),
        "not JSON": (
            "a.jsonl",
            '{"text": "AB"}\n{"text": \n',
            [],
            r"a\.jsonl:2: not JSON \(.*column 10\); expected one JSON object per line",
        ),
        "blank line": (
            "a.jsonl",
            '{"text": "AB"}\n\n{"text": "A"}\n',
            [],
            r"a\.jsonl:2: a blank line; expected one JSON object per line",
        ),
        "null text": (
            "a.jsonl",
            '{"text": "AB"}\n{"text": null}\n',
            [],
            r"a\.jsonl:2: the text 'text' must be a string; got null",
        ),
        "not an object": (
            "a.jsonl",
            '["AB"]\n',
            [],
            r"a\.jsonl:1: expected a JSON object; got list",
        ),
        "id missing": (
            "a.jsonl",
            '{"id": 1, "text": "AB"}\n{"text": "A"}\n',
            [],
            r"a\.jsonl:2: no field 'id' \(the id\)",
        ),
        "no such id": (
            "a.csv",
            "text\nAB\n",
            ["--id", "key"],
            r"a\.csv: no column 'key' to keep as the id \(it has 'text'\)",
        ),
        "no column": (
            "a.csv",
            "id,body\n1,AB\n",
            [],
            r"a\.csv: no column 'text' \(it has 'id', 'body'\); name the text column with --column",
        ),
        "short row": (
            "a.csv",
            "id,text\n1,AB\n2\n",
            [],
            r"a\.csv row 2 \(line 3\): has 1 values; the header has 2",
        ),
        "empty csv": ("a.csv", "", [], r"a\.csv: is empty; expected a header row"),
        "not UTF-8": (
            "a.txt",
            b"AB\nA\xffB\n",
            [],
            r"a\.txt:2: expected UTF-8 text; byte 4 \(0xff\)",
        ),
        "unknown suffix": (
            "a.tsv",
            "AB\n",
            [],
            r"a\.tsv: cannot tell the format from the suffix '\.tsv'; expected one of .*--format",
        ),
        "strict": (
            "a.txt",
            "AB\nA#B\n",
            ["--strict"],
            r"a\.txt:2: 1 of 3 characters are not in the model's vocabulary; --strict refuses them",
        ),
        "missing input": (
            None,
            None,
            [],
            r"a\.txt: expected the text file to score; it does not exist",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "no text field",
        "not JSON",
        "blank line",
        "null text",
        "not an object",
        "id missing",
        "no such id",
        "no column",
        "short row",
        "empty csv",
        "not UTF-8",
        "unknown suffix",
        "strict",
        "missing input",
    ],
)
def test_bad_input_is_one_line_exit_2(model_path, tmp_path, case):
    name, content, extra, message = _bad_inputs(tmp_path)[case]
    src = tmp_path / (name or "a.txt")
    if isinstance(content, bytes):
        src.write_bytes(content)
    elif content is not None:
        src.write_text(content, encoding="utf-8")
    out = tmp_path / ("out" + src.suffix)
    result = CliRunner().invoke(
        main, ["score", str(model_path), "--input", str(src), "--output", str(out), *extra]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert re.search(message, result.stderr), result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (
            "out.csv",
            r"out\.csv: a csv file name, but the predictions of a jsonl input are written as jsonl",
        ),
        ("missing/out.jsonl", r"cannot write: folder .*missing does not exist"),
        (".", r"is a folder; expected the path of the predictions file"),
        ("in.jsonl", r"in\.jsonl: is the input; write the predictions elsewhere"),
    ],
)
def test_bad_output_fails_before_any_work(model_path, tmp_path, output, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_text('{"text": "AB"}\n')
    with pytest.raises((CorpusError, ScoreError, OSError, ValueError), match=message):
        score_file(ScoreJob(model_path, tmp_path / "in.jsonl", tmp_path / output))


def test_parquet_without_pyarrow_says_how_to_install_it(model_path, tmp_path, monkeypatch):
    (tmp_path / "in.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(
        CorpusError,
        match=r"Parquet needs pyarrow, which is not installed: pip install 'rnn-export\[parquet\]'",
    ):
        score_file(ScoreJob(model_path, tmp_path / "in.parquet", tmp_path / "out.parquet"))


def test_model_without_unknown_token_refuses_unknown_characters(model_path, tmp_path, monkeypatch):
    import rnn_runtime

    opened = rnn_runtime.open_model(model_path)
    opened.tokenizer.unk_id = None  # as an imported vocabulary without an unknown token
    monkeypatch.setattr(rnn_runtime, "open_model", lambda *a, **k: opened)
    (tmp_path / "in.txt").write_text("AB\nA#\n")
    with pytest.raises(
        ScoreError, match=r"in\.txt:2: 1 of 2 characters .*; this model has no unknown token"
    ):
        score_file(ScoreJob(model_path, tmp_path / "in.txt", tmp_path / "out.txt"))


@pytest.mark.parametrize(
    ("name", "option", "message"),
    [
        (
            "in.jsonl",
            "--column",
            "--column names a CSV or Parquet column; JSONL takes --text-field",
        ),
        (
            "in.csv",
            "--text-field",
            "--text-field names a JSONL field; CSV and Parquet take --column",
        ),
    ],
)
def test_text_option_of_the_other_format_is_a_usage_error(
    model_path, tmp_path, name, option, message
):
    (tmp_path / name).write_text("text\nAB\n")
    args = ["score", str(model_path), "--input", str(tmp_path / name)]
    result = CliRunner().invoke(
        main, [*args, "--output", str(tmp_path / f"o{name}"), option, "body"]
    )
    assert result.exit_code == 2 and message in result.output


def test_ray_engine_without_ray_says_how_to_install_it(model_path, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    (tmp_path / "in.txt").write_text("AB\n")
    args = ["score", str(model_path), "--input", str(tmp_path / "in.txt")]
    result = CliRunner().invoke(
        main, [*args, "--output", str(tmp_path / "o.txt"), "--engine", "ray"]
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --engine ray needs Ray Data, which is not installed: "
        "pip install 'rnn-export[ray]'\n"
    )


@pytest.mark.parametrize("how", ["same path", "other path", "symbolic link", "hard link"])
def test_output_that_is_the_model_file_is_refused(model_path, tmp_path, how):
    """Predictions written over the model would lose it: refused, exit 2, nothing changed."""
    model = tmp_path / "m.onnx"
    model.write_bytes(model_path.read_bytes())
    (tmp_path / "sub").mkdir()
    output = {
        "same path": model,
        "other path": tmp_path / "sub" / ".." / "m.onnx",
        "symbolic link": tmp_path / "link.onnx",
        "hard link": tmp_path / "hard.onnx",
    }[how]
    if how == "symbolic link":
        output.symlink_to(model)
    elif how == "hard link":
        os.link(model, output)
    (tmp_path / "in.txt").write_text("AB\n")
    before = model.read_bytes()
    result = CliRunner().invoke(
        main,
        [
            "score",
            str(model),
            "--input",
            str(tmp_path / "in.txt"),
            "--output",
            str(output),
            "--format",
            "text",
        ],
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1
    assert "is the model file; write the predictions elsewhere" in result.stderr
    assert model.read_bytes() == before and output.read_bytes() == before
