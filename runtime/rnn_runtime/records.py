"""The records of the file contract (rnn_runtime.metadata): a graph tensor, a recurrent
state, the embedded step model; the SHA-256 that checks the step model's bytes; and
check_signature, which holds a graph's inputs and outputs to the metadata. Standard
library only, so it runs on a device."""

from __future__ import annotations

import base64
import binascii
import math
from typing import NamedTuple

from rnn_runtime.errors import MetadataError
from rnn_runtime.signature import check_sizes

try:  # CPython's own SHA-256 (Python 3.12+: _sha2; 3.11: _sha256), without OpenSSL
    from _sha2 import sha256 as _builtin_sha256
except ImportError:
    try:
        from _sha256 import sha256 as _builtin_sha256
    except ImportError:
        _builtin_sha256 = None

# Below this size the step model is hashed by CPython's own SHA-256: hashlib would load
# OpenSSL, 3.6 MiB of resident memory and 3 ms of a cold start on the project's machine
# (docs/benchmarks.md), for a hash of a few hundred KB. Above it OpenSSL's speed wins
# (240 MB/s against 1.7 GB/s there).
_BUILTIN_HASH_BYTES = 8 << 20


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of data as hex, by the cheapest implementation for its size."""
    if _builtin_sha256 is not None and len(data) < _BUILTIN_HASH_BYTES:
        return _builtin_sha256(data).hexdigest()
    import hashlib

    return hashlib.sha256(data).hexdigest()


class TensorSpec(NamedTuple):
    """One graph input or output: its name, shape ("B"/"T" symbolic) and dtype."""

    name: str
    shape: tuple
    dtype: str

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


class StateSpec(NamedTuple):
    """A recurrent state: fed in as `input`, returned as `output`, same shape and dtype."""

    input: str
    output: str
    shape: tuple
    dtype: str
    initial: str = "zeros"

    def to_dict(self) -> dict:
        return {
            "input": self.input,
            "output": self.output,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "initial": self.initial,
        }

    def concrete_shape(self, batch_size: int) -> tuple[int, ...]:
        """The shape with the symbolic batch "B" replaced by batch_size."""
        return tuple(batch_size if d == "B" else d for d in self.shape)

    @property
    def batch_axis(self) -> int:
        return self.shape.index("B")


class StepSpec(NamedTuple):
    """The optional one-step model (key rnn_export.step): names, checksum and bytes.

    states[l] = (input, output) names of layer l's (B, H) state.
    """

    token: str
    log_probs: str
    states: tuple[tuple[str, str], ...]
    sha256: str = ""
    onnx_base64: str = ""
    in_file: bool = False  # a step file: the file's own graph is the step model

    def __repr__(self) -> str:  # without the bytes
        return (
            f"StepSpec(token={self.token!r}, log_probs={self.log_probs!r}, "
            f"states={self.states!r}, sha256={self.sha256!r}, in_file={self.in_file!r})"
        )

    def model_bytes(self) -> bytes:
        """The serialized ONNX model, checked against its sha256.

        Raises:
            MetadataError: not base64, bytes whose sha256 differs (a damaged file), or a
                step file (its step model is the file itself, not embedded).
        """
        if self.in_file:
            raise MetadataError("a step file embeds no step model: its own graph is the step")
        try:
            data = base64.b64decode(self.onnx_base64, validate=True)
        except (binascii.Error, ValueError) as e:
            raise MetadataError(f"metadata step.onnx_base64 is not valid base64: {e}") from None
        digest = sha256_hex(data)
        if digest != self.sha256:
            raise MetadataError(
                f"the embedded step model has sha256 {digest[:12]}...; the metadata promises "
                f"{self.sha256[:12]}... (the file is damaged)"
            )
        return data

    def to_dict(self) -> dict:
        """Without the bytes: names, checksum and size (what `inspect` shows)."""
        names = {
            "input": self.token,
            "log_probs": self.log_probs,
            "states": [{"input": i, "output": o} for i, o in self.states],
        }
        if self.in_file:
            return names | {"in_file": True}
        return names | {
            "sha256": self.sha256,
            "bytes": len(self.onnx_base64) * 3 // 4 - self.onnx_base64[-2:].count("="),
        }


# onnxruntime NodeArg.type -> the dtype names of this schema.
ORT_DTYPES = {"tensor(int64)": "int64", "tensor(float)": "float32"}


def check_signature(meta, inputs, outputs) -> None:
    """Check that the graph's inputs and outputs are those the metadata promises.

    Args:
        inputs, outputs: onnxruntime NodeArg lists (`session.get_inputs()`,
            `session.get_outputs()`); each has .name, .shape and .type.

    Raises:
        MetadataError: naming the first input or output that contradicts the metadata.
    """
    got_in = {a.name: a for a in inputs}
    got_out = {a.name: a for a in outputs}
    want_in = [meta.tokens, meta.lengths] + [
        TensorSpec(s.input, s.shape, s.dtype) for s in meta.states
    ]
    want_out = [meta.log_probs] + [TensorSpec(s.output, s.shape, s.dtype) for s in meta.states]
    for kind, want, got in (("input", want_in, got_in), ("output", want_out, got_out)):
        if sorted(got) != sorted(w.name for w in want):
            raise MetadataError(
                f"graph {kind}s are {sorted(got)}; the metadata promises "
                f"{sorted(w.name for w in want)}"
            )
        for spec in want:
            arg = got[spec.name]
            dtype = ORT_DTYPES.get(arg.type, arg.type)
            if dtype != spec.dtype:
                raise MetadataError(
                    f"graph {kind} {spec.name!r} has type {dtype}; "
                    f"the metadata promises {spec.dtype}"
                )
            shape = list(arg.shape)
            if len(shape) != len(spec.shape):
                raise MetadataError(
                    f"graph {kind} {spec.name!r} has rank {len(shape)} {tuple(shape)}; "
                    f"the metadata promises {spec.shape}"
                )
            for got_dim, want_dim in zip(shape, spec.shape, strict=True):
                # A symbolic metadata dim must be symbolic in the graph; a fixed one must match.
                fixed = isinstance(got_dim, int)
                if (want_dim in ("B", "T")) == fixed or (fixed and got_dim != want_dim):
                    raise MetadataError(
                        f"graph {kind} {spec.name!r} has shape {tuple(shape)}; "
                        f"the metadata promises {spec.shape}"
                    )
    check_sizes(
        meta, "the graph", meta.log_probs.shape[-1], [(s.output, s.shape) for s in meta.states]
    )


# The checks every reader of the contract makes (metadata.py), each a MetadataError.
def _expect(cond: bool, what: str, got) -> None:
    if not cond:
        raise MetadataError(f"metadata: expected {what}; got {got!r:.200}")


def _is_int(x, minimum: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= minimum


def _repeated(items: list) -> list:
    """The items that occur more than once (first occurrences order), for messages."""
    seen: set = set()
    return list(dict.fromkeys(x for x in items if x in seen or seen.add(x)))


def _is_float(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
