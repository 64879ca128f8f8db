"""The runtime's own protobuf reader against onnx's, and the tensors it refuses."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rnn_runtime import MetadataError, ModelFileError
from rnn_runtime.onnxfile import MAX_DEPTH, _walk, scan_model


def _all_tensors(graph) -> int:
    """onnx's count of the tensors scan_model must see: initializers and attribute
    tensors of every graph, subgraphs included."""
    count = len(graph.initializer) + 2 * len(graph.sparse_initializer)
    for node in graph.node:
        for attr in node.attribute:
            count += (attr.type == onnx.AttributeProto.TENSOR) + len(attr.tensors)
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else []) + list(
                attr.graphs
            ):
                count += _all_tensors(sub)
    return count


def test_scan_reads_what_onnx_reads(exported):
    data = exported[1].read_bytes()
    proto = onnx.load_from_string(data)
    assert scan_model(data, "m") == {p.key: p.value for p in proto.metadata_props}
    tensors: list = []
    _walk(memoryview(data), "model", 0, tensors)
    assert len(tensors) == _all_tensors(proto.graph)


def _model(*initializers, nodes=(), sparse=()) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph(
        list(nodes) or [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=list(initializers),
        sparse_initializer=list(sparse),
    )
    return helper.make_model(graph).SerializeToString()


def _raw(dtype, values, name="w"):
    return helper.make_tensor(name, dtype, [len(values)], np.asarray(values).tobytes(), raw=True)


def _typed(dtype, values, name="w"):
    return helper.make_tensor(name, dtype, [len(values)], values)


BAD = float("nan")
CASES = {
    "float32 raw": _raw(TensorProto.FLOAT, np.array([1, BAD], np.float32)),
    "float32 float_data": _typed(TensorProto.FLOAT, [1.0, float("inf")]),
    "float64 raw": _raw(TensorProto.DOUBLE, np.array([-np.inf], np.float64)),
    "float64 double_data": _typed(TensorProto.DOUBLE, [BAD]),
    "float16 raw": _raw(TensorProto.FLOAT16, np.array([np.inf, 0], np.float16)),
    "float16 int32_data": _typed(TensorProto.FLOAT16, np.array([np.nan, 1], np.float16)),
    "bfloat16 raw": helper.make_tensor("w", TensorProto.BFLOAT16, [2], b"\x80\x7f\x00\x00", True),
    "complex64": _typed(TensorProto.COMPLEX64, [complex(1, BAD)]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_scan_refuses_non_finite_float_tensors(case):
    with pytest.raises(ModelFileError, match=r"^m: tensor 'w' holds 1 non-finite values"):
        scan_model(_model(CASES[case]), "m")


@pytest.mark.parametrize(
    "tensor",
    [
        _raw(TensorProto.FLOAT, np.array([1, 3e38, -3e38], np.float32)),
        _typed(TensorProto.FLOAT16, np.array([65504, -1], np.float16)),
        helper.make_tensor("w", TensorProto.BFLOAT16, [1], b"\x7f\x7f", True),  # the largest
        _typed(TensorProto.INT64, [2**62]),
    ],
    ids=["float32", "float16", "bfloat16", "int64"],
)
def test_scan_passes_finite_tensors(tensor):
    assert scan_model(_model(tensor), "m") == {}


def _external(name="w"):
    t = _raw(TensorProto.FLOAT, np.ones(2, np.float32), name)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    return t


def _constant_with(tensor):
    return helper.make_node("Constant", [], ["y"], value=tensor)


def _in_subgraph(tensor):
    then = helper.make_graph(
        [_constant_with(tensor)], "t", [], [helper.make_tensor_value_info("y", 1, [2])]
    )
    return helper.make_node("If", ["x"], ["y"], then_branch=then, else_branch=then)


PLACES = {
    "initializer": lambda t: _model(t),
    "constant": lambda t: _model(nodes=[_constant_with(t)]),
    "subgraph": lambda t: _model(nodes=[_in_subgraph(t)]),
    "sparse": lambda t: _model(
        sparse=[helper.make_sparse_tensor(t, _typed(TensorProto.INT64, [0], "i"), [2])]
    ),
}


@pytest.mark.parametrize("place", list(PLACES))
def test_scan_refuses_external_data_anywhere(place):
    with pytest.raises(ModelFileError, match=r"tensor 'w' keeps its data in an external file"):
        scan_model(PLACES[place](_external()), "m")


def test_scan_refuses_an_external_data_entry_without_the_location_flag():
    t = _external()
    t.data_location = TensorProto.DEFAULT
    with pytest.raises(ModelFileError, match=r"external file"):
        scan_model(_model(t), "m")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _nested(depth: int) -> bytes:
    """ModelProto.graph -> node -> attribute -> g -> node -> ... `depth` messages deep."""
    inner = b""
    kinds = [(1, "node"), (5, "attribute"), (6, "graph")]
    for i in range(depth - 1):
        number = kinds[(depth - 2 - i) % 3][0]
        inner = _field(number, inner)
    return _field(7, inner)


@pytest.mark.parametrize(
    "data, message",
    [
        (_field(7, b"\x0a\x05ab"), r"field 1 claims 5 bytes; 2 are left"),
        (b"\x3a\x80", r"a varint at byte 1 is truncated"),
        (b"\x08" + b"\xff" * 11, r"longer than 10 bytes"),
        (b"\x0b", r"field 1 has wire type 3 \(not used by ONNX\)"),
        (b"\x00", r"field number 0"),
        (b"\x38\x01", r"field 7 \(graph\) has wire type 0; expected a message"),
        (b"\x09\x01\x02", r"field 1 is truncated"),
        (_nested(MAX_DEPTH + 3), rf"messages nested deeper than {MAX_DEPTH}"),
    ],
    ids=["length", "varint", "long varint", "group", "field 0", "wire type", "fixed", "deep"],
)
def test_scan_refuses_bytes_that_are_not_protobuf(data, message):
    with pytest.raises(
        ModelFileError, match=rf"^m: cannot load it as a model: not a valid .*{message}"
    ):
        scan_model(data, "m")


def test_scan_reads_deep_but_bounded_nesting():
    assert scan_model(_nested(MAX_DEPTH), "m") == {}


def _props(*pairs: tuple[bytes, bytes]) -> bytes:
    return b"".join(_field(14, _field(1, k) + _field(2, v)) for k, v in pairs)


@pytest.mark.parametrize(
    "data, message",
    [
        (_props((b"k", b"\xffx")), r"metadata value of key 'k' is not valid UTF-8 \(byte 0: "),
        (_props((b"k\xc3", b"v")), r"metadata key is not valid UTF-8 \(byte 1"),
        (_props((b"k", b"1"), (b"k", b"2")), r"metadata key 'k' is given twice"),
    ],
)
def test_scan_refuses_metadata_that_is_not_text(data, message):
    with pytest.raises(MetadataError, match=message):
        scan_model(data, "m")


def test_scan_returns_metadata():
    assert scan_model(_props((b"a", b"1"), (b"b", "\u00e9".encode())), "m") == {"a": "1", "b": "é"}


def test_numpy_helper_round_trip_is_what_the_exporter_writes():
    """The exporter's weights are raw float32: the common case reads with one frombuffer."""
    t = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    assert t.data_type == TensorProto.FLOAT and t.raw_data
    assert scan_model(_model(t), "m") == {}


@pytest.mark.parametrize("place", list(PLACES))
def test_walk_finds_the_tensors_where_onnx_has_them(place):
    data = PLACES[place](_raw(TensorProto.FLOAT, np.ones(2, np.float32)))
    tensors: list = []
    _walk(memoryview(data), "model", 0, tensors)
    assert len(tensors) == _all_tensors(onnx.load_from_string(data).graph) >= 1
