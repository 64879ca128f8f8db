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

Limits, checked before anything is allocated: a header of at most MAX_HEADER bytes
(1 MiB) of UTF-8 JSON, at most MAX_TENSORS (64) tensors with distinct names, each of
rank at most MAX_RANK (8) with dimensions in [0, 2**31], and a payload of exactly the
size the header describes. Anything else is a SnapshotError.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

from rnn_runtime.errors import SnapshotError

MAGIC = b"RNNSTATE"
VERSION = 1
_PREFIX = struct.Struct("<8sII")
# Limits of what restore() reads, checked before anything is allocated.
MAX_HEADER = 1 << 20  # header bytes
MAX_TENSORS = 64
MAX_RANK = 8
MAX_DIM = 1 << 31  # one dimension


def dump_snapshot(meta, tensors: dict[str, np.ndarray]) -> bytes:
    """Serialise named float32 tensors of one stream of the model `meta` (a ModelMetadata)."""
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


def _invalid(what: str, got) -> SnapshotError:
    return SnapshotError(f"saved stream header is not valid: expected {what}; got {got!r:.120}")


def _is_int(x, low: int, high: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and low <= x < high


def _read_header(raw: bytes) -> tuple[str, int, list[tuple[str, tuple[int, ...]]]]:
    """(checkpoint sha256, payload crc32, [(name, shape)]) of a header, every field checked."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        # ValueError: bad JSON, or an int past Python's digit limit; RecursionError: nesting.
        raise SnapshotError(f"saved stream header is not valid: {type(e).__name__}: {e}") from None
    if not isinstance(header, dict):
        raise _invalid("a JSON object", type(header).__name__)
    for key in ("tensors", "payload_crc32", "checkpoint_sha256"):
        if key not in header:
            raise SnapshotError(f"saved stream header is not valid: {key!r} is missing")
    sha, crc, specs = header["checkpoint_sha256"], header["payload_crc32"], header["tensors"]
    if not isinstance(sha, str):
        raise _invalid("checkpoint_sha256 to be a str", sha)
    if not _is_int(crc, 0, 1 << 32):
        raise _invalid("payload_crc32 to be an int in [0, 2**32)", crc)
    if not isinstance(specs, list) or len(specs) > MAX_TENSORS:
        raise _invalid(f"tensors to be a list of at most {MAX_TENSORS}", specs)
    tensors = []
    for spec in specs:
        if not isinstance(spec, dict):
            raise _invalid("each tensor to be an object", spec)
        if "name" not in spec:
            raise SnapshotError("saved stream header is not valid: 'name'")
        name, shape = spec["name"], spec.get("shape")
        if (
            not isinstance(name, str)
            or not isinstance(shape, list)
            or len(shape) > MAX_RANK
            or not all(_is_int(d, 0, MAX_DIM + 1) for d in shape)
        ):
            raise SnapshotError(
                "saved stream header is not valid: expected tensors with a str name and "
                f"a shape of at most {MAX_RANK} ints in [0, 2**31]; got name {name!r:.60}, "
                f"shape {shape!r:.60}"
            )
        if spec.get("dtype") != "float32":
            raise SnapshotError(f"saved tensor dtype {spec.get('dtype')!r:.40}; expected 'float32'")
        tensors.append((name, tuple(shape)))
    names = [name for name, _ in tensors]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise SnapshotError(f"saved stream header names tensor(s) {twice} more than once")
    return sha, crc, tensors


def load_snapshot(meta, data: bytes) -> dict[str, np.ndarray]:
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
    if n > MAX_HEADER or _PREFIX.size + n > len(data):
        raise SnapshotError(
            f"saved stream header claims {n} bytes; only {len(data) - _PREFIX.size} follow "
            f"(at most {MAX_HEADER})"
        )
    sha, want_crc, tensors = _read_header(data[_PREFIX.size : _PREFIX.size + n])
    if sha != meta.checkpoint_sha256:
        raise SnapshotError(
            f"saved stream comes from the model with checkpoint sha256 {sha:.80}; "
            f"this model's is {meta.checkpoint_sha256}"
        )
    # Python ints: a crafted shape cannot overflow, and nothing is allocated before the
    # sizes are checked against the bytes actually there.
    counts = [_product(shape) for _, shape in tensors]
    body = memoryview(data)[_PREFIX.size + n :]
    if len(body) != 4 * sum(counts):
        raise SnapshotError(
            f"saved stream payload has {len(body)} bytes; its header describes {4 * sum(counts)}"
        )
    crc = zlib.crc32(body)
    if crc != want_crc:
        raise SnapshotError(f"saved stream payload is corrupt: crc32 {crc}; header says {want_crc}")
    out = {}
    offset = 0
    for (name, shape), count in zip(tensors, counts, strict=True):
        raw = np.frombuffer(body, dtype="<f4", count=count, offset=offset)
        out[name] = raw.astype(np.float32).reshape(shape)
        offset += 4 * count
    return out


def _product(shape: tuple[int, ...]) -> int:
    count = 1
    for d in shape:
        count *= d
    return count
