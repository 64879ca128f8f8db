"""read_metadata on metadata written by build_metadata: several states, limits, duplicates."""

from __future__ import annotations

import pytest

from rnn_runtime import MetadataError
from rnn_runtime.metadata import StateSpec, build_metadata, read_metadata

SHA = "0" * 64


def _props(states, step_states, labels=("a", "b"), hidden_size=4, num_layers=2):
    return build_metadata(
        arch="stacked",
        hidden_size=hidden_size,
        num_layers=num_layers,
        nonlinearity="tanh",
        vocab=["<unk>", "x", "y"],
        unk_id=0,
        labels=list(labels),
        states=states,
        checkpoint_sha256=SHA,
        opset=18,
        libraries={},
        tool_version="0",
        step={"token": "token", "log_probs": "lp", "states": step_states, "model": b"\x00"},
    )


TWO_STATES = [
    StateSpec("h0", "hn", (2, "B", 4), "float32"),
    StateSpec("c0", "cn", (2, "B", 4), "float32"),
]


def test_a_step_model_takes_every_layer_of_every_state():
    """Two states (an LSTM's h and c): the step model has 2 * L per-layer states."""
    pairs = [("h_0", "hn_0"), ("h_1", "hn_1"), ("c_0", "cn_0"), ("c_1", "cn_1")]
    meta = read_metadata(_props(TWO_STATES, pairs))
    assert [s.input for s in meta.states] == ["h0", "c0"]
    assert meta.step.states == tuple(pairs)
    with pytest.raises(MetadataError, match=r"expected 4 step states \(one per layer and state\)"):
        _props(TWO_STATES, pairs[:2])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels": ("a", "b", "a")}, r"expected distinct labels; got \['a'\]"),
        ({"hidden_size": 2**14 + 1}, r"expected model.hidden_size in \[1, 16384\]; got 16385"),
        ({"num_layers": 65}, r"expected model.num_layers in \[1, 64\]; got 65"),
    ],
)
def test_build_metadata_cannot_write_what_read_metadata_refuses(kwargs, message):
    pairs = [("h_0", "hn_0"), ("h_1", "hn_1"), ("c_0", "cn_0"), ("c_1", "cn_1")]
    with pytest.raises(MetadataError, match=message):
        _props(TWO_STATES, pairs, **kwargs)


@pytest.mark.parametrize("size", [0, 3, 100_000])
def test_sha256_hex_is_sha256_below_and_above_the_builtin_threshold(monkeypatch, size):
    """The step model's checksum is the same SHA-256 whichever implementation hashes it."""
    import hashlib

    from rnn_runtime import records as metadata

    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    want = hashlib.sha256(data).hexdigest()
    assert metadata.sha256_hex(data) == want
    monkeypatch.setattr(metadata, "_BUILTIN_HASH_BYTES", 0)  # always hashlib
    assert metadata.sha256_hex(data) == want
    monkeypatch.setattr(metadata, "_builtin_sha256", None)  # a Python without it
    monkeypatch.setattr(metadata, "_BUILTIN_HASH_BYTES", 1 << 30)
    assert metadata.sha256_hex(data) == want


def test_a_step_spec_is_immutable_and_its_repr_leaves_out_the_bytes():
    pairs = [("h_0", "hn_0"), ("h_1", "hn_1"), ("c_0", "cn_0"), ("c_1", "cn_1")]
    meta = read_metadata(_props(TWO_STATES, pairs))
    with pytest.raises(AttributeError):
        meta.step.sha256 = "0" * 64
    with pytest.raises(AttributeError):
        meta.arch = "gru"
    assert "onnx_base64" not in repr(meta.step) and meta.step.sha256 in repr(meta.step)
    assert meta.step.model_bytes() == b"\x00"
