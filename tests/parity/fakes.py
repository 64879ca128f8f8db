"""Broken copies of exported models, made by graph surgery: verify must fail on each.

The metadata (checkpoint sha256 included) is kept as it is, so a fake fails on numbers,
not on the model/checkpoint match.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from rnn_export.config import STATE_IN, STATE_OUT, TOKENS


def _rnn_nodes(model: onnx.ModelProto) -> list:
    nodes = [n for n in model.graph.node if n.op_type == "RNN"]
    assert nodes, "expected an exported graph with at least one RNN node"
    return nodes


def _rename_uses(graph, old: str, new: str, skip=()) -> None:
    for node in graph.node:
        if node in skip:
            continue
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def perturb_weight(model: onnx.ModelProto, delta: float = 1e-3) -> onnx.ModelProto:
    """One recurrent weight (element [0, 0, 0] of the first RNN node's R) moved by delta."""
    model = copy.deepcopy(model)
    name = _rnn_nodes(model)[0].input[2]
    (init,) = [t for t in model.graph.initializer if t.name == name]
    weights = numpy_helper.to_array(init).copy()
    weights.flat[0] += np.float32(delta)
    init.CopyFrom(numpy_helper.from_array(weights, name))
    return model


def state_passthrough(model: onnx.ModelProto) -> onnx.ModelProto:
    """The state output is the input state passed through an Identity, not the carried one."""
    model = copy.deepcopy(model)
    graph = model.graph
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == STATE_OUT:
                node.output[i] = "carried_state"
    _rename_uses(graph, STATE_OUT, "carried_state")
    graph.node.append(helper.make_node("Identity", [STATE_IN], [STATE_OUT]))
    return model


def fixed_length(model: onnx.ModelProto, length: int) -> onnx.ModelProto:
    """Tokens go through a Reshape to (-1, length), as a graph traced at T=length would."""
    model = copy.deepcopy(model)
    graph = model.graph
    graph.initializer.append(
        numpy_helper.from_array(np.array([-1, length], dtype=np.int64), "fixed_tokens_shape")
    )
    reshape = helper.make_node("Reshape", [TOKENS, "fixed_tokens_shape"], ["fixed_tokens"])
    _rename_uses(graph, TOKENS, "fixed_tokens")
    graph.node.insert(0, reshape)
    return model


def ignore_lengths(model: onnx.ModelProto) -> onnx.ModelProto:
    """The RNN nodes lose their sequence_lens input: padding is run as if it were real."""
    model = copy.deepcopy(model)
    for node in _rnn_nodes(model):
        node.input[4] = ""
    # `lengths` stays a graph input, so the signature is unchanged; nothing uses it now.
    return model


FAKES = {
    "perturbed-weight": perturb_weight,
    "state-passthrough": state_passthrough,
    "ignored-lengths": ignore_lengths,
}


def write_fake(src: Path, dst: Path, make, *args) -> Path:
    """Load src, apply make(model, *args), check and save it to dst."""
    model = make(onnx.load(str(src)), *args)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(dst))
    return dst
