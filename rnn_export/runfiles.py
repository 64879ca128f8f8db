"""Reading a RUN_DIR's files within bounds: its JSON files and model.safetensors.

Nothing read from a file is trusted before it is checked, and nothing is allocated from
a size no check has passed:
    JSON files    at most 64 MiB; strict UTF-8; nested at most 64 deep; integers of at
                  most 20 digits; finite numbers only (no NaN, Infinity, 1e400); every
                  string and key encodable as UTF-8 (no lone surrogates from escapes).
    safetensors   the header (at most 1 MiB, the same JSON rules) is read first; its
                  tensor names, dtypes (float32), shapes and data offsets are checked
                  against the model of config.json and the file's size before any tensor
                  is read; tensors are then read through safetensors' memory map, and
                  must be finite. The file's sha256 is computed in 1 MiB blocks.
Every refusal is a CheckpointError whose message names the file.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from rnn_export.config import ModelConfig
from rnn_export.errors import CheckpointError
from rnn_export.models import build_model

MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_JSON_DEPTH = 64
MAX_INT_DIGITS = 20
MAX_HEADER_BYTES = 1024 * 1024
_BLOCK = 1024 * 1024
# safetensors dtype names as PyTorch spells them, for messages.
_DTYPES = {
    "F64": "torch.float64",
    "F32": "torch.float32",
    "F16": "torch.float16",
    "BF16": "torch.bfloat16",
    "I64": "torch.int64",
    "I32": "torch.int32",
    "I16": "torch.int16",
    "I8": "torch.int8",
    "U8": "torch.uint8",
    "BOOL": "torch.bool",
}


def read_json(path: Path):
    """The JSON value in the file at path, read within the module's bounds."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise CheckpointError(
                f"{path}: {size:,} bytes; a run directory's JSON files hold at most "
                f"{MAX_JSON_BYTES:,}"
            )
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror}") from None
    return parse_json(raw, path)


def parse_json(raw: bytes, where) -> object:
    """The JSON value in raw (from `where`, named in messages), within the module's bounds."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(
            f"{where}: not valid JSON: byte {e.start} (0x{raw[e.start]:02x}) is not UTF-8"
        ) from None
    try:
        value = json.loads(
            text, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant
        )
    except RecursionError:
        raise CheckpointError(f"{where}: not valid JSON: nested too deeply") from None
    except ValueError as e:  # json.JSONDecodeError is one, and so are the bounds above
        raise CheckpointError(f"{where}: not valid JSON: {e}") from None
    _check_tree(value, where)
    return value


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(
            f"an integer of {len(digits):,} digits; at most {MAX_INT_DIGITS} are accepted"
        )
    return int(digits)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large for a float")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _check_tree(value, where) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH and strings UTF-8 cannot encode."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise CheckpointError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            stack += [(k, depth) for k in item] + [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, depth + 1) for v in item]
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise CheckpointError(
                    f"{where}: the JSON string {item!r:.60} holds a lone "
                    f"surrogate (an escape such as \\ud800 that names no character)"
                ) from None


def read_weights(path: Path, config: ModelConfig, config_path: Path):
    """The tensors of model.safetensors, checked against the model that config describes.

    Returns:
        (weights, sha256): {name: float32 tensor} with exactly the model's names and
        shapes, all finite; and the hex sha256 of the file's bytes.

    Raises:
        CheckpointError: not a safetensors file, or one that does not fit the model.
    """
    with torch.device("meta"):  # names and shapes only: nothing is allocated
        expected = {k: tuple(v.shape) for k, v in build_model(config).state_dict().items()}
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else None
            if n is None or n > MAX_HEADER_BYTES or 8 + n > size:
                raise CheckpointError(
                    f"{path}: not a safetensors file: {size:,} bytes, whose first 8 give a "
                    f"header of {n if n is None else format(n, ',')} bytes (at most "
                    f"{MAX_HEADER_BYTES:,}, within the file)"
                )
            header = parse_json(f.read(n), f"{path}: not a safetensors file: its header")
            _check_header(header, expected, size - 8 - n, path, config, config_path)
            f.seek(0)
            digest = hashlib.sha256()
            while block := f.read(_BLOCK):
                digest.update(block)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror}") from None
    try:
        with safe_open(path, framework="pt") as st:
            weights = {name: st.get_tensor(name) for name in expected}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a safetensors file: {e}") from None
    for name, tensor in weights.items():
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: tensor {name!r} holds NaN or infinity")
    return weights, digest.hexdigest()


def _check_header(header, expected: dict, data_bytes: int, path, config, config_path) -> None:
    """Names, dtypes, shapes and offsets of a safetensors header against the model's."""
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file: its header is not an object")
    names = header.keys() - {"__metadata__"}
    missing, unexpected = sorted(expected.keys() - names), sorted(names - expected.keys())
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: tensor names do not match the {config.arch!r} model of "
            f"{config_path}: missing {missing}, unexpected {str(unexpected)[:200]}"
        )
    for name, want in expected.items():
        entry = header[name]
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise CheckpointError(
                f"{path}: not a safetensors file: the header entry of {name!r} is {entry!r:.80}"
            )
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
            raise CheckpointError(f"{path}: tensor {name!r} has shape {shape!r:.80}; not a shape")
        if tuple(shape) != want:
            raise CheckpointError(
                f"{path}: tensor {name!r} has shape {tuple(shape)}; the model of "
                f"{config_path} expects {want}"
            )
        if dtype != "F32":
            raise CheckpointError(
                f"{path}: tensor {name!r} has dtype {_DTYPES.get(dtype, repr(dtype)):.40}; "
                f"expected torch.float32"
            )
        count = math.prod(want) * 4
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_bytes
            or offsets[1] - offsets[0] != count
        ):
            raise CheckpointError(
                f"{path}: not a safetensors file: tensor {name!r} needs {count:,} bytes; its "
                f"offsets {offsets!r:.60} do not give them within the file's "
                f"{data_bytes:,} bytes of data"
            )
