"""Mutated corpus files through `rnn-export score`, every format: each run exits 0 with
one output record per input record, or exits 2 with one line; never a traceback, and
an earlier output is left as it was whenever the run fails."""

from __future__ import annotations

import csv
import io
import json
import random

import pytest
from click.testing import CliRunner

import rnn_runtime
from rnn_export.cli import main
from rnn_export.export import export_onnx

MUTANTS = 40  # per format: a few seconds in all
EARLIER = b"earlier output\n"


@pytest.fixture(scope="module")
def model_path(tiny_run_dir, tmp_path_factory):
    return export_onnx(tiny_run_dir("cell"), tmp_path_factory.mktemp("fuzz") / "m.onnx")


@pytest.fixture
def opened(model_path, monkeypatch):
    """The model opened once for every run (opening is the slow part, and not fuzzed)."""
    model = rnn_runtime.open_model(model_path)
    monkeypatch.setattr(rnn_runtime, "open_model", lambda *a, **k: model)
    return model_path


def _texts(rng: random.Random, n: int) -> list[str]:
    alphabet = "ABCDabcd xy#,\"'\\\t\r\f\u2028\u0085é"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(n)]


def _seed_file(fmt: str, rng: random.Random) -> bytes:
    texts = _texts(rng, 30)
    if fmt == "text":
        return "".join(t.replace("\n", " ").replace("\r", " ") + "\n" for t in texts).encode()
    if fmt == "jsonl":
        return "".join(
            json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)
        ).encode()
    if fmt == "csv":
        f = io.StringIO(newline="")
        w = csv.writer(f, lineterminator="\r\n")  # quotes a text holding "\r" (a line end)
        w.writerow(["id", "text"])
        w.writerows([i, t] for i, t in enumerate(texts))
        return f.getvalue().encode()
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), sink)
    return sink.getvalue()


def _mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["flip", "insert", "delete", "truncate", "duplicate"])
        at = rng.randrange(len(data) + 1) if data else 0
        if kind == "flip" and at < len(data):
            data[at] = rng.choice([0x00, 0x0A, 0x0D, 0x22, 0x2C, 0x5C, 0x7B, 0x80, 0xFF, 0xE2])
        elif kind == "insert":
            data[at:at] = rng.choice([b"\n", b"\r\n", b'"', b",", b"\xe2\x80\xa8", b"\x0c", b"{"])
        elif kind == "delete":
            del data[at : at + rng.randint(1, 8)]
        elif kind == "truncate":
            del data[at:]
        elif kind == "duplicate" and at < len(data):
            data[at:at] = data[at : at + rng.randint(1, 64)]
    return bytes(data)


def _records(fmt: str, data: bytes) -> int:
    """How many records a valid file of fmt holds, counted independently of the reader."""
    if fmt in ("text", "jsonl"):
        return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    if fmt == "csv":
        text = data.decode("utf-8-sig")
        return len(list(csv.reader(io.StringIO(text, newline=""), strict=True))) - 1
    import pyarrow.parquet as pq

    return pq.ParquetFile(io.BytesIO(data)).metadata.num_rows


def _output_records(fmt: str, path) -> int:
    data = path.read_bytes()
    if fmt in ("text", "jsonl"):
        return data.count(b"\n")
    if fmt == "csv":
        return len(list(csv.reader(io.StringIO(data.decode(), newline="")))) - 1
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


SUFFIX = {"text": ".txt", "jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet"}


@pytest.mark.parametrize("fmt", ["text", "jsonl", "csv", "parquet"])
def test_mutated_inputs_score_or_fail_in_one_line(opened, tmp_path, fmt):
    rng = random.Random(f"score-fuzz-{fmt}")
    seed = _seed_file(fmt, rng)
    src, out = tmp_path / f"in{SUFFIX[fmt]}", tmp_path / f"out{SUFFIX[fmt]}"
    outcomes = {"scored": 0, "refused": 0}
    for n in range(MUTANTS):
        data = seed if n == 0 else _mutate(seed, rng)
        src.write_bytes(data)
        out.write_bytes(EARLIER)
        args = ["score", str(opened), "--input", str(src), "--output", str(out)]
        result = CliRunner().invoke(main, args)
        case = f"mutant {n} of {fmt}: {data[:200]!r}"
        assert result.exit_code in (0, 2), f"{case}\n{result.output}\n{result.exc_info}"
        if result.exit_code == 0:
            assert _output_records(fmt, out) == _records(fmt, data), case
            outcomes["scored"] += 1
        else:
            assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, (
                f"{case}\n{result.stderr}"
            )
            assert out.read_bytes() == EARLIER, case
            outcomes["refused"] += 1
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, out.name]), case
    assert outcomes["scored"] >= 1 and outcomes["refused"] >= 1, outcomes
