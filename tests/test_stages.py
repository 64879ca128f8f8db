"""The model family as stages: every input kind x arch x kind of file computes what the
PyTorch model computes, on every path of the main graph, the step model and the runtime.

Tiny random models: a one-hot input, a token Embedding whose size E differs from H, and
float frames with a normalization that is not the identity."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import rnn_runtime
from rnn_export.checkpoint import load_checkpoint, save_checkpoint
from rnn_export.config import ConfigError, ModelConfig
from rnn_export.data import Vocabulary
from rnn_export.export import build_onnx, estimate_file_bytes
from rnn_export.models import build_model
from rnn_runtime.errors import StreamError

ATOL, RTOL = 1e-5, 1e-4  # float32, the project's tolerances (runtime against PyTorch)
V, F, H = 12, 5, 16
VOCAB = Vocabulary(("<unk>", *"abcdefghijk"), unk_id=0)
KINDS = {
    "onehot": {"input_kind": "onehot"},
    "tokens-E8": {"input_kind": "tokens", "input_size": 8},
    "features": {"input_kind": "features", "input_size": F},
}
ARCHS = ("cell", "stacked", "gru", "lstm")


def _model(arch: str, kind: str, seed: int = 0):
    torch.manual_seed(seed)
    stage = KINDS[kind]
    config = ModelConfig(
        arch,
        0 if stage["input_kind"] == "features" else V,
        ("north", "south", "east"),
        hidden_size=H,
        num_layers=1 if arch == "cell" else 2,
        **stage,
    )
    model = build_model(config).eval()
    if config.input_kind == "features":
        model.frames.mean.copy_(torch.randn(F) * 3)
        model.frames.scale.copy_(torch.rand(F) * 4 + 0.25)
    return model


def _vocab(model):
    return VOCAB if model.config.reads_tokens else None


def _inputs(model, B: int, T: int, rng) -> np.ndarray:
    if model.config.reads_tokens:
        return rng.integers(0, V, size=(B, T)).astype(np.int64)
    raw = rng.normal(size=(B, T, F)).astype(np.float32)
    return raw * model.frames.scale.numpy() + model.frames.mean.numpy()  # raw frames


def _torch(model, x, lengths=None):
    with torch.no_grad():
        lengths = None if lengths is None else torch.from_numpy(lengths)
        log_probs, _ = model(torch.from_numpy(x), None, lengths)
    return log_probs.numpy()


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("graph", ["default", "portable"])
def test_main_graph_matches_pytorch_on_every_path(arch, kind, graph):
    model = _model(arch, kind)
    built = build_onnx(model, _vocab(model), "a" * 64, graph=graph)
    session = ort.InferenceSession(built.data, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    names = [i.name for i in session.get_inputs()]
    for B, T in ((1, 1), (4, 1), (1, 7), (5, 7)):
        x = _inputs(model, B, T, rng)
        lengths = rng.integers(1, T + 1, size=B).astype(np.int64)
        lengths[0] = T
        feeds = {names[0]: x, "lengths": lengths}
        for spec in session.get_inputs()[1:-1]:
            shape = [B if d == "B" else d for d in spec.shape]
            feeds[spec.name] = np.zeros(shape, np.float32)
        got = session.run(["log_probs"], feeds)[0]
        want = _torch(model, x, lengths)
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL, err_msg=f"B={B} T={T}")


@pytest.mark.parametrize("arch", ["cell", "stacked"])
def test_onehot_table_is_exactly_the_input_weight(arch):
    """One-hot input: layer 0's table row v is column v of W_0 plus the biases, looked up
    with no product (so no identity matrix in the file either)."""
    model = _model(arch, "onehot")
    proto = onnx.load_from_string(build_onnx(model, VOCAB, "a" * 64).data)
    tables = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    ops = {n.op_type for n in proto.graph.node}
    assert "EyeLike" not in ops
    if arch == "cell":
        W, b = model.i2h.weight[:, :V].detach(), model.i2h.bias.detach()
        want = (W.T + b).numpy()
    else:
        rnn = model.rnn
        want = (rnn.weight_ih_l0.T + rnn.bias_ih_l0 + rnn.bias_hh_l0).detach().numpy()
    np.testing.assert_array_equal(tables["table"], want)


@pytest.mark.parametrize("arch", ARCHS)
def test_features_runtime_streams_pools_and_predicts_as_pytorch(arch, tmp_path):
    model = _model(arch, "features")
    path = tmp_path / "m.onnx"
    path.write_bytes(build_onnx(model, None, "b" * 64).data)
    rt = rnn_runtime.open_model(path)
    assert rt.metadata.input_kind == "features" and rt.metadata.input_size == F
    x = _inputs(model, 1, 9, np.random.default_rng(2))[0]
    stream = rt.stream()
    for t in range(4):
        stream.step(x[t])
    got = stream.feed(x[4:]).log_probs
    np.testing.assert_allclose(got, _torch(model, x[None])[0], atol=ATOL, rtol=RTOL)
    pool = rt.pool()
    a, b = pool.join(), pool.join()
    pool.feed({a: x[:3], b: x[:7]})
    stepped = pool.step(x[3:5])
    np.testing.assert_allclose(
        stepped[0].log_probs, _torch(model, x[None, :4])[0], atol=ATOL, rtol=RTOL
    )
    np.testing.assert_allclose(
        stepped[1].log_probs,
        _torch(model, np.concatenate([x[:7], x[4:5]])[None])[0],
        atol=ATOL,
        rtol=RTOL,
    )
    preds = rt.predict([x, x[:2], np.zeros((0, F), np.float32)])
    np.testing.assert_allclose(
        preds[1].log_probs, _torch(model, x[None, :2])[0], atol=ATOL, rtol=RTOL
    )
    assert preds[2] is None
    again = rt.stream()
    again.restore(stream.save())
    np.testing.assert_array_equal(again.get_state()["h0"], stream.get_state()["h0"])


@pytest.mark.parametrize(
    "frame, message",
    [
        (np.zeros(F - 1), r"a frame has shape \(4,\); this model expects \(5,\)"),
        (np.array([0, 0, np.nan, 0, 0]), r"1 values that are not finite .* first at \(2,\)"),
        (  # float32 (F,): the fast path's shape, refused by its finiteness check
            np.array([0, np.inf, 0, 0, 0], np.float32),
            r"1 values that are not finite .* first at \(1,\)",
        ),
        (np.full(F, 1e39), r"5 values that are not finite"),
        ("a", r"reads float frames of 5 values; got a str"),
        (np.array(["x"] * F), r"must hold real numbers; got dtype <U1"),
    ],
)
def test_a_bad_frame_is_refused_and_the_stream_unchanged(frame, message, tmp_path):
    model = _model("gru", "features")
    path = tmp_path / "m.onnx"
    path.write_bytes(build_onnx(model, None, "b" * 64).data)
    stream = rnn_runtime.open_model(path).stream()
    stream.step(np.ones(F, np.float32))
    before = stream.save()
    with pytest.raises(StreamError, match=message):
        stream.step(frame)
    assert stream.save() == before
    with pytest.raises(StreamError, match="reads float frames"):
        stream.model.predict(["abc"])


def test_features_checkpoint_has_no_vocabulary_and_round_trips(tmp_path):
    model = _model("lstm", "features")
    save_checkpoint(tmp_path / "run", model, None, None, {"imported": {"source": "x"}}, {})
    assert not (tmp_path / "run" / "vocab.json").exists()
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.vocab is None and ckpt.config == model.config
    torch.testing.assert_close(ckpt.model.frames.scale, model.frames.scale)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["input_kind"] == "features" and config["input_size"] == F


def test_a_model_of_the_notes_keeps_its_config_dict_and_so_its_identity():
    """The stage fields at their defaults stay out of the stored config: the identity
    (sha256) of every checkpoint written before the stages is unchanged."""
    config = ModelConfig("cell", V, ("a", "b"), hidden_size=H)
    assert set(config.to_dict()) == {
        "arch",
        "vocab_size",
        "labels",
        "hidden_size",
        "num_layers",
        "nonlinearity",
    }
    assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"input_kind": "audio"}, r"input_kind must be one of"),
        ({"input_kind": "features", "input_size": F}, r"vocab_size must be 0"),
        ({"input_kind": "onehot", "input_size": 3}, r"input width is its vocab_size V = 12"),
        ({"input_size": 0}, r"input_size must be in 1 .. 4,096"),
        ({"head": "softmax"}, r"head must be one of"),
    ],
)
def test_bad_stage_configs_are_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig("gru", V, ("a", "b"), **fields)


def _weight_bytes(proto) -> int:
    """The float32 weights' bytes (the graphs' int64 shape constants are not weights)."""
    arrays = (onnx.numpy_helper.to_array(i) for i in proto.graph.initializer)
    return sum(a.nbytes for a in arrays if a.dtype == np.float32)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("arch", ARCHS)
def test_file_size_estimate_counts_the_weights_of_every_input_kind(arch, kind):
    """The 2 GiB refusal rests on estimate_file_bytes: it must count what the file holds
    (the main graph's weights, and the step model's, base64 in the metadata)."""
    model = _model(arch, kind)
    proto = onnx.load_from_string(build_onnx(model, _vocab(model), "a" * 64).data)
    meta = rnn_runtime.metadata.read_metadata({p.key: p.value for p in proto.metadata_props})
    step = onnx.load_from_string(meta.step.model_bytes())
    held = _weight_bytes(proto) + _weight_bytes(step) * 4 / 3
    assert estimate_file_bytes(model.config) == pytest.approx(held, rel=0.02)
