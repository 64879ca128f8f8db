"""Copies of exported models made by graph surgery: broken ones verify must fail, and
correct ones that round differently (another machine's kernels) verify must pass.

The metadata (checkpoint sha256 included) is kept as it is, so a fake is judged on its
numbers, not on the model/checkpoint match.

Broken:   perturbed-weight (layer 0's recurrent weight R0[0, 0] + delta), perturbed-bias
          (layer 0's bias of unit 0 + delta: a column of the folded table), state-passthrough
          (hn = h0), ignored-lengths (padding run as input), lengths-off-by-one
          (max(lengths - 1, 1)), swapped-rows (rows 0 and 1 of a batch swapped on output),
          fixed-length (T fixed at export, as a traced graph), perturbed-step-model (only
          the embedded step model's R0[0, 0] + delta).
Correct:  permuted-units (hidden units permuted inside the file: the same function, every
          sum in another order), ulp-scaled (every new state scaled by 1 + d, |d| up to
          4 ulp, per step: a runtime that rounds a few ulp worse).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from rnn_export.config import LENGTHS, LOG_PROBS, STATE_IN, STATE_OUT, TOKENS

STEP_KEY = "rnn_export.step"


def _initializer(model: onnx.ModelProto, name: str):
    found = [t for t in model.graph.initializer if t.name == name]
    assert found, f"expected an exported graph with the initializer {name!r}"
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


def _rename_output(graph, old: str, new: str) -> None:
    """The node of graph (not its subgraphs) that produces old now produces new."""
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new


def _subgraphs(graph):
    """graph and every graph nested in it."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _subgraphs(attr.g)


def _add(model, name: str, value) -> str:
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def perturb_weight(model: onnx.ModelProto, delta: float = 1e-4) -> onnx.ModelProto:
    """One recurrent weight (layer 0's R[0, 0], shared by every path) moved by delta."""
    model = copy.deepcopy(model)
    init = _initializer(model, "R0")
    weights = numpy_helper.to_array(init).copy()
    weights.flat[0] += np.float32(delta)
    init.CopyFrom(numpy_helper.from_array(weights, init.name))
    return model


def perturb_bias(model: onnx.ModelProto, delta: float = 1e-4) -> onnx.ModelProto:
    """Layer 0's bias of unit 0 moved by delta: column 0 of the folded table (V, H)."""
    model = copy.deepcopy(model)
    init = _initializer(model, "table")
    table = numpy_helper.to_array(init).copy()
    table[:, 0] += np.float32(delta)
    init.CopyFrom(numpy_helper.from_array(table, init.name))
    return model


def state_passthrough(model: onnx.ModelProto) -> onnx.ModelProto:
    """The state output is the input state passed through an Identity, not the carried one."""
    model = copy.deepcopy(model)
    graph = model.graph
    _rename_output(graph, STATE_OUT, "carried_state")
    _rename_uses(graph, STATE_OUT, "carried_state")
    graph.node.append(helper.make_node("Identity", [STATE_IN], [STATE_OUT]))
    return model


def fixed_length(model: onnx.ModelProto, length: int) -> onnx.ModelProto:
    """Tokens go through a Reshape to (-1, length), as a graph traced at T=length would."""
    model = copy.deepcopy(model)
    graph = model.graph
    _add(model, "fixed_tokens_shape", np.array([-1, length], dtype=np.int64))
    _rename_uses(graph, TOKENS, "fixed_tokens")
    graph.node.insert(
        0, helper.make_node("Reshape", [TOKENS, "fixed_tokens_shape"], ["fixed_tokens"])
    )
    return model


def _replace_lengths(model: onnx.ModelProto, nodes: list, name: str) -> onnx.ModelProto:
    """Every use of lengths reads `name`, computed by nodes inserted first."""
    model = copy.deepcopy(model)
    _rename_uses(model.graph, LENGTHS, name)
    for i, node in enumerate(nodes):
        model.graph.node.insert(i, node)
    return model


def ignore_lengths(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every use of lengths sees T for every row: padding is run as if it were real."""
    model = _replace_lengths(
        model,
        [
            helper.make_node("Shape", [TOKENS], ["fake_tokens_shape"]),
            helper.make_node("Gather", ["fake_tokens_shape", "fake_axis1"], ["fake_T"]),  # [T]
            helper.make_node("Shape", [LENGTHS], ["fake_B"]),  # [B]
            helper.make_node("Expand", ["fake_T", "fake_B"], ["full_lengths"]),  # (B,) all T
        ],
        "full_lengths",
    )
    # `lengths` stays a graph input, so the signature is unchanged; only its shape is used.
    _add(model, "fake_axis1", np.array([1], dtype=np.int64))
    return model


def lengths_off_by_one(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every row stops one token early: lengths -> max(lengths - 1, 1)."""
    model = _replace_lengths(
        model,
        [
            helper.make_node("Sub", [LENGTHS, "fake_one"], ["fake_shorter"]),
            helper.make_node("Max", ["fake_shorter", "fake_one"], ["short_lengths"]),
        ],
        "short_lengths",
    )
    _add(model, "fake_one", np.array(1, dtype=np.int64))
    return model


def swap_rows(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rows 0 and 1 of every batch of two or more rows swapped in log_probs and hn."""
    model = copy.deepcopy(model)
    graph = model.graph
    batch_axis = len(graph.output[1].type.tensor_type.shape.dim) - 2  # (B, H) or (L, B, H)
    for name, value in (("swap_zero", 0), ("swap_one", 1), ("swap_two", 2)):
        _add(model, name, np.array(value, dtype=np.int64))
    _add(model, "swap_axis0", np.array([0], dtype=np.int64))
    for out in (LOG_PROBS, STATE_OUT):
        _rename_output(graph, out, f"unswapped_{out}")
    graph.node.extend(
        [
            helper.make_node("Shape", [TOKENS], ["swap_shape"]),
            helper.make_node("Gather", ["swap_shape", "swap_zero"], ["swap_B"]),
            helper.make_node("Range", ["swap_zero", "swap_B", "swap_one"], ["swap_rows"]),
            helper.make_node("Less", ["swap_rows", "swap_two"], ["swap_first_two"]),
            helper.make_node("Less", ["swap_one", "swap_B"], ["swap_two_or_more"]),
            helper.make_node("And", ["swap_first_two", "swap_two_or_more"], ["swap_these"]),
            helper.make_node("Sub", ["swap_one", "swap_rows"], ["swap_other"]),
            helper.make_node("Where", ["swap_these", "swap_other", "swap_rows"], ["swap_perm"]),
            helper.make_node("Gather", [f"unswapped_{LOG_PROBS}", "swap_perm"], [LOG_PROBS]),
            helper.make_node(
                "Gather", [f"unswapped_{STATE_OUT}", "swap_perm"], [STATE_OUT], axis=batch_axis
            ),
        ]
    )
    return model


def _new_state_sites(graph) -> list[tuple]:
    """(graph, node, output index) of every value that is a layer's new state at a step:
    the activation after a Gemm with a recurrent weight R{l} (the Gemm itself without an
    activation), and both outputs of an RNN operator."""
    sites = []
    for g in _subgraphs(graph):
        consumers = {}
        for node in g.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        for node in g.node:
            if node.op_type == "RNN":
                sites += [(g, node, i) for i, out in enumerate(node.output) if out]
            elif node.op_type == "Gemm" and node.input[1].startswith("R"):
                after = [
                    n for n in consumers.get(node.output[0], []) if n.op_type in ("Tanh", "Relu")
                ]
                sites.append((g, after[0], 0) if after else (g, node, 0))
    return sites


def _scale_states(model: onnx.ModelProto, scale: np.ndarray) -> onnx.ModelProto:
    model = copy.deepcopy(model)
    _add(model, "ulp_scale", scale)
    for k, (g, node, i) in enumerate(_new_state_sites(model.graph)):
        exact = f"{node.output[i]}_exact{k}"
        scaled = node.output[i]
        node.output[i] = exact
        position = list(g.node).index(node) + 1
        g.node.insert(position, helper.make_node("Mul", [exact, "ulp_scale"], [scaled]))
    return model


def _map_step_model(model: onnx.ModelProto, change) -> onnx.ModelProto:
    """model with change(step model) embedded instead of its step model (sha256 kept valid)."""
    model = copy.deepcopy(model)
    (entry,) = [p for p in model.metadata_props if p.key == STEP_KEY]
    step = json.loads(entry.value)
    inner = change(onnx.load_from_string(base64.b64decode(step["onnx_base64"])))
    data = inner.SerializeToString()
    step["onnx_base64"] = base64.b64encode(data).decode("ascii")
    step["sha256"] = hashlib.sha256(data).hexdigest()
    entry.value = json.dumps(step)
    return model


def perturb_step_model(model: onnx.ModelProto, delta: float = 1e-4) -> onnx.ModelProto:
    """The embedded step model's R0[0, 0] moved by delta: the main graph is intact, only
    what the runtime streams through is wrong."""
    return _map_step_model(model, lambda step: perturb_weight(step, delta))


def ulp_scaled(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Every layer's new state, at every step and in every path (the RNN operator's
    outputs once per call), scaled by 1 + d with d = k * 2**-23, k in -4..4 per unit."""
    H = model.graph.output[1].type.tensor_type.shape.dim[-1].dim_value
    k = np.random.default_rng(seed).integers(-4, 5, size=H)
    scale = (1.0 + k * 2.0**-23).astype(np.float32)
    assert np.all(np.abs(scale.astype(np.float64) - 1.0) <= 4 * 2.0**-23)
    return _map_step_model(_scale_states(model, scale), lambda step: _scale_states(step, scale))


def permute_units(model: torch.nn.Module, seed: int = 0) -> tuple[torch.nn.Module, np.ndarray]:
    """A copy of a CellRNN or StackedRNN whose hidden units (and embedding features) are
    permuted: new unit i is old unit perm[i]. Returns (the copy, perm)."""
    rng = np.random.default_rng(seed)
    config = model.config
    H = config.hidden_size
    p = torch.from_numpy(rng.permutation(H))
    q = torch.from_numpy(rng.permutation(H))  # embedding features
    model = copy.deepcopy(model)
    with torch.no_grad():
        if config.arch == "cell":
            model.embed.weight.copy_(model.embed.weight[:, q])
            w = model.i2h.weight.clone()
            model.i2h.weight.copy_(torch.cat([w[p][:, :H][:, q], w[p][:, H:][:, p]], dim=1))
            model.i2h.bias.copy_(model.i2h.bias[p])
            model.h2o.weight.copy_(model.h2o.weight[:, p])
        else:
            rnn = model.rnn
            model.embedding.weight.copy_(model.embedding.weight[:, q])
            for layer in range(config.num_layers):
                w_ih = getattr(rnn, f"weight_ih_l{layer}")
                w_ih.copy_(w_ih[p][:, q if layer == 0 else p])
                w_hh = getattr(rnn, f"weight_hh_l{layer}")
                w_hh.copy_(w_hh[p][:, p])
                for kind in ("ih", "hh"):
                    b = getattr(rnn, f"bias_{kind}_l{layer}")
                    b.copy_(b[p])
            model.fc.weight.copy_(model.fc.weight[:, p])
    return model, p.numpy()


def _gather_states(graph, inputs, outputs, perm: np.ndarray, model) -> None:
    """State inputs gathered into the permuted order, state outputs back into the user's."""
    inverse = np.argsort(perm)
    _add(model, "unit_perm", perm.astype(np.int64))
    _add(model, "unit_unperm", inverse.astype(np.int64))
    for name in inputs:
        _rename_uses(graph, name, f"{name}_permuted")
        graph.node.insert(
            0, helper.make_node("Gather", [name, "unit_perm"], [f"{name}_permuted"], axis=-1)
        )
    for name in outputs:
        _rename_output(graph, name, f"{name}_permuted")
        _rename_uses(graph, name, f"{name}_permuted")
        graph.node.append(
            helper.make_node("Gather", [f"{name}_permuted", "unit_unperm"], [name], axis=-1)
        )


def export_permuted(run_dir: Path, out: Path, seed: int = 0, opset: int | None = None) -> Path:
    """The checkpoint's model exported with its hidden units permuted inside the file, its
    state inputs and outputs in the user's order: a correct file whose every sum runs in
    another order. Its metadata is the original checkpoint's."""
    from rnn_export.checkpoint import load_checkpoint
    from rnn_export.export import build_onnx

    ckpt = load_checkpoint(run_dir)
    permuted, perm = permute_units(ckpt.model, seed)
    kwargs = {} if opset is None else {"opset": opset}
    model = onnx.load_from_string(build_onnx(permuted, ckpt.vocab, ckpt.sha256, **kwargs).data)
    _gather_states(model.graph, [STATE_IN], [STATE_OUT], perm, model)

    def permute_step(step: onnx.ModelProto) -> onnx.ModelProto:
        names = [i.name for i in step.graph.input[1:]], [o.name for o in step.graph.output[1:]]
        _gather_states(step.graph, *names, perm, step)
        return step

    model = _map_step_model(model, permute_step)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))
    return out


BROKEN = {
    "perturbed-weight": perturb_weight,
    "perturbed-bias": perturb_bias,
    "state-passthrough": state_passthrough,
    "ignored-lengths": ignore_lengths,
    "lengths-off-by-one": lengths_off_by_one,
    "swapped-rows": swap_rows,
    "perturbed-step-model": perturb_step_model,
}


def write_fake(src: Path, dst: Path, make, *args) -> Path:
    """Load src, apply make(model, *args), check and save it to dst."""
    model = make(onnx.load(str(src)), *args)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(dst))
    return dst
