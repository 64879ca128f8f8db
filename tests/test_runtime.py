"""The torch-free streaming runtime against PyTorch: streams, pools, state, errors, CLI."""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

import rnn_runtime
from rnn_export.cli import main
from rnn_export.config import ModelConfig
from rnn_export.models import build_model
from rnn_runtime import (
    MetadataError,
    ModelFileError,
    ProviderError,
    SnapshotError,
    StreamError,
    UnknownCharError,
    open_model,
)

# The parity tolerance of the project (issue 4): runtime against PyTorch.
ATOL, RTOL = 1e-5, 1e-4
CHARS = "abcdefghij"
LABELS = ("north", "south", "east")
TEXT = "abcjjqa" + "hgfedcba" * 3  # "q" is outside the vocabulary: the unknown id
REPO = Path(__file__).resolve().parents[1]


def _export(model, vocab: list[str], path: Path) -> Path:
    """Export through the project's exporter (a checkpoint in a run dir first)."""
    from rnn_export.checkpoint import save_checkpoint
    from rnn_export.data import Vocabulary, embedded_spec
    from rnn_export.export import export_onnx

    run_dir = save_checkpoint(
        path.parent / f"run-{path.stem}",
        model,
        Vocabulary(tuple(vocab)),
        embedded_spec(),
        {"epochs": 0},
        {"val_accuracy": 0.0},
    )
    return export_onnx(run_dir, path)


@pytest.fixture(scope="module", params=["cell", "stacked"])
def exported(request, tmp_path_factory):
    """(torch model in eval mode, path of its .onnx) for a tiny random model of each arch."""
    arch = request.param
    torch.manual_seed(0)
    vocab = ["<unk>", *CHARS]
    config = ModelConfig(
        arch, len(vocab), LABELS, hidden_size=16, num_layers=1 if arch == "cell" else 2
    )
    model = build_model(config).eval()
    path = _export(model, vocab, tmp_path_factory.mktemp(arch) / f"{arch}.onnx")
    return model, path


@pytest.fixture(scope="module")
def rt_model(exported):
    return open_model(exported[1])


def _ids(text: str) -> list[int]:
    return [CHARS.index(c) + 1 if c in CHARS else 0 for c in text]


def _torch(model, ids, state=None):
    """PyTorch's (log_probs (C,), state with B=1) after ids from state (zeros if None)."""
    with torch.inference_mode():
        lp, h = model(torch.tensor([ids], dtype=torch.int64), state)
    return lp[0].numpy(), h


def _close(got, want):
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL)


def test_step_by_step_matches_pytorch(exported, rt_model):
    model, _ = exported
    stream = rt_model.stream()
    assert stream.prediction is None
    for i, char in enumerate(TEXT):
        got = stream.step(char)
        _close(got.log_probs, _torch(model, _ids(TEXT[: i + 1]))[0])
    _, h = _torch(model, _ids(TEXT))
    _close(stream.get_state()["h0"], h.numpy())
    assert stream.prediction.label == LABELS[int(np.argmax(got.log_probs))]


def test_step_takes_token_ids(exported, rt_model):
    stream = rt_model.stream()
    for i in _ids("abc"):
        got = stream.step(i)
    _close(got.log_probs, _torch(exported[0], _ids("abc"))[0])


@pytest.mark.parametrize("chunks", [[3, 1, 5, 100], [1] * 4 + [50], [len(TEXT)]])
def test_feed_in_chunks_matches_pytorch(exported, rt_model, chunks):
    stream = rt_model.stream()
    start = 0
    for size in chunks:
        piece = TEXT[start : start + size]
        got = stream.feed(piece) if start % 2 else stream.feed(_ids(piece))
        start += size
        _close(got.log_probs, _torch(exported[0], _ids(TEXT[:start]))[0])


def test_feed_empty_keeps_prediction(rt_model):
    stream = rt_model.stream()
    assert stream.feed("") is None
    p = stream.feed("ab")
    np.testing.assert_array_equal(stream.feed([]).log_probs, p.log_probs)


def test_reset_is_bit_for_bit(exported, rt_model):
    stream = rt_model.stream()
    fresh = [stream.step(c).log_probs for c in TEXT[:6]]
    stream.feed(TEXT)
    stream.reset()
    assert stream.prediction is None
    for value in stream.get_state().values():
        np.testing.assert_array_equal(value, np.zeros_like(value))
        assert not np.signbit(value).any()
    again = [stream.step(c).log_probs for c in TEXT[:6]]
    np.testing.assert_array_equal(np.stack(again), np.stack(fresh))


def test_set_state_continues_like_pytorch(exported, rt_model):
    model, _ = exported
    _, h = _torch(model, _ids("hello"[:3]))
    stream = rt_model.stream()
    stream.set_state(h.numpy())
    assert stream.prediction is None
    got = stream.feed("jab")
    _close(got.log_probs, _torch(model, _ids("jab"), h)[0])


def test_save_restore_resumes_exactly(rt_model):
    a = rt_model.stream()
    a.feed(TEXT[:9])
    blob = a.save()
    b = rt_model.stream()
    b.restore(blob)
    np.testing.assert_array_equal(b.prediction.log_probs, a.prediction.log_probs)
    for key, value in a.get_state().items():
        np.testing.assert_array_equal(b.get_state()[key], value)
    np.testing.assert_array_equal(b.feed(TEXT[9:]).log_probs, a.feed(TEXT[9:]).log_probs)


def test_snapshot_format_is_documented_layout(rt_model):
    stream = rt_model.stream()
    stream.feed("abc")
    blob = stream.save()
    assert blob[:8] == b"RNNSTATE"
    assert int.from_bytes(blob[8:12], "little") == 1
    n = int.from_bytes(blob[12:16], "little")
    header = json.loads(blob[16 : 16 + n])
    assert header["checkpoint_sha256"] == rt_model.metadata.checkpoint_sha256
    assert [t["name"] for t in header["tensors"]] == ["h0", "log_probs"]
    state = stream.get_state()["h0"]
    raw = np.frombuffer(blob[16 + n : 16 + n + state.nbytes], dtype="<f4").reshape(state.shape)
    np.testing.assert_array_equal(raw, state)
    assert len(blob) == 16 + n + state.nbytes + 4 * len(LABELS)


_RESUME = r"""
import json, sys
import rnn_runtime
model = rnn_runtime.open_model(sys.argv[1])
stream = model.stream()
stream.restore(open(sys.argv[2], "rb").read())
print(json.dumps(stream.feed(sys.argv[3]).log_probs.tolist()))
"""


def test_restore_in_another_process_matches_pytorch(exported, rt_model, tmp_path):
    stream = rt_model.stream()
    stream.feed(TEXT[:10])
    (tmp_path / "state.bin").write_bytes(stream.save())
    out = subprocess.run(
        [sys.executable, "-c", _RESUME, str(exported[1]), str(tmp_path / "state.bin"), TEXT[10:]],
        capture_output=True,
        text=True,
        check=True,
    )
    _close(np.array(json.loads(out.stdout), np.float32), _torch(exported[0], _ids(TEXT))[0])


def test_pool_with_joins_and_leaves_matches_pytorch(exported, rt_model):
    model, _ = exported
    pool = rt_model.pool()
    history: dict = {}

    def check(batch):
        for i, stream in enumerate(batch.streams):
            _close(batch[i].log_probs, _torch(model, history[id(stream)])[0])

    def step(tokens):
        for stream, t in zip(pool.streams, tokens, strict=True):
            history[id(stream)] += _ids(t) if isinstance(t, str) else [int(t)]
        check(pool.step(tokens))

    a, b = pool.join(), pool.join()
    history[id(a)], history[id(b)] = [], []
    for t in ("ab", "cq", "jj"):
        step(list(t))
    c = rt_model.stream()
    c.feed("hgf")  # joins with a state and a prediction
    history[id(c)] = _ids("hgf")
    pool.join(c)
    _close(pool.prediction_of(c).log_probs, _torch(model, history[id(c)])[0])
    for t in ("abc", "dea"):
        step(list(t))
    pool.leave(a)
    assert a not in pool and pool.streams == (b, c)
    _close(a.step("d").log_probs, _torch(model, history[id(a)] + _ids("d"))[0])
    history[id(a)] += _ids("d")
    step(["e", 2])
    pool.join(a)
    step(np.array(_ids("fgh")))
    # A subset, and chunks of different lengths through the lengths input.
    history[id(b)] += _ids("i")
    check(pool.step({b: "i"}))
    chunks = {c: "abcdefg", a: "j", b: "bb"}
    for s, text in chunks.items():
        history[id(s)] += _ids(text)
    check(pool.feed(chunks))
    step(list("aaa"))
    for stream in (a, b, c):
        pool.leave(stream)
        _close(stream.prediction.log_probs, _torch(model, history[id(stream)])[0])
        _close(stream.get_state()["h0"], _torch(model, history[id(stream)])[1].numpy())
    assert len(pool) == 0


def test_pool_rows_equal_streams_run_alone(rt_model):
    """A stream's results in a pool equal its results alone, within the parity tolerance.

    Not bit for bit: onnxruntime's CPU kernels for B=1 and B>1 differ in their last bits
    (measured with H=128 over 30 steps at B=2, 16, 256: at most 3.6e-7 in log-probabilities).
    """
    texts = [TEXT, TEXT[::-1], "jihgfedcba" * 2, "aaaaaaaaaaaaaaaaaaaaaaaaa"]
    alone = []
    for text in texts:
        s = rt_model.stream()
        alone.append([s.step(c).log_probs for c in text[:20]])
    pool = rt_model.pool()
    for _ in texts:
        pool.join()
    batched = [pool.step([t[i] for t in texts]).log_probs for i in range(20)]
    for k in range(len(texts)):
        got = np.stack([row[k] for row in batched])
        _close(got, np.stack(alone[k]))


def test_threads_share_one_model(rt_model):
    texts = [(TEXT * 3)[i:] for i in range(8)]
    serial = []
    for text in texts:
        s = rt_model.stream()
        serial.append(np.stack([s.step(c).log_probs for c in text]))
    results: list = [None] * len(texts)

    def run(k):
        s = rt_model.stream()
        results[k] = np.stack([s.step(c).log_probs for c in texts[k]])

    workers = [threading.Thread(target=run, args=(k,)) for k in range(len(texts))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for got, want in zip(results, serial, strict=True):
        np.testing.assert_array_equal(got, want)


def test_unknown_chars_map_to_unk_or_raise_in_strict_mode(exported, rt_model):
    _close(rt_model.stream().feed("aq").log_probs, _torch(exported[0], [1, 0])[0])
    strict = rt_model.stream(strict=True)
    strict.feed("ab")
    before = strict.get_state()["h0"]
    with pytest.raises(UnknownCharError, match=r"character 'q' at position 1 .*strict"):
        strict.feed("aq")
    with pytest.raises(UnknownCharError, match=r"'Z'"):
        strict.step("Z")
    np.testing.assert_array_equal(strict.get_state()["h0"], before)


def _blob(rt_model) -> bytes:
    s = rt_model.stream()
    s.feed("abc")
    return s.save()


def _other_model_blob(rt_model) -> bytes:
    blob = bytearray(_blob(rt_model))
    sha = rt_model.metadata.checkpoint_sha256.encode()
    i = blob.index(sha)
    blob[i : i + 64] = b"f" * 64
    return bytes(blob)


def _header_edit(rt_model, edit) -> bytes:
    blob = _blob(rt_model)
    n = int.from_bytes(blob[12:16], "little")
    header = json.loads(blob[16 : 16 + n])
    edit(header)
    new = json.dumps(header).encode()
    return blob[:12] + len(new).to_bytes(4, "little") + new + blob[16 + n :]


def _shape_of(shape):
    def edit(header):
        header["tensors"][0]["shape"] = shape

    return edit


def _unnamed(header):
    del header["tensors"][0]["name"]


def _nan_log_probs(rt_model) -> bytes:
    """A blob whose saved log_probs hold a NaN (valid crc, so only the value check can fail)."""
    from rnn_runtime.snapshot import dump_snapshot

    s = rt_model.stream()
    s.feed("abc")
    tensors = s.get_state()
    tensors["log_probs"] = np.full(rt_model.metadata.num_classes, np.nan, np.float32)
    return dump_snapshot(rt_model.metadata, tensors)


BAD_INPUTS = {
    "state dtype": (
        lambda s, m: s.set_state({"h0": np.zeros(m.state_shapes(1)[0], np.float64)}),
        StreamError,
        r"'h0' has dtype float64; this model expects float32",
    ),
    "state shape": (
        lambda s, m: s.set_state(np.zeros((3, 16, 2), np.float32)),
        StreamError,
        r"'h0' has shape \(3, 16, 2\); this model expects \(",
    ),
    "state batch": (
        lambda s, m: s.set_state(np.zeros(m.state_shapes(2)[0], np.float32)),
        StreamError,
        r"has shape .*this model expects .*with B=1",
    ),
    "state nan": (
        lambda s, m: s.set_state(np.full(m.state_shapes(1)[0], np.nan, np.float32)),
        StreamError,
        r"non-finite values .* a state must be finite",
    ),
    "state inf": (
        lambda s, m: s.set_state(
            np.where(np.arange(16) == 5, np.inf, 0).astype(np.float32).reshape(1, 16)
            if m.metadata.arch == "cell"
            else np.full(m.state_shapes(1)[0], -np.inf, np.float32)
        ),
        StreamError,
        r"non-finite",
    ),
    "state name": (
        lambda s, m: s.set_state({"c0": np.zeros(m.state_shapes(1)[0], np.float32)}),
        StreamError,
        r"state names are \['c0'\]; this model expects \['h0'\]",
    ),
    "state list": (
        lambda s, m: s.set_state([[0.0] * 16]),
        StreamError,
        r"a state is a dict",
    ),
    "token id high": (lambda s, m: s.step(11), StreamError, r"token id 11 .*\[0, 11\)"),
    "token id negative": (lambda s, m: s.step(-1), StreamError, r"token id -1 .*\[0, 11\)"),
    "token float": (lambda s, m: s.step(1.0), StreamError, r"a character or an int id"),
    "token bool": (lambda s, m: s.step(True), StreamError, r"a character or an int id"),
    "token two chars": (lambda s, m: s.step("ab"), StreamError, r"one character; got 'ab'"),
    "feed id out of range": (
        lambda s, m: s.feed([1, 2, 99]),
        StreamError,
        r"token id 99 at position 2 is out of range",
    ),
    "feed 2-D ids": (
        lambda s, m: s.feed(np.ones((2, 2), np.int64)),
        StreamError,
        r"1-D integer array; got dtype int64, shape \(2, 2\)",
    ),
    "feed float ids": (
        lambda s, m: s.feed(np.ones(3, np.float32)),
        StreamError,
        r"1-D integer array; got dtype float32",
    ),
    "bytes not a state": (
        lambda s, m: s.restore(b"PK\x03\x04 a zip file, not a state"),
        SnapshotError,
        r"expected magic b'RNNSTATE' at the start; got b'PK",
    ),
    "bytes empty": (lambda s, m: s.restore(b""), SnapshotError, r"got b''"),
    "bytes str": (lambda s, m: s.restore("RNNSTATE"), SnapshotError, r"is bytes; got str"),
    "bytes version": (
        lambda s, m: s.restore(_blob(m)[:8] + (7).to_bytes(4, "little") + _blob(m)[12:]),
        SnapshotError,
        r"format version 7; this runtime reads version 1",
    ),
    "bytes truncated": (
        lambda s, m: s.restore(_blob(m)[:-3]),
        SnapshotError,
        r"payload has \d+ bytes; its header describes \d+",
    ),
    "bytes corrupt": (
        lambda s, m: s.restore(_blob(m)[:-1] + b"\x7f"),
        SnapshotError,
        r"corrupt: crc32",
    ),
    "bytes header": (
        lambda s, m: s.restore(_blob(m)[:16] + b"[" + _blob(m)[17:]),
        SnapshotError,
        r"header is not valid",
    ),
    "bytes other model": (
        lambda s, m: s.restore(_other_model_blob(m)),
        SnapshotError,
        r"from the model with checkpoint sha256 f{64}; this model's is [0-9a-f]{64}",
    ),
    "bytes wrong shape": (
        lambda s, m: s.restore(
            _header_edit(m, _shape_of([4, 4] if m.metadata.arch == "cell" else [2, 4, 4]))
        ),
        StreamError,
        r"'h0' has shape \((4, 4|2, 4, 4)\); this model expects",
    ),
    "bytes negative shape": (
        lambda s, m: s.restore(_header_edit(m, _shape_of([-d for d in m.state_shapes(1)[0]]))),
        SnapshotError,
        r"header is not valid: expected .*shape of ints >= 0; got name 'h0', shape \[-\d+, -",
    ),
    "bytes non-finite log_probs": (
        lambda s, m: s.restore(_nan_log_probs(m)),
        SnapshotError,
        rf"saved log_probs has {len(LABELS)} non-finite values; expected finite",
    ),
    "bytes unnamed tensor": (
        lambda s, m: s.restore(_header_edit(m, _unnamed)),
        SnapshotError,
        r"header is not valid: 'name'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_and_leaves_stream_unchanged(rt_model, case):
    action, error, message = BAD_INPUTS[case]
    stream = rt_model.stream()
    stream.feed("hello")
    state = stream.get_state()
    prediction = stream.prediction.log_probs.copy()
    with pytest.raises(error, match=message):
        action(stream, rt_model)
    for key, value in stream.get_state().items():
        np.testing.assert_array_equal(value, state[key])
    np.testing.assert_array_equal(stream.prediction.log_probs, prediction)
    # And it still works exactly like a stream that never saw the bad input.
    twin = rt_model.stream()
    twin.feed("hello")
    np.testing.assert_array_equal(stream.feed("ab").log_probs, twin.feed("ab").log_probs)


def test_pool_bad_input_leaves_members_unchanged(rt_model):
    pool = rt_model.pool()
    a, b = pool.join(), pool.join()
    pool.step(["a", "b"])
    before = pool._state()["h0"].copy()
    with pytest.raises(StreamError, match=r"pool step got 3 tokens; the pool has 2 members"):
        pool.step(["a", "b", "c"])
    with pytest.raises(StreamError, match=r"token id 50 .*out of range"):
        pool.step([1, 50])
    with pytest.raises(StreamError, match=r"shape \(3,\), dtype int64; expected .*\(2,\)"):
        pool.step(np.array([1, 2, 3]))
    # int64 arrays take a fast path: negative ids and ids >= V must still be refused
    V = rt_model.metadata.vocab_size
    for bad in ([1, -1], [V, 1], [1, np.iinfo(np.int64).min]):
        with pytest.raises(StreamError, match=rf"token id {bad[1] if bad[0] == 1 else V} "):
            pool.step(np.array(bad, dtype=np.int64))
    with pytest.raises(StreamError, match=r"token id 50 "):
        pool.step(np.array([1, 50], dtype=">i8"))  # non-native byte order: the full check
    with pytest.raises(StreamError, match=r"at least one token per stream"):
        pool.feed({a: "abc", b: ""})
    with pytest.raises(StreamError, match=r"not a member of this pool"):
        pool.feed({rt_model.stream(): "a"})
    with pytest.raises(StreamError, match=r"in a pool: advance it through the pool"):
        a.step("a")
    with pytest.raises(StreamError, match=r"already in a pool"):
        pool.join(a)
    np.testing.assert_array_equal(pool._state()["h0"], before)


def _rewrite(src: Path, dst: Path, edit) -> Path:
    m = onnx.load(str(src))
    props = {p.key: p.value for p in m.metadata_props}
    edit(props, m)
    del m.metadata_props[:]
    for key, value in props.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(m, str(dst))
    return dst


def _schema_2(props, m):
    props["rnn_export.schema"] = "2"


def _no_metadata(props, m):
    props.clear()


def _wrong_state_name(props, m):
    io = json.loads(props["rnn_export.io"])
    io["states"][0]["input"] = "c0"
    props["rnn_export.io"] = json.dumps(io)


def _wrong_hidden(props, m):
    io = json.loads(props["rnn_export.io"])
    io["states"][0]["shape"] = [s if s == "B" else 99 for s in io["states"][0]["shape"]]
    props["rnn_export.io"] = json.dumps(io)


def _tokens_not_an_object(props, m):
    io = json.loads(props["rnn_export.io"])
    io["tokens"] = "tokens"
    props["rnn_export.io"] = json.dumps(io)


@pytest.mark.parametrize(
    "edit, message",
    [
        (_no_metadata, r"no rnn-export metadata \(was it made by `rnn-export convert`\?\)"),
        (_schema_2, r"unknown metadata schema version 2; this runtime reads version 1"),
        (_wrong_state_name, r"graph inputs are .*'h0'.*; the metadata promises .*'c0'"),
        (_wrong_hidden, r"graph input 'h0' has shape .*; the metadata promises .*99"),
        (_tokens_not_an_object, r"expected io.tokens to be an object; got 'tokens'"),
    ],
)
def test_open_rejects_files_we_did_not_make(exported, tmp_path, edit, message):
    path = _rewrite(exported[1], tmp_path / "edited.onnx", edit)
    with pytest.raises(MetadataError, match=message):
        open_model(path)


def test_open_errors(exported, tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match=r"junk.onnx: onnxruntime cannot load it"):
        open_model(tmp_path / "junk.onnx")
    with pytest.raises(ModelFileError, match=r"missing.onnx: no such model file"):
        open_model(tmp_path / "missing.onnx")
    with pytest.raises(ProviderError, match=r"\['NoSuchExecutionProvider'\] not available"):
        open_model(exported[1], providers=["NoSuchExecutionProvider"])
    with pytest.raises(ValueError, match=r"threads must be an integer >= 1; got 0"):
        open_model(exported[1], threads=0)


def test_open_sets_providers_and_threads(exported):
    model = open_model(exported[1], threads=2, providers=["cpu"])
    assert model.session.get_providers() == ["CPUExecutionProvider"]
    assert model.session.get_session_options().intra_op_num_threads == 2
    assert rnn_runtime.load_metadata(exported[1]).to_dict() == model.metadata.to_dict()


def _expected_lines(model, lines):
    out = []
    for line in lines:
        lp = _torch(model, _ids(line))[0]
        out.append((LABELS[int(np.argmax(lp))], float(np.exp(lp.max()))))
    return out


def test_cli_default_one_line_per_input_line(exported):
    model, path = exported
    result = CliRunner().invoke(main, ["stream", str(path)], input="abc\njjq\n\nhg\n")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[2] == "-"
    for got, (label, p) in zip(
        lines[:2] + lines[3:], _expected_lines(model, ["abc", "jjq", "hg"]), strict=True
    ):
        got_label, got_p = got.split("\t")
        assert got_label == label
        assert abs(float(got_p) - p) < 1e-4


def test_cli_every_step_and_top_k(exported):
    model, path = exported
    result = CliRunner().invoke(
        main, ["stream", str(path), "--every-step", "--top-k", "3"], input="abc\n"
    )
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.output.splitlines()]
    assert [r[0] for r in rows] == ["a", "b", "c"]
    for i, row in enumerate(rows):
        lp = _torch(model, _ids("abc"[: i + 1]))[0]
        assert row[1::2] == [LABELS[j] for j in np.argsort(-lp, kind="stable")]
        _close(np.array(row[2::2], float), np.exp(np.sort(lp)[::-1]).round(4))


def test_cli_json_and_carry(exported):
    model, path = exported
    result = CliRunner().invoke(main, ["stream", str(path), "--json", "--carry"], input="ab\ncd\n")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    assert [r["text"] for r in records] == ["ab", "cd"]
    lp = _torch(model, _ids("abcd"))[0]
    assert records[1]["label"] == LABELS[int(np.argmax(lp))]
    _close(records[1]["probability"], float(np.exp(lp.max())))
    assert records[1]["top_k"] == [[records[1]["label"], records[1]["probability"]]]


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (["--strict"], "aq\n", r"character 'q' at position 1"),
        (["--provider", "NoSuchExecutionProvider"], "", r"not available"),
        (["--provider", "cuda"], "", r"\['CUDAExecutionProvider'\] not available"),
    ],
)
def test_cli_errors_exit_2(exported, args, stdin, message):
    result = CliRunner().invoke(main, ["stream", str(exported[1]), *args], input=stdin)
    assert result.exit_code == 2
    assert re.search(message, result.output), result.output


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


_GUARD = r"""
import json, sys

class _NoTorchNoOnnx:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx"):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, _NoTorchNoOnnx())
import rnn_runtime
from rnn_export.cli import main

stream = rnn_runtime.open_model(sys.argv[1]).stream()
print(json.dumps(stream.feed("abc").log_probs.tolist()))
try:
    main(["stream", sys.argv[1], "--json"])
except SystemExit as e:
    assert e.code == 0, e.code
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx"))
print(json.dumps(leaked))
"""


def test_guard_runtime_and_cli_work_without_torch_and_onnx(exported):
    model, path = exported
    out = subprocess.run(
        [sys.executable, "-c", _GUARD, str(path)],
        input="abc\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    lp = _torch(model, _ids("abc"))[0]
    _close(np.array(json.loads(out[0]), np.float32), lp)
    assert json.loads(out[1])["label"] == LABELS[int(np.argmax(lp))]
    assert json.loads(out[2]) == []


def test_runtime_folder_works_copied_alone(exported, tmp_path):
    import shutil

    shutil.copytree(REPO / "runtime" / "rnn_runtime", tmp_path / "device" / "rnn_runtime")
    code = (
        "import sys; sys.path.insert(0, sys.argv[2]); import rnn_runtime;"
        "assert rnn_runtime.__file__.startswith(sys.argv[2]);"
        "print(rnn_runtime.open_model(sys.argv[1]).stream().feed('abc').label)"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code, str(exported[1]), str(tmp_path / "device")],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(Path(np.__file__).parents[1])},
        check=True,
    )
    lp = _torch(exported[0], _ids("abc"))[0]
    assert out.stdout.strip() == LABELS[int(np.argmax(lp))]


# Measured with scripts/stream_memory.py (H=128): over 100,000 steps the cell model's RSS
# grew 0 bytes; the stacked model's grew once by 644 KiB (onnxruntime's allocator: bare
# IOBinding runs without the runtime do the same, at a random point) and then stayed
# flat over 310,000 steps. 1 MiB over 20,000 steps allows that one step and still
# catches any leak of 53 bytes a step (a leaked Prediction or array is larger).
MAX_GROWTH_BYTES = 1024 * 1024


def test_memory_stays_flat_over_a_long_stream(exported):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "stream_memory.py"),
            str(exported[1]),
            "--steps",
            "20000",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(out.stdout)
    assert figures["steps"] == 20000
    assert figures["growth_bytes"] < MAX_GROWTH_BYTES, figures


# --- the embedded step model (issue 6) ---------------------------------------------------


def _step_edit(change):
    """An edit of the step model's bytes that keeps the metadata's sha256 consistent."""

    def edit(props, m):
        import base64
        import hashlib

        step = json.loads(props["rnn_export.step"])
        proto = onnx.load_from_string(base64.b64decode(step["onnx_base64"]))
        change(proto)
        data = proto.SerializeToString()
        step["onnx_base64"] = base64.b64encode(data).decode("ascii")
        step["sha256"] = hashlib.sha256(data).hexdigest()
        props["rnn_export.step"] = json.dumps(step)

    return edit


def _nudge_recurrent_weight(proto):
    from onnx import numpy_helper

    for i, init in enumerate(proto.graph.initializer):
        if init.name == "R0":
            value = numpy_helper.to_array(init) + np.float32(1e-2)
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, "R0"))


def _rename_token_input(proto):
    proto.graph.input[0].name = "tok"
    proto.graph.node[0].input[1] = "tok"


def _damage_bytes(props, m):
    step = json.loads(props["rnn_export.step"])
    data = step["onnx_base64"]
    step["onnx_base64"] = ("B" if data[100] != "B" else "C").join((data[:100], data[101:]))
    props["rnn_export.step"] = json.dumps(step)


def _not_base64(props, m):
    step = json.loads(props["rnn_export.step"])
    step["onnx_base64"] = "%%%" + step["onnx_base64"]
    props["rnn_export.step"] = json.dumps(step)


def _one_step_state_only(props, m):
    step = json.loads(props["rnn_export.step"])
    step["states"] = step["states"][:0]
    props["rnn_export.step"] = json.dumps(step)


def test_streams_step_through_the_embedded_step_model(exported, rt_model):
    model, path = exported
    meta = rt_model.metadata
    assert meta.step is not None and rt_model.step_session is not None
    assert [i for i, _ in meta.step.states] == [f"h_{layer}" for layer in range(meta.num_layers)]
    stream = rt_model.stream()
    assert stream._steps.session is rt_model.step_session
    # The main graph alone (step_model=False) gives the same results, step after step.
    plain = open_model(path, step_model=False)
    assert plain.step_session is None
    other = plain.stream()
    assert other._steps.session is plain.session
    for i, char in enumerate(TEXT * 3):
        a, b = stream.step(char), other.step(char)
        np.testing.assert_allclose(a.log_probs, b.log_probs, atol=ATOL, rtol=RTOL, err_msg=f"{i}")
    state_a, state_b = stream.get_state(), other.get_state()
    for name in state_a:
        np.testing.assert_allclose(state_a[name], state_b[name], atol=ATOL, rtol=RTOL)
    # And both equal PyTorch.
    want = _torch_prediction(model, TEXT * 3)
    np.testing.assert_allclose(stream.prediction.log_probs, want, atol=ATOL, rtol=RTOL)


def _torch_prediction(model, text: str) -> np.ndarray:
    with torch.no_grad():
        log_probs, _ = model(torch.tensor([_ids(text)]), None)
    return log_probs[0].numpy()


def test_steps_and_chunks_share_one_state(rt_model, exported):
    """step (step model) and feed (main graph) advance the same state buffers."""
    model, _ = exported
    stream = rt_model.stream()
    stream.feed(TEXT[:5])
    for char in TEXT[5:12]:
        stream.step(char)
    stream.feed(TEXT[12:])
    want = _torch_prediction(model, TEXT)
    np.testing.assert_allclose(stream.prediction.log_probs, want, atol=ATOL, rtol=RTOL)
    # set_state then step: the step model reads what set_state wrote.
    state = stream.get_state()
    again = rt_model.stream()
    again.set_state(state)
    np.testing.assert_array_equal(again.step("a").log_probs, stream.step("a").log_probs)


def test_pool_steps_through_the_step_model(rt_model, exported):
    model, path = exported
    pool = rt_model.pool()
    members = [pool.join() for _ in range(5)]
    assert pool._steps.session is rt_model.step_session
    texts = [TEXT[i:] + TEXT[:i] for i in range(5)]
    for t in range(len(TEXT)):
        pool.step(np.array([_ids(x[t])[0] for x in texts], dtype=np.int64))
    for member, text in zip(members, texts, strict=True):
        want = _torch_prediction(model, text)
        np.testing.assert_allclose(member.prediction.log_probs, want, atol=ATOL, rtol=RTOL)


def test_file_without_a_step_model_streams_through_the_main_graph(exported, tmp_path):
    """Files from before the step model (no rnn_export.step key) still open and stream."""

    def drop(props, m):
        del props["rnn_export.step"]

    model, path = exported
    older = open_model(_rewrite(path, tmp_path / "older.onnx", drop))
    assert older.metadata.step is None and older.step_session is None
    stream = older.stream()
    for char in TEXT:
        stream.step(char)
    want = _torch_prediction(model, TEXT)
    np.testing.assert_allclose(stream.prediction.log_probs, want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(
    "edit, message, bypass",
    [
        (_damage_bytes, r"embedded step model has sha256 .*the file is damaged", True),
        (_not_base64, r"step.onnx_base64 is not valid base64", True),
        (
            _step_edit(_nudge_recurrent_weight),
            r"step model disagrees with the main graph on one step \(log_probs",
            True,
        ),
        (_step_edit(_rename_token_input), r"step model's inputs are .*'tok'", True),
        # Metadata that contradicts itself is refused whatever is asked for.
        (_one_step_state_only, r"expected \d step states \(one per layer\); got 0", False),
    ],
)
def test_open_rejects_a_bad_step_model(exported, tmp_path, edit, message, bypass):
    path = _rewrite(exported[1], tmp_path / "bad-step.onnx", edit)
    with pytest.raises(MetadataError, match=message) as info:
        open_model(path)
    assert str(path) in str(info.value)
    if bypass:
        # Opting out of the step model opens the main graph, which is intact.
        assert open_model(path, step_model=False).step_session is None
    else:
        with pytest.raises(MetadataError, match=message):
            open_model(path, step_model=False)
