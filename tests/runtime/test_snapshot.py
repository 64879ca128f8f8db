"""The saved-stream format: its documented layout, and every crafted header refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from reference import LABELS

from rnn_runtime import SnapshotError, StreamError
from rnn_runtime.snapshot import MAX_HEADER


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


def _blob(m) -> bytes:
    s = m.stream()
    s.feed("abc")
    return s.save()


def _with_header(m, header: bytes) -> bytes:
    """The blob of _blob(m) with its header replaced by these bytes (payload kept)."""
    blob = _blob(m)
    n = int.from_bytes(blob[12:16], "little")
    return blob[:12] + len(header).to_bytes(4, "little") + header + blob[16 + n :]


def _edited(m, edit) -> bytes:
    blob = _blob(m)
    n = int.from_bytes(blob[12:16], "little")
    header = json.loads(blob[16 : 16 + n])
    edit(header)
    return _with_header(m, json.dumps(header).encode())


def _set(path: tuple, value):
    """An edit that sets header[path[0]][path[1]]... to value."""

    def edit(header):
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _other_model(m) -> bytes:
    return _edited(m, _set(("checkpoint_sha256",), "f" * 64))


def _duplicate_name(header):
    header["tensors"][1]["name"] = header["tensors"][0]["name"]


def _unnamed(header):
    del header["tensors"][0]["name"]


CRAFTED = {
    "not a state": (
        lambda m: b"PK\x03\x04 a zip file",
        r"magic b'RNNSTATE' at the start; got b'PK",
    ),
    "empty": (lambda m: b"", r"got b''"),
    "str": (lambda m: "RNNSTATE", r"is bytes; got str"),
    "version": (
        lambda m: _blob(m)[:8] + (7).to_bytes(4, "little") + _blob(m)[12:],
        r"format version 7; this runtime reads version 1",
    ),
    "header past the limit": (
        lambda m: b"RNNSTATE" + (1).to_bytes(4, "little") + (MAX_HEADER + 1).to_bytes(4, "little"),
        rf"header claims {MAX_HEADER + 1} bytes; only 0 follow \(at most {MAX_HEADER}\)",
    ),
    "truncated": (lambda m: _blob(m)[:-3], r"payload has \d+ bytes; its header describes \d+"),
    "corrupt": (lambda m: _blob(m)[:-1] + b"\x7f", r"corrupt: crc32"),
    "header not json": (lambda m: _blob(m)[:16] + b"[" + _blob(m)[17:], r"header is not valid"),
    "header not utf-8": (lambda m: _with_header(m, b'{"a": "\xff"}'), r"UnicodeDecodeError"),
    "header nested 100,000 deep": (
        lambda m: _with_header(m, b"[" * 100_000 + b"]" * 100_000),
        r"header is not valid: RecursionError",
    ),
    "header 5001-digit number": (
        lambda m: (
            _edited(m, _set(("payload_crc32",), 0))[:0]
            + _with_header(m, b'{"payload_crc32": ' + b"9" * 5001 + b"}")
        ),
        r"header is not valid: ValueError: Exceeds the limit",
    ),
    "header a list": (lambda m: _with_header(m, b"[1, 2]"), r"expected a JSON object; got 'list'"),
    "tensors missing": (lambda m: _with_header(m, b"{}"), r"'tensors' is missing"),
    "tensors a dict": (
        lambda m: _edited(m, _set(("tensors",), {"name": "h0"})),
        r"expected tensors to be a list of at most 64",
    ),
    "tensor a list": (
        lambda m: _edited(m, _set(("tensors", 0), ["h0", [1, 16]])),
        r"expected each tensor to be an object",
    ),
    "too many tensors": (
        lambda m: _edited(m, _set(("tensors",), [{"name": str(i)} for i in range(65)])),
        r"tensors to be a list of at most 64",
    ),
    "shape 2**70": (
        lambda m: _edited(m, _set(("tensors", 0, "shape"), [2**70, 16])),
        r"at most 8 ints in \[0, 2\*\*31\]; got name 'h0', shape \[1180591620717411303424",
    ),
    "shape rank 9": (
        lambda m: _edited(m, _set(("tensors", 0, "shape"), [1] * 9)),
        r"a shape of at most 8 ints",
    ),
    "shape negative": (
        lambda m: _edited(m, _set(("tensors", 0, "shape"), [-1, -16])),
        r"a shape of at most 8 ints in \[0, 2\*\*31\]; got name 'h0', shape \[-1, -16\]",
    ),
    "shape float": (
        lambda m: _edited(m, _set(("tensors", 0, "shape"), [1.0, 16])),
        r"a shape of at most 8 ints",
    ),
    "shape product past the payload": (
        lambda m: _edited(m, _set(("tensors", 0, "shape"), [2**31, 2**31, 2**31])),
        r"payload has \d+ bytes; its header describes 3961408125713216879677197\d{4}$",
    ),
    "dtype": (
        lambda m: _edited(m, _set(("tensors", 0, "dtype"), "float64")),
        r"saved tensor dtype 'float64'; expected 'float32'",
    ),
    "crc a str": (
        lambda m: _edited(m, _set(("payload_crc32",), "123")),
        r"payload_crc32 to be an int in \[0, 2\*\*32\); got '123'",
    ),
    "sha not a str": (
        lambda m: _edited(m, _set(("checkpoint_sha256",), 7)),
        r"checkpoint_sha256 to be a str; got 7",
    ),
    "other model": (
        _other_model,
        r"from the model with checkpoint sha256 f{64}; this model's is [0-9a-f]{64}",
    ),
    "duplicated tensor name": (
        lambda m: _edited(m, _duplicate_name),
        r"names tensor\(s\) \['h0'\] more than once",
    ),
    "unnamed tensor": (lambda m: _edited(m, _unnamed), r"header is not valid: 'name'"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_restore_refuses_crafted_bytes_and_leaves_the_stream_unchanged(rt_model, case):
    make, message = CRAFTED[case]
    stream = rt_model.stream()
    stream.feed("hello")
    state, prediction = stream.get_state(), stream.prediction.log_probs.copy()
    with pytest.raises(SnapshotError, match=message):
        stream.restore(make(rt_model))
    for key, value in stream.get_state().items():
        assert value.tobytes() == state[key].tobytes()
    assert stream.prediction.log_probs.tobytes() == prediction.tobytes()


@pytest.mark.parametrize(
    "shape", [lambda m: [4, 4] if m.metadata.arch == "cell" else [2, 4, 4]], ids=["4x4"]
)
def test_restore_of_a_state_that_does_not_fit_says_so(rt_model, shape):
    blob = _edited(rt_model, _set(("tensors", 0, "shape"), shape(rt_model)))
    stream = rt_model.stream()
    with pytest.raises(StreamError, match=r"'h0' has shape \((4, 4|2, 4, 4)\); this model expects"):
        stream.restore(blob)
