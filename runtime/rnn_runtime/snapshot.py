"""The binary format of a saved stream: portable, versioned, no pickle.

Layout (all integers little-endian):
    offset 0   8 bytes   magic b"RNNSTATE"
    offset 8   uint32    format version (1)
    offset 12  uint32    N, the header's length in bytes
    offset 16  N bytes   header: UTF-8 JSON object
                           {"checkpoint_sha256": str (64 hex, the model's identity),
                            "arch": str, "hidden_size": int, "num_layers": int,
                            "tensors": [{"name": str, "shape": [int, ...],
                                         "dtype": "float32"}, ...],
                            "payload_crc32": int}
    offset 16+N          payload: each tensor of "tensors" in order, C order,
                         raw little-endian float32, no padding; the file ends there.

The tensors are the stream's states (named by their graph input, e.g. "h0", with the
batch dimension 1) and, when the stream has made a prediction, "log_probs" (C,).
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

from rnn_runtime.metadata import ModelMetadata
from rnn_runtime.model import StreamError

MAGIC = b"RNNSTATE"
VERSION = 1
_PREFIX = struct.Struct("<8sII")
_MAX_HEADER = 1 << 20


class SnapshotError(StreamError):
    """Bytes that are not a saved stream of this model."""


def dump_snapshot(meta: ModelMetadata, tensors: dict[str, np.ndarray]) -> bytes:
    """Serialise named float32 tensors of one stream of the model `meta`."""
    specs = []
    payload = []
    for name, value in tensors.items():
        value = np.ascontiguousarray(value, dtype="<f4")
        specs.append({"name": name, "shape": list(value.shape), "dtype": "float32"})
        payload.append(value.tobytes())
    body = b"".join(payload)
    header = json.dumps(
        {
            "checkpoint_sha256": meta.checkpoint_sha256,
            "arch": meta.arch,
            "hidden_size": meta.hidden_size,
            "num_layers": meta.num_layers,
            "tensors": specs,
            "payload_crc32": zlib.crc32(body),
        },
        sort_keys=True,
    ).encode()
    return _PREFIX.pack(MAGIC, VERSION, len(header)) + header + body


def load_snapshot(meta: ModelMetadata, data: bytes) -> dict[str, np.ndarray]:
    """Parse saved bytes; check format, integrity and that they come from the model `meta`.

    Returns:
        {name: float32 array} in the saved order (shapes are the caller's to check).

    Raises:
        SnapshotError: naming what was expected and what was got.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SnapshotError(f"a saved stream is bytes; got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _PREFIX.size or data[:8] != MAGIC:
        raise SnapshotError(
            f"not a saved stream: expected magic {MAGIC!r} at the start; got {data[:8]!r}"
        )
    _, version, n = _PREFIX.unpack_from(data)
    if version != VERSION:
        raise SnapshotError(
            f"saved stream format version {version}; this runtime reads version {VERSION}"
        )
    if n > _MAX_HEADER or _PREFIX.size + n > len(data):
        raise SnapshotError(
            f"saved stream header claims {n} bytes; only {len(data) - _PREFIX.size} follow"
        )
    try:
        header = json.loads(data[_PREFIX.size : _PREFIX.size + n].decode())
        specs = header["tensors"]
        want_crc = header["payload_crc32"]
        sha = header["checkpoint_sha256"]
        names = [s["name"] for s in specs]
        shapes = [list(s["shape"]) for s in specs]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise SnapshotError(f"saved stream header is not valid: {e}") from None
    for name, shape in zip(names, shapes, strict=True):
        if not isinstance(name, str) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise SnapshotError(
                "saved stream header is not valid: expected tensors with a str name and "
                f"a shape of ints >= 0; got name {name!r}, shape {shape!r}"
            )
    sizes = [int(np.prod(shape, dtype=np.int64)) * 4 for shape in shapes]
    if sha != meta.checkpoint_sha256:
        raise SnapshotError(
            f"saved stream comes from the model with checkpoint sha256 {sha}; "
            f"this model's is {meta.checkpoint_sha256}"
        )
    body = data[_PREFIX.size + n :]
    if len(body) != sum(sizes):
        raise SnapshotError(
            f"saved stream payload has {len(body)} bytes; its header describes {sum(sizes)}"
        )
    if zlib.crc32(body) != want_crc:
        raise SnapshotError(
            f"saved stream payload is corrupt: crc32 {zlib.crc32(body)}; header says {want_crc}"
        )
    out = {}
    offset = 0
    for spec, name, shape, size in zip(specs, names, shapes, sizes, strict=True):
        if spec.get("dtype") != "float32":
            raise SnapshotError(f"saved tensor dtype {spec.get('dtype')!r}; expected 'float32'")
        raw = np.frombuffer(body, dtype="<f4", count=size // 4, offset=offset)
        out[name] = raw.astype(np.float32).reshape(shape)
        offset += size
    return out
