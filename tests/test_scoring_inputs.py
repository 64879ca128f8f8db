"""Hostile inputs to `rnn-export score` and `predict --file`: one definition of a line,
bounded memory for any text, one-line errors (exit 2) that name the right line or row,
and an earlier output left as it was after every refusal."""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import rnn_runtime
from rnn_export import corpus
from rnn_export.cli import main
from rnn_export.export import export_onnx

ROOT = Path(__file__).resolve().parents[1]
EARLIER = b"earlier output\n"


@pytest.fixture(scope="module")
def model_path(tiny_run_dir, tmp_path_factory):
    return export_onnx(tiny_run_dir("stacked"), tmp_path_factory.mktemp("inputs") / "m.onnx")


def score(model_path, src: Path, *extra, out: Path | None = None):
    out = out or src.with_name("out" + src.suffix)
    return CliRunner().invoke(
        main, ["score", str(model_path), "--input", str(src), "--output", str(out), *extra]
    )


def assert_refused(result, message: str, out: Path):
    """Exit 2, one line naming the place, the earlier output as it was."""
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert out.read_bytes() == EARLIER


# One definition of a line: "\n", with an optional "\r" before it.

LINES = "ab\fcd\nA\u2028B\u0085C\r\nAA\n"  # form feed, U+2028, U+0085 are characters
WANT = ["ab\fcd", "A\u2028B\u0085C", "AA"]


def test_score_predict_and_stream_read_the_same_lines(model_path, tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(LINES.encode())
    assert corpus.split_lines(LINES) == WANT
    result = score(model_path, src)
    assert result.exit_code == 0, result.output
    keys = [line.split("\t")[0] for line in (tmp_path / "out.txt").read_text().split("\n")]
    assert keys == ["1", "2", "3", ""]
    predicted = CliRunner().invoke(main, ["predict", str(model_path), "--file", str(src), "--json"])
    assert predicted.exit_code == 0, predicted.output
    records = [json.loads(line) for line in predicted.stdout.split("\n") if line]
    assert [r["text"] for r in records] == WANT and [r["line"] for r in records] == [1, 2, 3]
    streamed = CliRunner().invoke(main, ["stream", str(model_path)], input=LINES.encode())
    assert streamed.exit_code == 0, streamed.output
    assert len(streamed.stdout.split("\n")) - 1 == len(WANT)


def test_jsonl_with_a_raw_line_separator_inside_a_string_is_valid(model_path, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "A\u2028B"}\n{"text": "C\u0085D"}\n', encoding="utf-8")
    result = score(model_path, src)
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").split("\n")
    assert [json.loads(line)["line"] for line in lines if line] == [1, 2]


# Bad input: one line, exit 2, the earlier output kept.


def _parquet(path, table):
    import pyarrow.parquet as pq

    pq.write_table(table, path)
    return path.read_bytes()


def _bad_inputs(tmp_path):
    import pyarrow as pa

    whole = _parquet(tmp_path / "whole.parquet", pa.table({"text": ["AB"] * 100}))
    return {
        "5,000-digit id": (
            "a.jsonl",
            '{"id": ' + "1" * 5000 + ', "text": "AB"}\n',
            r"a\.jsonl:1: cannot read this JSON: .*4300",
        ),
        "nested 100,000 deep": (
            "a.jsonl",
            '{"text": "AB"}\n{"text": "A", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
            r"a\.jsonl:2: values nested too deep to read",
        ),
        "empty parquet": ("a.parquet", b"", r"a\.parquet: not a Parquet file pyarrow can read"),
        "not parquet": (
            "a.parquet",
            b"id,text\n1,AB\n",
            r"a\.parquet: not a Parquet file pyarrow can read",
        ),
        "truncated parquet": (
            "a.parquet",
            whole[: len(whole) // 2],
            r"a\.parquet: not a Parquet file pyarrow can read",
        ),
        "open quote at the end": (
            "a.csv",
            'id,text\n1,AB\n2,"A\nB\n',
            r"a\.csv row 2 \(line 3\): not CSV: the file ends inside a quoted field",
        ),
        "bad byte in the header": (
            "a.csv",
            b"id,te\xffxt\n1,AB\n",
            r"a\.csv header row \(line 1\): expected UTF-8 text; byte 0xff is not valid",
        ),
    }


CASES = [
    "5,000-digit id",
    "nested 100,000 deep",
    "empty parquet",
    "not parquet",
    "truncated parquet",
    "open quote at the end",
    "bad byte in the header",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_keeps_the_earlier_output(model_path, tmp_path, case):
    name, content, message = _bad_inputs(tmp_path)[case]
    src = tmp_path / name
    if isinstance(content, str):
        content = content.encode()
    src.write_bytes(content)
    out = tmp_path / ("out" + src.suffix)
    out.write_bytes(EARLIER)
    assert_refused(score(model_path, src), message, out)


def test_csv_bad_byte_is_reported_in_its_data_row(model_path, tmp_path):
    """Rows 1-9 hold a quoted line end: data row 5,000 starts on line 5,010."""
    rows = [f'{i},"A\nB"' if i < 10 else f"{i},AB" for i in range(1, 6000)]
    raw = ("id,text\n" + "\n".join(rows) + "\n").encode()
    at = raw.index(b"\n5000,AB") + len(b"\n5000,A")
    src = tmp_path / "in.csv"
    src.write_bytes(raw[:at] + b"\xfe" + raw[at:])
    out = tmp_path / "out.csv"
    out.write_bytes(EARLIER)
    message = r"in\.csv row 5000 \(line 5010\): expected UTF-8 text; byte 0xfe is not valid"
    assert_refused(score(model_path, src), message, out)


def test_parquet_keeps_the_key_type_with_null_ids_first(model_path, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = corpus.CHUNK_TEXTS + 10
    for kind, ids in (
        (pa.string(), [None] * corpus.CHUNK_TEXTS + [f"r{i}" for i in range(10)]),
        (pa.int32(), list(range(n))),
    ):
        src = tmp_path / "in.parquet"
        pq.write_table(
            pa.table({"id": pa.array(ids, type=kind), "text": ["AB"] * n}), src, row_group_size=n
        )
        result = score(model_path, src)
        assert result.exit_code == 0, result.output
        got = pq.read_table(tmp_path / "out.parquet")
        assert got.schema.field("id").type == kind
        assert got.column("id").to_pylist() == ids


# A text too long: refused by every format, naming its line or row.


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "a.txt",
            "AB\n" + "A" * 41 + "\n",
            r"a\.txt:2: a text of 41 characters; expected at most 40",
        ),
        (
            "a.jsonl",
            '{"text": "AB"}\n{"text": "' + "A" * 41 + '"}\n',
            r"a\.jsonl:2: a text of 41 characters; expected at most 40",
        ),
        (
            "a.csv",
            "text\nAB\n" + "A" * 41 + "\n",
            r"a\.csv row 2 \(line 3\): not CSV: a field of more than 40 characters",
        ),
    ],
)
def test_a_text_over_the_limit_is_refused(
    model_path, tmp_path, monkeypatch, name, content, message
):
    monkeypatch.setattr(corpus, "MAX_TEXT_CHARS", 40)
    src = tmp_path / name
    src.write_text(content)
    out = tmp_path / ("out" + src.suffix)
    out.write_bytes(EARLIER)
    assert_refused(score(model_path, src), message, out)


def test_parquet_text_over_the_limit_is_refused(model_path, tmp_path, monkeypatch):
    import pyarrow as pa

    monkeypatch.setattr(corpus, "MAX_TEXT_CHARS", 40)
    src = tmp_path / "a.parquet"
    _parquet(src, pa.table({"text": ["AB", "A" * 41]}))
    out = tmp_path / "out.parquet"
    out.write_bytes(EARLIER)
    message = r"a\.parquet row 2: a text of 41 characters; expected at most 40"
    assert_refused(score(model_path, src), message, out)


def test_predict_refuses_a_line_over_the_limit(model_path, tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "MAX_TEXT_CHARS", 40)
    monkeypatch.setattr(corpus, "MAX_LINE_BYTES", 80)
    src = tmp_path / "a.txt"
    src.write_text("AB\n" + "A" * 41 + "\n")
    result = CliRunner().invoke(main, ["predict", str(model_path), "--file", str(src)])
    assert result.exit_code == 2 and "line 2: a text of 41 characters" in result.stderr
    src.write_text("AB\nAB\n" + "A" * 81 + "\n")
    result = CliRunner().invoke(main, ["predict", str(model_path), "--file", str(src)])
    assert result.exit_code == 2
    assert re.search(r"a\.txt:3: a line of more than 80 bytes", result.stderr), result.stderr


# Memory: bounded for any input, under an address-space limit.

# The model's read reserves protobuf's 2 GiB message limit: the limit leaves room for it;
# padding 255 short texts to one of LONG characters would ask for 256 x LONG x 8 bytes.
ADDRESS_SPACE = 5 << 29  # 2.5 GiB
LONG = 1_500_000
# One thread pool and two malloc arenas, so that the address space a many-core machine
# reserves for idle threads (BLAS buffers, arenas) does not count against the limit.
ENV = {
    "PYTHONPATH": f"{ROOT}:{ROOT / 'runtime'}",
    "PATH": "/usr/bin:/bin",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2",
}


def _limited(args, tmp_path) -> subprocess.CompletedProcess:
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    return subprocess.run(
        [sys.executable, "-m", "rnn_export.cli", *args],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        env=ENV,
        cwd=tmp_path,
        timeout=300,
    )


@pytest.mark.parametrize("command", ["score", "predict"])
def test_one_long_text_among_short_ones_runs_in_bounded_memory(model_path, tmp_path, command):
    src = tmp_path / "in.txt"
    src.write_text("AB\n" * 511 + "A" * LONG + "\n")
    if command == "score":
        args = ["score", str(model_path), "--input", str(src), "--output", "out.txt"]
    else:
        args = ["predict", str(model_path), "--file", str(src)]
    done = _limited(args, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = (tmp_path / "out.txt").read_text() if command == "score" else done.stdout
    assert lines.count("\n") == 512


def test_a_text_over_the_limit_is_refused_in_bounded_memory(model_path, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "AB"}\n{"text": "' + "A" * (corpus.MAX_TEXT_CHARS + 1) + '"}\n')
    done = _limited(
        ["score", str(model_path), "--input", str(src), "--output", "out.jsonl"], tmp_path
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1
    assert f"in.jsonl:2: a text of {corpus.MAX_TEXT_CHARS + 1:,} characters" in done.stderr
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("kind", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_kill_half_way_leaves_what_ctrl_c_leaves(model_path, tmp_path, kind):
    import os
    import signal
    import time

    src = tmp_path / "in.txt"
    src.write_text("ABCDabcd\n" * 400_000)
    out = tmp_path / "out.txt"
    out.write_bytes(EARLIER)
    args = ["score", str(model_path), "--input", str(src), "--output", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnn_export.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.txt.*.tmp")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    assert list(tmp_path.glob(".out.txt.*.tmp")), "the temporary output never appeared"
    os.kill(proc.pid, getattr(signal, kind))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr == "interrupted\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.txt"]
    assert out.read_bytes() == EARLIER


class _RecordingModel:
    """A stand-in for StreamModel that records the batches predict_texts makes."""

    tokenizer = object()  # a text model

    def __init__(self):
        self.batches, self.streamed = [], []

    def predict(self, texts, *, strict, batch_size):
        assert batch_size == len(texts)
        self.batches.append([len(t) for t in texts])
        if "bad" in texts:
            raise rnn_runtime.StreamError(f"texts[{texts.index('bad')}]: not finite")
        return [len(t) for t in texts]

    def stream(self, *, strict):
        model = self

        class Stream:
            prediction = "streamed"

            def feed(self, piece):
                model.streamed.append(len(piece))

        return Stream()


def test_batches_are_bounded_in_padded_tokens_not_in_count():
    from rnn_export.scoring import MAX_PADDED, predict_texts

    texts = ["x" * 1000] * 300 + ["y" * 3] * 600 + ["", "z" * (MAX_PADDED + 5)]
    model = _RecordingModel()
    results = predict_texts(model, texts)
    assert results[:900] == [1000] * 300 + [3] * 600 and results[900] is None
    assert results[901] == "streamed" and sum(model.streamed) == MAX_PADDED + 5
    assert max(model.streamed) <= 4096
    assert sum(len(b) for b in model.batches) == 900
    for batch in model.batches:
        assert len(batch) * max(batch) <= MAX_PADDED and len(batch) <= 256


def test_predict_texts_names_a_failing_text_by_its_index():
    from rnn_export.scoring import predict_texts

    with pytest.raises(rnn_runtime.StreamError, match=r"^texts\[0\]: not finite$"):
        predict_texts(_RecordingModel(), ["bad", "a", "cccc"])


def test_csv_output_quotes_a_key_holding_a_carriage_return(model_path, tmp_path):
    import csv

    src = tmp_path / "in.csv"
    with open(src, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\r\n").writerows([["id", "text"], ["a\rb", "AB"], ["c", "A"]])
    result = score(model_path, src)
    assert result.exit_code == 0, result.output
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert [r[0] for r in rows] == ["id", "a\rb", "c"] and len({len(r) for r in rows}) == 1
