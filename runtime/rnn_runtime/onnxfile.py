"""Read a serialized ONNX model without the onnx package: its metadata, and its tensors checked.

The runtime may not import onnx, and onnxruntime neither shows a model's tensors before
it loads them nor refuses external data. So this module reads the protobuf wire format
itself (varints and length-delimited fields), walking only the messages that can hold a
tensor: ModelProto.graph, .training_info and .functions -> GraphProto.node, .initializer
and .sparse_initializer -> NodeProto.attribute -> AttributeProto.t, .g, .tensors,
.graphs, .sparse_tensor, .sparse_tensors -> TensorProto (a subgraph is walked like the
graph). The main graph and the embedded step model both go through `scan_model` before
onnxruntime sees them.

Refused with ModelFileError:
    - bytes that are not a protobuf message: a truncated field, a length past the end,
      a varint longer than 10 bytes, a group (wire types 3 and 4: ONNX has none),
      field number 0, or more than MAX_DEPTH nested messages;
    - a tensor with data_location EXTERNAL or with external_data entries: a file made by
      `rnn-export convert` is self-contained, and for a model loaded from bytes an
      external location would resolve against the current directory;
    - a float tensor (float32, float64, float16, bfloat16, complex64, complex128) that
      holds NaN or infinity, or whose data is not a whole number of its elements.
Refused with MetadataError: a metadata_props key or value that is not UTF-8, a key given
twice. Other dtypes are not read. The file's size is bounded by the caller
(model.MAX_MODEL_BYTES).
"""

from __future__ import annotations

import numpy as np

from rnn_runtime.errors import MetadataError, ModelFileError

MAX_DEPTH = 100  # nested messages; protobuf's own default recursion limit

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_WIDTH = {_I64: 8, _I32: 4}

# TensorProto.data_type -> (numpy dtype of raw_data and of the typed field, typed field).
_FLOAT_TYPES = {
    1: ("<f4", 4),  # FLOAT: float_data
    10: ("<f2", 5),  # FLOAT16: bits in int32_data
    11: ("<f8", 10),  # DOUBLE: double_data
    14: ("<f4", 4),  # COMPLEX64: float_data, (real, imaginary) pairs
    15: ("<f8", 10),  # COMPLEX128: double_data
    16: ("<u2", 5),  # BFLOAT16: bits in raw_data or int32_data
}
_BFLOAT16 = 16
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class _Invalid(Exception):
    """Bytes that break the wire format (reported by scan_model with the file's name)."""


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(pos, min(pos + 10, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    raise _Invalid(f"a varint at byte {pos} is truncated or longer than 10 bytes")


def _fields(data: memoryview):
    """(field number, wire type, value) of one message; value: int or memoryview."""
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _varint(data, pos)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise _Invalid(f"field number 0 at byte {pos}")
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire in _WIDTH:
            value, pos = data[pos : pos + _WIDTH[wire]], pos + _WIDTH[wire]
            if pos > end:
                raise _Invalid(f"field {field} is truncated")
        elif wire == _LEN:
            n, pos = _varint(data, pos)
            if n > end - pos:
                raise _Invalid(f"field {field} claims {n} bytes; {end - pos} are left")
            value, pos = data[pos : pos + n], pos + n
        else:
            raise _Invalid(f"field {field} has wire type {wire} (not used by ONNX)")
        yield field, wire, value


def _messages(data: memoryview, wanted: dict[int, str]):
    """(kind, sub-message bytes) for each length-delimited field listed in `wanted`."""
    for field, wire, value in _fields(data):
        kind = wanted.get(field)
        if kind is None:
            continue
        if wire != _LEN:
            raise _Invalid(f"field {field} ({kind}) has wire type {wire}; expected a message")
        yield kind, value


# The fields that lead to tensors, per message kind.
_CHILDREN = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}


def _walk(data: memoryview, kind: str, depth: int, tensors: list) -> None:
    if depth > MAX_DEPTH:
        raise _Invalid(f"messages nested deeper than {MAX_DEPTH}")
    for child, value in _messages(data, _CHILDREN[kind]):
        if child == "tensor":
            tensors.append(value)
        else:
            _walk(value, child, depth + 1, tensors)


def _check_tensor(data: memoryview, where: str) -> None:
    name, dtype, location, external = "?", 0, 0, 0
    chunks: dict[int, list] = {}
    for field, wire, value in _fields(data):
        if field == 8 and wire == _LEN:
            name = bytes(value).decode("utf-8", "replace")
        elif field == 2 and wire == _VARINT:
            dtype = value
        elif field == 14 and wire == _VARINT:
            location = value
        elif field == 13:
            external += 1
        elif field in (4, 5, 9, 10):
            chunks.setdefault(field, []).append((wire, value))
    if location == _EXTERNAL or external:
        raise ModelFileError(
            f"{where}: tensor {name!r} keeps its data in an external file; files made by "
            "`rnn-export convert` are self-contained, and this runtime refuses external data"
        )
    if dtype not in _FLOAT_TYPES:
        return
    np_dtype, typed = _FLOAT_TYPES[dtype]
    values = [
        _array(wire, value, np_dtype, field, name)
        for field in (9, typed)
        for wire, value in chunks.get(field, [])
    ]
    if not values:
        return
    flat = np.concatenate(values)
    if dtype == _BFLOAT16:
        bad = int(((flat & 0x7F80) == 0x7F80).sum())  # exponent all ones: inf or NaN
    else:
        bad = int(flat.size - np.isfinite(flat).sum())
    if bad:
        raise ModelFileError(
            f"{where}: tensor {name!r} holds {bad} non-finite values (NaN or infinity); "
            "a model's weights must be finite"
        )


def _array(wire: int, value, np_dtype: str, field: int, name: str) -> np.ndarray:
    """The elements of one raw_data or typed-field chunk as a numpy array."""
    if field == 5:  # int32_data: varints, packed or one per field, each the 16 bits
        if wire == _VARINT:
            ints = [value]
        else:
            ints, pos = [], 0
            while pos < len(value):
                v, pos = _varint(value, pos)
                ints.append(v)
        return np.array([v & 0xFFFF for v in ints], dtype=np.uint16).view(np_dtype)
    size = np.dtype(np_dtype).itemsize
    if wire not in (_LEN, _I64, _I32) or len(value) % size:
        raise _Invalid(f"tensor {name!r}: {len(value)} data bytes are not whole {np_dtype}")
    return np.frombuffer(value, dtype=np_dtype)


def _metadata(data: memoryview, where: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for _, entry in _messages(data, {14: "metadata_props"}):
        pair = {"key": "", "value": ""}
        for kind, raw in _messages(entry, {1: "key", 2: "value"}):
            try:
                pair[kind] = bytes(raw).decode("utf-8")
            except UnicodeDecodeError as e:
                what = "key" if kind == "key" else f"value of key {pair['key']!r}"
                raise MetadataError(
                    f"{where}: metadata {what} is not valid UTF-8 (byte {e.start}: "
                    f"{bytes(raw[e.start : e.start + 1])!r})"
                ) from None
        key, value = pair["key"], pair["value"]
        if key in props:
            raise MetadataError(f"{where}: metadata key {key!r} is given twice")
        props[key] = value
    return props


def is_ort_format(data: bytes) -> bool:
    """True for onnxruntime's ORT format (a flatbuffer whose file identifier is ORTM): its
    tensors are onnxruntime's to check, and its metadata is read through a session."""
    return data[4:8] == b"ORTM"


def scan_model(data: bytes, where: str) -> dict[str, str]:
    """Check a serialized ModelProto's tensors; return its metadata_props.

    Args:
        data: the model's bytes (a whole .onnx file, or the embedded step model).
        where: how messages name it (a path, "the embedded step model").

    Returns:
        {key: value} of ModelProto.metadata_props (other messages' metadata is not read).

    Raises:
        ModelFileError: not a protobuf message, a tensor with external data, or a float
            tensor with NaN or infinity.
        MetadataError: a metadata key or value that is not UTF-8, or a key given twice.
    """
    view = memoryview(data)
    try:
        tensors: list = []
        _walk(view, "model", 0, tensors)
        props = _metadata(view, where)
        for tensor in tensors:
            _check_tensor(tensor, where)
    except _Invalid as e:
        raise ModelFileError(
            f"{where}: cannot load it as a model: not a valid ONNX protobuf ({e})"
        ) from None
    return props
