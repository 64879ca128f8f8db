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

from rnn_export.config import LENGTHS, STATE_IN, STATE_OUT, TOKENS


def _recurrent_weight(model: onnx.ModelProto):
    """Layer 0's recurrent weight: the initializer the exporter names "R0"."""
    found = [t for t in model.graph.initializer if t.name == "R0"]
    assert found, "expected an exported graph with the recurrent weight initializer 'R0'"
    return found[0]


def _rename_uses(graph, old: str, new: str) -> None:
    """Rename every use of old, in subgraphs too (If branches, Scan bodies read outer names)."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_uses(attr.g, old, new)


def perturb_weight(model: onnx.ModelProto, delta: float = 1e-3) -> onnx.ModelProto:
    """One recurrent weight (the first element of layer 0's R) moved by delta."""
    model = copy.deepcopy(model)
    init = _recurrent_weight(model)
    weights = numpy_helper.to_array(init).copy()
    weights.flat[0] += np.float32(delta)
    init.CopyFrom(numpy_helper.from_array(weights, init.name))
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
    """Every use of lengths sees T for every row: padding is run as if it were real."""
    model = copy.deepcopy(model)
    graph = model.graph
    _rename_uses(graph, LENGTHS, "full_lengths")
    graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "fake_axis1"))
    full = [
        helper.make_node("Shape", [TOKENS], ["fake_tokens_shape"]),
        helper.make_node("Gather", ["fake_tokens_shape", "fake_axis1"], ["fake_T"]),  # [T]
        helper.make_node("Shape", [LENGTHS], ["fake_B"]),  # [B]
        helper.make_node("Expand", ["fake_T", "fake_B"], ["full_lengths"]),  # (B,) all T
    ]
    # `lengths` stays a graph input, so the signature is unchanged; only its shape is used.
    for i, node in enumerate(full):
        graph.node.insert(i, node)
    return model


def perturb_step_model(model: onnx.ModelProto, delta: float = 1e-3) -> onnx.ModelProto:
    """The embedded step model's R0 moved by delta (its sha256 kept consistent): the main
    graph is intact, only what the runtime streams through is wrong."""
    import base64
    import hashlib
    import json

    model = copy.deepcopy(model)
    (entry,) = [p for p in model.metadata_props if p.key == "rnn_export.step"]
    step = json.loads(entry.value)
    inner = perturb_weight(onnx.load_from_string(base64.b64decode(step["onnx_base64"])), delta)
    data = inner.SerializeToString()
    step["onnx_base64"] = base64.b64encode(data).decode("ascii")
    step["sha256"] = hashlib.sha256(data).hexdigest()
    entry.value = json.dumps(step)
    return model


FAKES = {
    "perturbed-step-model": perturb_step_model,
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
