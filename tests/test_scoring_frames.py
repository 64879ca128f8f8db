"""`rnn-export score`, `predict` and `stream` on a features model: sequences of float frames
from an .npz or a Parquet list column give the runtime's predictions, keys kept, in
bounded chunks; inputs of the other kind and bad frames are one-line errors (exit 2)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import rnn_runtime
from rnn_export import frame_corpus
from rnn_export.cli import main
from rnn_export.config import ModelConfig
from rnn_export.export import build_onnx, export_onnx
from rnn_export.models import build_model

ATOL = 1e-6  # the same graph and kernels; only the batch a sequence runs in differs
F = 5
LABELS = ("north", "south", "east")
LENGTHS = np.array([9, 3, 0, 1, 5, 9, 2, 7])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    config = ModelConfig("gru", 0, LABELS, hidden_size=16, input_kind="features", input_size=F)
    model = build_model(config).eval()
    model.frames.mean.copy_(torch.randn(F) * 3)
    model.frames.scale.copy_(torch.rand(F) * 4 + 0.25)
    path = tmp_path_factory.mktemp("frames") / "kws.onnx"
    path.write_bytes(build_onnx(model, None, "d" * 64).data)
    return path


@pytest.fixture(scope="module")
def text_model(tiny_run_dir, tmp_path_factory):
    return export_onnx(tiny_run_dir("stacked"), tmp_path_factory.mktemp("text") / "m.onnx")


def _frames(n: int | None = None, T=9, seed=1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = len(LENGTHS) if n is None else n
    lengths = LENGTHS if n == len(LENGTHS) else rng.integers(0, T + 1, n)
    x = (rng.normal(size=(n, T, F)) * 3).astype(np.float32)
    for row, k in zip(x, lengths, strict=True):
        row[k:] = 0
    return x, lengths


def _want(model_path, x, lengths):
    """The runtime's predictions of each row's frames: (labels, top probabilities)."""
    model = rnn_runtime.open_model(model_path)
    predictions = model.predict([row[:k] for row, k in zip(x, lengths, strict=True)])
    return [None if p is None else p.label for p in predictions], [
        None if p is None else p.probability for p in predictions
    ]


def _invoke(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def _parquet(path, column):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (the parquet extra)")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(column), path)
    return path


@pytest.mark.parametrize("out_name", ["out.jsonl", "out.csv", "out.txt", "out.parquet"])
def test_score_npz_gives_the_runtime_s_predictions_with_the_ids(model_path, tmp_path, out_name):
    x, lengths = _frames()
    ids = np.array([f"clip-{i}" for i in range(len(x))])
    np.savez_compressed(tmp_path / "in.npz", x=x, lengths=lengths, ids=ids, labels=lengths % 3)
    out = tmp_path / out_name
    result = _invoke("score", model_path, "--input", tmp_path / "in.npz", "--output", out)
    assert result.exit_code == 0, result.output
    assert re.match(r"scored 8 sequences in .* \(1 empty, no prediction\)", result.output)
    labels, probabilities = _want(model_path, x, lengths)
    if out.suffix == ".jsonl":
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["ids"] for r in records] == ids.tolist()
        got = [r["label"] for r in records], [r["probability"] for r in records]
    elif out.suffix == ".csv":
        rows = [line.split(",") for line in out.read_text().splitlines()]
        assert rows[0] == ["ids", "label", "probability"]
        assert [r[0] for r in rows[1:]] == ids.tolist()
        got = [r[1] or None for r in rows[1:]], [float(r[2]) if r[2] else None for r in rows[1:]]
    elif out.suffix == ".txt":
        lines = [line.split("\t") for line in out.read_text().splitlines()]
        assert [line[0] for line in lines] == ids.tolist()
        got = [None if line[1] == "-" else line[1] for line in lines], probabilities
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(out).to_pydict()
        assert table["ids"] == ids.tolist()
        got = table["label"], table["probability"]
    assert got[0] == labels and labels[2] is None
    np.testing.assert_allclose(
        [p for p in got[1] if p is not None], [p for p in probabilities if p is not None], atol=1e-4
    )


@pytest.mark.parametrize("form", ["nested", "flat"])
def test_score_parquet_list_columns_as_the_npz(model_path, tmp_path, form):
    x, lengths = _frames()
    rows = [row[:k] for row, k in zip(x, lengths, strict=True)]
    frames = [r.tolist() if form == "nested" else r.ravel().tolist() for r in rows]
    src = _parquet(tmp_path / "in.parquet", {"clip": frames, "id": list(range(100, 108))})
    out = tmp_path / "out.parquet"
    result = _invoke(
        "score", model_path, "--input", src, "--output", out, "--column", "clip", "--top-k", "2"
    )
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    table = pq.read_table(out).to_pydict()
    labels, probabilities = _want(model_path, x, lengths)
    assert table["id"] == list(range(100, 108)) and table["label"] == labels
    kept = [i for i, p in enumerate(probabilities) if p is not None]
    np.testing.assert_allclose(
        [table["probability"][i] for i in kept], [probabilities[i] for i in kept], atol=ATOL
    )
    assert all(table["label_2"][i] not in (None, table["label"][i]) for i in kept)


def test_a_large_npz_is_read_in_bounded_chunks(model_path, tmp_path, monkeypatch):
    """Rows are read a chunk at a time from the zip member, never the whole array."""
    x, lengths = _frames(n=300, T=12, seed=4)
    np.savez(tmp_path / "in.npz", x=x, lengths=lengths)
    monkeypatch.setattr(frame_corpus, "CHUNK_VALUES", 7 * 12 * F)  # 7 rows a chunk
    reader = frame_corpus.FrameCorpusReader(tmp_path / "in.npz", "npz", F)
    chunks = list(reader)
    assert [len(c.keys) for c in chunks] == [7] * 42 + [6]
    assert reader.key_name == "row" and chunks[-1].keys[-1] == 300 and chunks[-1].done == 300
    got = [frames for c in chunks for frames in c.texts]
    for row, k, frames in zip(x, lengths, got, strict=True):
        np.testing.assert_array_equal(frames, row[:k])
    result = _invoke("predict", model_path, "--file", tmp_path / "in.npz", "--json", "--top-k", "3")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    labels, _ = _want(model_path, x, lengths)
    assert [r["row"] for r in records] == list(range(1, 301))
    assert [r["label"] for r in records] == labels
    assert all(len(r["top_k"]) == (3 if r["label"] else 0) for r in records)


def test_predict_prints_what_it_prints_for_texts(model_path, tmp_path):
    x, lengths = _frames()
    np.savez(tmp_path / "in.npz", x=x, lengths=lengths)
    result = _invoke("predict", model_path, "--file", tmp_path / "in.npz")
    assert result.exit_code == 0, result.output
    labels, probabilities = _want(model_path, x, lengths)
    want = [
        "-" if label is None else f"{label}\t{p:.4f}"
        for label, p in zip(labels, probabilities, strict=True)
    ]
    assert result.output.splitlines() == want


def test_padded_frame_batches_are_bounded_in_values():
    """A features model's batches hold at most MAX_PADDED_VALUES values once padded; a
    longer sequence runs alone through a stream, fed as many frames at a time."""
    from rnn_export.scoring import MAX_PADDED_VALUES, predict_texts

    class Model:
        tokenizer = None

        class metadata:  # noqa: N801: StreamModel's attribute
            input_size = 40

        def __init__(self):
            self.batches, self.streamed = [], []

        def predict(self, sequences, *, strict, batch_size):
            self.batches.append([len(s) for s in sequences])
            return [len(s) for s in sequences]

        def stream(self, *, strict):
            model = self

            class Stream:
                prediction = "streamed"

                def feed(self, piece):
                    model.streamed.append(piece.shape)

            return Stream()

    budget = MAX_PADDED_VALUES // 40
    sequences = [np.zeros((n, 40), np.float32) for n in (100,) * 200 + (budget + 5,)]
    model = Model()
    results = predict_texts(model, sequences)
    assert results[:200] == [100] * 200 and results[200] == "streamed"
    assert sum(shape[0] for shape in model.streamed) == budget + 5
    assert all(shape[0] <= budget for shape in model.streamed)
    assert sum(len(b) for b in model.batches) == 200
    assert all(len(b) * max(b) * 40 <= MAX_PADDED_VALUES for b in model.batches)


def _refused(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert re.search(message, result.stderr), result.stderr


def _bad_npz(path, **arrays):
    x, lengths = _frames()
    np.savez(path, **{"x": x, "lengths": lengths, **arrays})
    return path


def _with_nan(row: int, step: int) -> np.ndarray:
    x = _frames()[0]
    x[row, step, 1] = np.nan
    return x


BAD_NPZ = {
    "wrong F": ({"x": np.zeros((8, 9, F + 1), np.float32)}, r"x has F = 6 values .* F = 5"),
    "no lengths": ({"lengths": None}, r"no array 'lengths' \(it has x\)"),
    "length past T": (
        {"lengths": np.full(8, 10)},
        r"in\.npz row 1: length 10; expected 0 \.\. T = 9",
    ),
    "lengths shape": (
        {"lengths": np.ones((8, 1), int)},
        r"lengths is int64 \(8, 1\); expected int \(8,\)",
    ),
    "2-d x": ({"x": np.zeros((8, 9), np.float32)}, r"x is float32 \(8, 9\); expected float frames"),
    "long ids": (
        {"ids": np.array(["x" * 1025] * 8)},
        r"ids is <U1025 \(8,\); expected int or str of at most 1,024",
    ),
    "ids of objects": (
        {"ids": np.array([{}] * 8, dtype=object)},
        r"ids: an array of object; expected numbers or strings",
    ),
    "not finite": (
        {"x": _with_nan(row=5, step=4)},
        r"in\.npz row 6: frames has 1 values that are not finite",
    ),
}


def test_a_file_that_is_not_an_npz_is_one_line(model_path, tmp_path):
    (tmp_path / "in.npz").write_bytes(b"x,lengths\n1,2\n")
    message = r"in\.npz: not an \.npz file numpy can read: File is not a zip file"
    _refused(_invoke("predict", model_path, "--file", tmp_path / "in.npz"), message)


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_bad_npz_is_one_line_and_leaves_the_output(model_path, tmp_path, case):
    arrays, message = BAD_NPZ[case]
    x, lengths = _frames()
    given = {"x": x, "lengths": lengths, **arrays}
    np.savez(tmp_path / "in.npz", **{k: v for k, v in given.items() if v is not None})
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"earlier\n")
    result = _invoke("score", model_path, "--input", tmp_path / "in.npz", "--output", out)
    _refused(result, message)
    assert "not an .npz file" not in result.stderr  # the first reason, not a wrapper's
    assert out.read_bytes() == b"earlier\n"
    _refused(_invoke("predict", model_path, "--file", tmp_path / "in.npz"), message)


BAD_PARQUET = {
    "frame size": (
        [[[1.0] * F, [1.0] * (F - 1)]],
        r"row 1: frame 1 has 4 values; this model reads F = 5",
    ),
    "flat size": ([[1.0] * (2 * F + 1)], r"row 1: 11 values is not a whole number of frames"),
    "null frames": ([[[1.0] * F], None], r"row 2: the frames 'frames' are null"),
    "null value": (
        [[[1.0] * F], [[1.0] * F, [1.0, None, 1.0, 1.0, 1.0]]],
        r"row 2: a frame value is null",
    ),
    "null value, flat": (
        [[1.0] * F, [1.0] * F, [1.0] * F + [None] * F],
        r"row 3: a frame value is null",
    ),
    "null frame": ([[[1.0] * F], [None]], r"row 2: a frame is null"),
    "strings": ([[["a"] * F]], r"row 1: frames of string; expected numbers"),
    "a text column": (["abc"], r"column 'frames' holds string; expected a list column"),
}


@pytest.mark.parametrize("case", list(BAD_PARQUET))
def test_bad_parquet_frames_are_one_line(model_path, tmp_path, case):
    column, message = BAD_PARQUET[case]
    src = _parquet(tmp_path / "in.parquet", {"frames": column})
    _refused(
        _invoke("score", model_path, "--input", src, "--output", tmp_path / "o.parquet"), message
    )


def test_inputs_of_the_other_kind_are_refused_saying_what_the_model_reads(
    model_path, text_model, tmp_path
):
    (tmp_path / "in.txt").write_text("abc\n")
    npz = _bad_npz(tmp_path / "in.npz")
    frames = _parquet(tmp_path / "frames.parquet", {"frames": [[[1.0] * F]]})
    reads_frames = r"this model reads float frames of F = 5 values a step"
    reads_text = r"holds float frames, but this model reads text"
    cases = [
        (
            ("score", model_path, "--input", tmp_path / "in.txt", "--output", tmp_path / "o.txt"),
            reads_frames,
        ),
        (("predict", model_path, "abc"), reads_frames + r", not text; got TEXT arguments"),
        (("predict", model_path, "--file", tmp_path / "in.txt"), reads_frames),
        (("score", text_model, "--input", npz, "--output", tmp_path / "o.csv"), reads_text),
        (
            (
                "score",
                text_model,
                "--input",
                frames,
                "--output",
                tmp_path / "o.parquet",
                "--column",
                "frames",
            ),
            reads_text,
        ),
        (("predict", text_model, "--file", npz), reads_text),
        (
            ("score", model_path, "--input", npz, "--output", tmp_path / "o.npz"),
            r"o\.npz: the predictions of an \.npz input are written as",
        ),
    ]
    for args, message in cases:
        _refused(_invoke(*args), message)
    _refused(
        _invoke("stream", model_path, input="abc\n"),
        r"kws\.onnx: reads float frames of F = 5 values a step, and stream reads text lines",
    )


def test_ray_refuses_a_features_model_before_a_cluster_starts(model_path, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (the ray extra)")
    import ray

    npz = _bad_npz(tmp_path / "in.npz")
    args = ("score", model_path, "--input", npz, "--output", tmp_path / "o.csv", "--engine", "ray")
    _refused(_invoke(*args), r"kws\.onnx: a features model .* --engine ray scores texts")
    assert not ray.is_initialized()


def test_predict_and_score_of_frames_import_no_torch(model_path, tmp_path):
    import subprocess
    import sys

    npz = _bad_npz(tmp_path / "in.npz")
    code = (
        "import sys\nfrom rnn_export.cli import main\n"
        "for args in (['predict', sys.argv[1], '--file', sys.argv[2]],\n"
        "             ['score', sys.argv[1], '--input', sys.argv[2], '--output', sys.argv[3]]):\n"
        "    try:\n        main(args)\n    except SystemExit as e:\n        assert not e.code, e\n"
        "print(sorted({'torch', 'onnx'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(model_path), str(npz), str(tmp_path / "o.csv")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines()[-1] == "[]"
    assert len((tmp_path / "o.csv").read_text().splitlines()) == 1 + len(LENGTHS)
