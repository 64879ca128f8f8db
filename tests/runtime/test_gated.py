"""The runtime on gru and lstm files: every state (the LSTM's h and c) streams, pools, saves
and restores, against PyTorch."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from reference import CHARS, LABELS, TEXT, close, export_tiny, ids

from rnn_runtime import StreamError, open_model
from rnn_runtime.snapshot import load_snapshot


@pytest.fixture(scope="module", params=["gru", "lstm"])
def gated(request, tmp_path_factory):
    """(torch model, StreamModel) of a tiny random 2-layer gru or lstm."""
    import torch

    from rnn_export.config import ModelConfig
    from rnn_export.models import build_model

    torch.manual_seed(0)
    vocab = ["<unk>", *CHARS]
    config = ModelConfig(request.param, len(vocab), LABELS, hidden_size=16, num_layers=2)
    model = build_model(config).eval()
    path = export_tiny(model, vocab, tmp_path_factory.mktemp(request.param) / "m.onnx")
    return model, open_model(path)


def _torch(model, token_ids, state=None):
    """PyTorch's (log_probs (C,), {name: state (L, 1, H)}) after token_ids from state."""
    import torch

    from rnn_export.models import model_state

    names = [i for i, _ in model.config.state_names]
    if state is not None:
        state = model_state(torch.from_numpy(state[n]) for n in names)
    with torch.inference_mode():
        lp, new = model(torch.tensor([token_ids], dtype=torch.int64), state)
    new = new if isinstance(new, tuple) else (new,)
    return lp[0].numpy(), {n: s.numpy() for n, s in zip(names, new, strict=True)}


def _close_states(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        close(got[name], value)


def test_every_state_is_in_the_metadata(gated):
    model, rt = gated
    names = [(s.input, s.output) for s in rt.metadata.states]
    assert names == list(model.config.state_names)
    assert names == (
        [("h0", "hn"), ("c0", "cn")] if model.config.arch == "lstm" else [("h0", "hn")]
    )
    assert rt.state_shapes(3) == ((2, 3, 16),) * len(names)
    assert rt.step_session is not None  # streams step through the embedded step model


def test_stream_steps_and_feeds_match_pytorch(gated):
    model, rt = gated
    stream = rt.stream()
    for i, char in enumerate(TEXT[:8]):
        got = stream.step(char)
        want, state = _torch(model, ids(TEXT[: i + 1]))
        close(got.log_probs, want)
        _close_states(stream.get_state(), state)
    stream.feed(TEXT[8:])  # a chunk through the main graph, from the stepped state
    want, state = _torch(model, ids(TEXT))
    close(stream.prediction.log_probs, want)
    _close_states(stream.get_state(), state)


def test_set_state_takes_every_state_and_continues_like_pytorch(gated):
    model, rt = gated
    rng = np.random.default_rng(0)
    start = {
        s.input: rng.normal(0, 0.5, s.concrete_shape(1)).astype(np.float32)
        for s in rt.metadata.states
    }
    stream = rt.stream()
    stream.set_state(start)
    got = stream.feed(TEXT)
    want, state = _torch(model, ids(TEXT), start)
    close(got.log_probs, want)
    _close_states(stream.get_state(), state)


def test_save_holds_every_state_and_restores_exactly(gated):
    model, rt = gated
    a = rt.stream()
    a.feed(TEXT[:9])
    blob = a.save()
    (n,) = struct.unpack_from("<I", blob, 12)
    header = json.loads(blob[16 : 16 + n])
    names = [s.input for s in rt.metadata.states]
    assert [t["name"] for t in header["tensors"]] == [*names, "log_probs"]
    saved = load_snapshot(rt.metadata, blob)
    _close_states({k: saved[k] for k in names}, _torch(model, ids(TEXT[:9]))[1])
    b = rt.stream()
    b.restore(blob)
    for key, value in a.get_state().items():
        np.testing.assert_array_equal(b.get_state()[key], value)
    np.testing.assert_array_equal(b.feed(TEXT[9:]).log_probs, a.feed(TEXT[9:]).log_probs)


def test_pool_with_joins_and_leaves_matches_pytorch(gated):
    model, rt = gated
    pool = rt.pool()
    a, b = pool.join(), pool.join()
    history = {id(a): [], id(b): []}
    for pair in ("ab", "cq", "jj"):
        batch = pool.step(list(pair))
        for stream, char in zip((a, b), pair, strict=True):
            history[id(stream)] += ids(char)
        for i, stream in enumerate(batch.streams):
            close(batch[i].log_probs, _torch(model, history[id(stream)])[0])
    c = rt.stream()
    c.feed("hgf")  # joins with both its states and a prediction
    history[id(c)] = ids("hgf")
    pool.join(c)
    chunks = {c: "abcdefg", a: "j", b: "bb"}
    for stream, text in chunks.items():
        history[id(stream)] += ids(text)
    batch = pool.feed(chunks)
    for i, stream in enumerate(batch.streams):
        close(batch[i].log_probs, _torch(model, history[id(stream)])[0])
    for stream in (b, a, c):
        pool.leave(stream)
        want, state = _torch(model, history[id(stream)])
        close(stream.prediction.log_probs, want)
        _close_states(stream.get_state(), state)
    assert len(pool) == 0


def test_predict_matches_pytorch(gated):
    model, rt = gated
    texts = [TEXT, "a", "hgfe", TEXT[:5]]
    for text, got in zip(texts, rt.predict(texts), strict=True):
        want = _torch(model, ids(text))[0]
        assert got.label == LABELS[int(np.argmax(want))]
        np.testing.assert_allclose(got.probability, np.exp(want.max()), atol=1e-5, rtol=1e-4)


def test_the_main_graph_streams_as_the_step_model_does(gated, tmp_path):
    model, rt = gated
    main = open_model(rt.path, step_model=False)
    assert main.step_session is None
    one, other = rt.stream(), main.stream()
    for char in TEXT:
        close(one.step(char).log_probs, other.step(char).log_probs)
    _close_states(one.get_state(), other.get_state())


def test_a_partial_state_names_what_is_missing(gated):
    model, rt = gated
    stream = rt.stream()
    before = stream.get_state()
    shape = rt.state_shapes(1)[0]
    if model.config.arch == "lstm":
        with pytest.raises(StreamError, match=r"state names are \['h0'\]; this model expects "):
            stream.set_state({"h0": np.zeros(shape, np.float32)})
        with pytest.raises(StreamError, match=r"a state is a dict \{name: array\} with names "):
            stream.set_state(np.zeros(shape, np.float32))  # one array: which of h and c?
    with pytest.raises(StreamError, match=r"state 'h0' has shape \(1, 1, 16\); this model expects"):
        stream.set_state({s.input: np.zeros((1, 1, 16), np.float32) for s in rt.metadata.states})
    for key, value in before.items():
        np.testing.assert_array_equal(stream.get_state()[key], value)


def test_inspect_stream_and_predict_commands(gated):
    """The CLI on a gated file: inspect lists every state; stream and predict give
    PyTorch's label and probability per line."""
    from click.testing import CliRunner

    from rnn_export.cli import main

    model, rt = gated
    runner = CliRunner()
    shown = runner.invoke(main, ["inspect", str(rt.path)])
    assert shown.exit_code == 0, shown.output
    for state_in, state_out in model.config.state_names:
        assert f"state       {state_in} -> {state_out}  (2, B, 16) float32" in shown.output
    lines = ["abc", "jjhgfe", "a"]
    streamed = runner.invoke(main, ["stream", str(rt.path)], input="\n".join(lines) + "\n")
    predicted = runner.invoke(main, ["predict", str(rt.path), "--json", *lines])
    assert streamed.exit_code == 0 and predicted.exit_code == 0, streamed.output
    records = [json.loads(row) for row in predicted.stdout.splitlines()]
    for line, text, record in zip(streamed.stdout.splitlines(), lines, records, strict=True):
        want = _torch(model, ids(text))[0]
        label, probability = line.split("\t")
        assert label == record["label"] == LABELS[int(np.argmax(want))]
        np.testing.assert_allclose(float(probability), np.exp(want.max()), atol=1e-4)
        np.testing.assert_allclose(record["probability"], np.exp(want.max()), atol=1e-5)
