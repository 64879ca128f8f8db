"""Copies of exported models made by graph surgery: broken ones verify must fail, and
correct ones that round differently (another machine's kernels) verify must pass.

The metadata (checkpoint sha256 included) is kept as it is, so a fake is judged on its
numbers, not on the model/checkpoint match.

Broken:   perturbed-weight (layer 0's recurrent weight R0[0, 0] + delta; of the candidate
          gate for gru and lstm), perturbed-bias (layer 0's bias of unit 0 + delta: a
          column of the folded table, or of B0), state-passthrough (hn = h0),
          ignored-lengths (padding run as input), lengths-off-by-one (max(lengths - 1, 1)),
          swapped-rows (rows 0 and 1 of a batch swapped on output), fixed-length (T fixed
          at export, as a traced graph), perturbed-step-model (only the embedded step
          model's R0[0, 0] + delta).
Gated:    linear-before-reset-flipped (gru: the reset gate applied to h before the
          recurrent product, ONNX's linear_before_reset=0, in the main graph and the step
          model), swapped-gates (lstm: the forget and output gates swapped everywhere),
          cell-passthrough (lstm: cn = c0, in the main graph and the step model).
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

from rnn_export.config import LENGTHS, LOG_PROBS, STATE_IN, STATE_OUT, TOKENS, state_names

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


def _names(model: onnx.ModelProto) -> set[str]:
    return {t.name for t in model.graph.initializer}


def _candidate_row(rows: int, H: int) -> int:
    """The first row of the candidate gate in a gate stack of `rows` rows: ONNX's GRU order
    z, r, h and LSTM order i, o, f, c put it last; a plain RNN has one block."""
    return {3 * H: 2 * H, 4 * H: 3 * H}.get(rows, 0)


def _hidden(model: onnx.ModelProto) -> int:
    return model.graph.output[1].type.tensor_type.shape.dim[-1].dim_value


def _move(model: onnx.ModelProto, name: str, index, delta: float) -> onnx.ModelProto:
    model = copy.deepcopy(model)
    init = _initializer(model, name)
    values = numpy_helper.to_array(init).copy()
    values[index] += np.float32(delta)
    init.CopyFrom(numpy_helper.from_array(values, init.name))
    return model


def perturb_weight(model: onnx.ModelProto, delta: float = 1e-4) -> onnx.ModelProto:
    """One recurrent weight of layer 0 moved by delta in every path: R[0, 0], of the
    candidate gate; in each copy of it (a gated graph's cell keeps it apart as Rh0 for the
    GRU and, split, as Rc0 for the LSTM; its GRU/LSTM operator has its own op_R0)."""
    names = _names(model)
    found = [n for n in ("Rh0", "Rc0", "R0", "op_R0") if n in names]
    assert found, "expected an exported graph with a recurrent weight R0"
    for name in found:
        R = numpy_helper.to_array(_initializer(model, name))
        row = 0 if name in ("Rh0", "Rc0") else _candidate_row(R.shape[-2], R.shape[-1])
        model = _move(model, name, (*([0] * (R.ndim - 2)), row, 0), delta)
    return model


def perturb_bias(model: onnx.ModelProto, delta: float = 1e-4) -> onnx.ModelProto:
    """Layer 0's input bias of unit 0 (of the candidate gate) moved by delta in every
    path: a column of the folded table (V, GH), or of its candidate block table_c (V, H)
    where a gated graph splits it, and op_B0 = [Wb, Rb] of a gated graph's operator."""
    H = _hidden(model)
    if "table_c" in _names(model):
        model = _move(model, "table_c", (slice(None), 0), delta)
    else:
        table = numpy_helper.to_array(_initializer(model, "table"))
        model = _move(model, "table", (slice(None), _candidate_row(table.shape[1], H)), delta)
    if "op_B0" in _names(model):
        B = numpy_helper.to_array(_initializer(model, "op_B0"))  # (1, 2GH)
        model = _move(model, "op_B0", (0, _candidate_row(B.shape[1] // 2, H)), delta)
    return model


def _passthrough(model: onnx.ModelProto, pairs) -> onnx.ModelProto:
    """Each output of pairs (input, output) is its input passed through an Identity."""
    model = copy.deepcopy(model)
    graph = model.graph
    for state_in, state_out in pairs:
        _rename_output(graph, state_out, f"carried_{state_out}")
        _rename_uses(graph, state_out, f"carried_{state_out}")
        graph.node.append(helper.make_node("Identity", [state_in], [state_out]))
    return model


def state_passthrough(model: onnx.ModelProto) -> onnx.ModelProto:
    """The state output is the input state passed through an Identity, not the carried one."""
    return _passthrough(model, [(STATE_IN, STATE_OUT)])


def cell_passthrough(model: onnx.ModelProto) -> onnx.ModelProto:
    """The LSTM's cell state passed through unchanged, cn = c0: in the main graph and in
    the step model (cn_l = c_l); h is still computed from the carried cell state."""

    def step_pairs(step):
        return [
            (i.name, o.name)
            for i, o in zip(step.graph.input[1:], step.graph.output[1:], strict=True)
            if i.name.startswith("c_")
        ]

    model = _passthrough(model, [("c0", "cn")])
    return _map_step_model(model, lambda step: _passthrough(step, step_pairs(step)))


def flip_linear_before_reset(model: onnx.ModelProto) -> onnx.ModelProto:
    """The GRU's reset gate applied to h before the recurrent product (ONNX's
    linear_before_reset=0): n = tanh(x W_h + Wb_h + (r * h) R_h + Rb_h). The main graph's
    GRU nodes get the attribute flipped, the step model's Gemm/Mul nodes are rewired."""
    model = copy.deepcopy(model)
    flipped = 0
    for g in _subgraphs(model.graph):
        for node in g.node:
            if node.op_type == "GRU":
                (attr,) = [a for a in node.attribute if a.name == "linear_before_reset"]
                attr.i = 1 - attr.i
                flipped += 1
    assert flipped, "expected a graph with GRU operators"
    _reset_before_product(model)  # the Scan's cell at B > 1
    return _map_step_model(model, _reset_before_product)


def _reset_before_product(model: onnx.ModelProto) -> onnx.ModelProto:
    """In every cell written as nodes: Gemm(h, Rh{l}, Rbh{l}) -> Gemm(r * h, ...), and
    r * Gemm -> Gemm."""
    rewired = 0
    for graph in _subgraphs(model.graph):
        nodes = list(graph.node)
        for gemm in [n for n in nodes if n.op_type == "Gemm" and n.input[1].startswith("Rh")]:
            (mul,) = [n for n in graph.node if n.op_type == "Mul" and gemm.output[0] in n.input]
            r = [x for x in mul.input if x != gemm.output[0]][0]
            gated = f"{gemm.output[0]}_reset_h"
            position = list(graph.node).index(gemm)
            graph.node.insert(position, helper.make_node("Mul", [r, gemm.input[0]], [gated]))
            gemm.input[0] = gated
            mul.CopyFrom(helper.make_node("Identity", [gemm.output[0]], list(mul.output)))
            rewired += 1
    assert rewired, "expected a GRU cell written as Gemm and Mul nodes"
    return model


def _swap_gate_blocks(model: onnx.ModelProto, a: int, b: int) -> onnx.ModelProto:
    """Gate blocks a and b of every weight, bias and table swapped (ONNX's LSTM order), in
    the gate blocks (i, o, f: 3H rows) of the split ones too."""
    import re

    model = copy.deepcopy(model)
    H = _hidden(model)
    swapped = 0
    for init in model.graph.initializer:
        split = re.fullmatch(r"[WRb]g\d+|table_g", init.name)
        if not (split or re.fullmatch(r"(op_)?[WRBb]\d+|table", init.name)):
            continue
        values = numpy_helper.to_array(init).copy()
        sizes = (3 * H,) if split else (4 * H, 8 * H)
        axes = [i for i, n in enumerate(values.shape) if n in sizes]
        if not axes:
            continue
        x = np.moveaxis(values, axes[-1], 0)
        for offset in range(0, x.shape[0], 4 * H):  # B = [Wb, Rb]: both halves
            ia = slice(offset + a * H, offset + (a + 1) * H)
            ib = slice(offset + b * H, offset + (b + 1) * H)
            x[ia], x[ib] = x[ib].copy(), x[ia].copy()
        init.CopyFrom(numpy_helper.from_array(np.moveaxis(x, 0, axes[-1]), init.name))
        swapped += 1
    assert swapped, "expected LSTM gate weights (4H rows)"
    return model


def swap_gates(model: onnx.ModelProto) -> onnx.ModelProto:
    """The LSTM's output and forget gates (ONNX order i, o, f, c: blocks 1 and 2) swapped in
    every weight, bias and table of the main graph and the step model."""
    model = _swap_gate_blocks(model, 1, 2)
    return _map_step_model(model, lambda step: _swap_gate_blocks(step, 1, 2))


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


def _gated_cell_outputs(g, consumers) -> list:
    """The nodes of a gated cell written as nodes that make its new states: the GRU's
    h' = Add(n, Mul(z, Sub(h, n))); the LSTM's c' = Add(Mul(f, c), Mul(i, g)) and
    h' = Mul(o, Tanh(c'))."""
    producers = {out: node for node in g.node for out in node.output}

    def made_by(name, op):
        return name in producers and producers[name].op_type == op

    found = []
    for node in g.node:
        if node.op_type != "Add":
            continue
        muls = [producers[i] for i in node.input if made_by(i, "Mul")]
        if any(made_by(i, "Sub") for m in muls for i in m.input):
            found.append(node)  # GRU h'
        elif len(muls) == 2:
            found.append(node)  # LSTM c'
            for tanh in consumers.get(node.output[0], []):
                if tanh.op_type == "Tanh":
                    found += [n for n in consumers.get(tanh.output[0], []) if n.op_type == "Mul"]
    return found


def _new_state_sites(graph, gated: bool) -> list[tuple]:
    """(graph, node, output index) of every value that is a layer's new state at a step:
    every output of an RNN, GRU or LSTM operator; for the plain arches the activation
    after a Gemm with a recurrent weight R{l} (the Gemm itself without an activation);
    for gru and lstm the new states of the cells written as nodes."""
    sites = []
    for g in _subgraphs(graph):
        consumers = {}
        for node in g.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        if gated:
            sites += [(g, node, 0) for node in _gated_cell_outputs(g, consumers)]
        for node in g.node:
            if node.op_type in ("RNN", "GRU", "LSTM"):
                sites += [(g, node, i) for i, out in enumerate(node.output) if out]
            elif gated:
                continue
            elif node.op_type == "Gemm" and node.input[1].startswith("R"):
                after = [
                    n for n in consumers.get(node.output[0], []) if n.op_type in ("Tanh", "Relu")
                ]
                sites.append((g, after[0], 0) if after else (g, node, 0))
    return sites


def _gated(model: onnx.ModelProto) -> bool:
    """Whether the file is of arch gru or lstm (from its metadata)."""
    (entry,) = [p for p in model.metadata_props if p.key == "rnn_export.model"]
    return json.loads(entry.value)["arch"] in ("gru", "lstm")


def _scale_states(model: onnx.ModelProto, scale: np.ndarray, gated: bool) -> onnx.ModelProto:
    model = copy.deepcopy(model)
    _add(model, "ulp_scale", scale)
    for k, (g, node, i) in enumerate(_new_state_sites(model.graph, gated)):
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
    gated = _gated(model)
    return _map_step_model(
        _scale_states(model, scale, gated), lambda step: _scale_states(step, scale, gated)
    )


def permute_units(model: torch.nn.Module, seed: int = 0) -> tuple[torch.nn.Module, np.ndarray]:
    """A copy of a model whose hidden units (and embedding features) are permuted: new
    unit i is old unit perm[i], within every gate block. Returns (the copy, perm)."""
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
            gates = rnn.weight_hh_l0.shape[0] // H
            rows = torch.cat([p + j * H for j in range(gates)])  # p within each gate block
            model.embedding.weight.copy_(model.embedding.weight[:, q])
            for layer in range(config.num_layers):
                w_ih = getattr(rnn, f"weight_ih_l{layer}")
                w_ih.copy_(w_ih[rows][:, q if layer == 0 else p])
                w_hh = getattr(rnn, f"weight_hh_l{layer}")
                w_hh.copy_(w_hh[rows][:, p])
                for kind in ("ih", "hh"):
                    b = getattr(rnn, f"bias_{kind}_l{layer}")
                    b.copy_(b[rows])
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
    names = state_names(ckpt.config.arch)
    _gather_states(model.graph, [i for i, _ in names], [o for _, o in names], perm, model)

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
GATED_BROKEN = {
    "gru": {"linear-before-reset-flipped": flip_linear_before_reset},
    "lstm": {"swapped-gates": swap_gates, "cell-passthrough": cell_passthrough},
}


def broken_for(arch: str) -> dict:
    """The broken fakes that apply to arch: every generic one, and its own."""
    return {**BROKEN, **GATED_BROKEN.get(arch, {})}


def write_fake(src: Path, dst: Path, make, *args) -> Path:
    """Load src, apply make(model, *args), check and save it to dst."""
    model = make(onnx.load(str(src)), *args)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(dst))
    return dst


# --- the input stage's faults ---------------------------------------------------------------


def _edit_everywhere(model: onnx.ModelProto, edit) -> onnx.ModelProto:
    """edit(values, name) -> new values (or None: unchanged) applied to every initializer
    of the main graph and of the embedded step model."""

    def apply(proto):
        proto = copy.deepcopy(proto)
        for init in proto.graph.initializer:
            new = edit(numpy_helper.to_array(init).copy(), init.name)
            if new is not None:
                init.CopyFrom(numpy_helper.from_array(np.asarray(new, np.float32), init.name))
        return proto

    return _map_step_model(apply(model), apply)


def skip_normalization(model: onnx.ModelProto) -> onnx.ModelProto:
    """A features file that feeds raw frames to layer 0: mean 0 and scale 1 in every
    graph (the training split's normalization forgotten)."""
    zeros = {"in_mean": np.zeros_like, "in_scale": np.ones_like}
    return _edit_everywhere(model, lambda v, name: zeros[name](v) if name in zeros else None)


# Layer 0's input weights of a features file, (rows, F) or the operator's (1, rows, F).
_FRAME_WEIGHTS = ("W0", "Wg0", "Wc0", "op_W0")


def swap_features(model: onnx.ModelProto) -> onnx.ModelProto:
    """A features file that reads a frame's first two values in the other order (their
    weights, mean and scale swapped in every graph)."""

    def edit(values, name):
        if name in _FRAME_WEIGHTS:
            values[..., [0, 1]] = values[..., [1, 0]]
            return values
        if name in ("in_mean", "in_scale"):
            values[[0, 1]] = values[[1, 0]]
            return values
        return None

    return _edit_everywhere(model, edit)


def shift_onehot_table(model: onnx.ModelProto) -> onnx.ModelProto:
    """A one-hot file whose table is one row off (token v reads row v + 1), in every graph:
    the folded tables' rows and the gated operator's input weight's columns."""

    def edit(values, name):
        if name in ("table", "table_g", "table_c"):
            return np.roll(values, 1, axis=0)
        if name == "op_W0":
            return np.roll(values, 1, axis=-1)
        return None

    return _edit_everywhere(model, edit)


INPUT_BROKEN = {
    "features": {
        "normalization-not-applied": skip_normalization,
        "features-swapped": swap_features,
    },
    "onehot": {"onehot-table-off-by-one-row": shift_onehot_table},
}
