"""The ONNX graphs of the gated arches ("gru", "lstm"), written from their weights.

The weights come from rnn_export.graph.onnx_weights in the ONNX operators' layout (GRU
gates z, r, h; LSTM gates i, o, f, c; B = [Wb, Rb]). PyTorch's GRU multiplies the reset
gate into the recurrent product with its bias, n = tanh(x W_h^T + Wb_h + r * (h R_h^T +
Rb_h)): ONNX's GRU with linear_before_reset=1, which every GRU node here carries.

The main graph (B, T symbolic), an If on B:
    B == 1: per layer one ONNX GRU or LSTM operator over the whole sequence, lengths as
        its sequence_lens, layer l's per-step output feeding layer l + 1: one kernel
        runs every step (5-7x PyTorch at B = 1).
    B > 1: rows sorted by length, a Scan whose step t runs only the rows still going
        (rnn_export.graph.sorted_scan), the step written as in the step model below:
        onnxruntime's gated kernels are slower than PyTorch here (0.6-1.2x).
    tokens (B, T) int64, h0 (L, B, H) [, c0 (L, B, H)], lengths (B) int64
    -> log_probs (B, C), hn (L, B, H) [, cn (L, B, H)], each row's after its last token

The step model (token (B,), one (B, H) state per layer and state kind in; log_probs and
the new states out) writes one step as Gemm and elementwise nodes instead: at batch 1
every onnxruntime node costs about as much as its math, and the operators' setup costs
more. Layer 0's input term is folded at export into a table (V, GH) = embedding @ W_0^T
+ Wb_0 + the part of Rb_0 that is added outside a gate product (all of it for the LSTM,
z and r for the GRU), computed by PyTorch in float32: layer 0 needs only a Gather.
    GRU layer:  zr = Sigmoid(h Rzr^T + x_zr); z, r = Split(zr)
                n = Tanh(x_h + r * (h Rh^T + Rb_h)); h' = n + z * (h - n)  (PyTorch's form)
    LSTM layer: i, o, f = Split(Sigmoid(gates[:3H])), g = Tanh(gates[3H:]) where
                gates = h R^T + x; c' = f * c + i * g; h' = o * Tanh(c')
The graphs onnxruntime runs (the embedded step model, the default graph's Scan) hold
each input term and the LSTM's R in two blocks, the gates' and the candidate's
(step_weights' split form): x_zr and x_h, gates[:3H] and gates[3H:] are each their own
Gather or Gemm, not cut by a Split; the portable graphs keep one block and Slices.
"""

from __future__ import annotations

import numpy as np

from rnn_export.config import LENGTHS, LOG_PROBS, step_state_names
from rnn_export.graph import (
    GraphBuilder,
    fold_table,
    input_info,
    input_term,
    main_signature,
    model_of,
    sorted_scan,
    step_input_name,
)

GATED_ARCHS = ("gru", "lstm")
GATES = {"gru": 3, "lstm": 4}
OPERATORS = {"gru": "GRU", "lstm": "LSTM"}


def main_graph(config, weights: dict, opset: int):
    """One graph for every (B, T): an If picks the faster of two paths.

    B == 1 -> _operator_branch: one GRU or LSTM operator per layer (one kernel, all steps).
    B > 1  -> _scan_branch: graph.sorted_scan over rows sorted by length, the step in
              Gemm and elementwise nodes (onnxruntime's gated kernels are slower than
              PyTorch at B > 1: 0.6-1.2x at B = 32 and 256).

    Returns:
        onnx.ModelProto (no metadata), inputs tokens, each state of config.state_names and
        lengths; outputs log_probs and each new state.
    """
    from onnx import helper

    g = GraphBuilder(config, opset, "")
    step_weights(g, config.arch, weights, split=True)  # the Scan's step is the step model's
    if weights["embedding"] is not None:
        g.const("embedding", weights["embedding"], np.float32)
    for layer, (W, R, B) in enumerate(weights["layers"]):
        for name, value in (("W", W), ("R", R), ("B", B)):
            g.const(f"op_{name}{layer}", value, np.float32)
    one_row = _operator_branch(GraphBuilder(config, opset, "r_", g.inits))
    many_rows = _scan_branch(GraphBuilder(config, opset, "q_", g.inits))
    rows = g("Gather", [g("Shape", [g.input]), g.const("axis0", [0])])  # [B]
    is_one_row = g("Equal", [rows, g.const("one1", [1])])
    names = config.state_names
    outputs = [LOG_PROBS, *(o for _, o in names)]
    g.nodes.append(
        helper.make_node("If", [is_one_row], outputs, then_branch=one_row, else_branch=many_rows)
    )
    inputs, outputs = main_signature(config)
    graph = helper.make_graph(
        g.nodes,
        f"rnn_export_{config.arch}",
        inputs=inputs,
        outputs=outputs,
        initializer=list(g.inits.values()),
    )
    return model_of(graph, opset)


def _branch(g: GraphBuilder, name: str, outputs: list[str]):
    """g as an If branch with outputs (log_probs (B, C), each new (L, B, H) state)."""
    from onnx import TensorProto, helper

    f32, shape = TensorProto.FLOAT, list(g.config.state_shape("B"))
    log_probs, *states = outputs
    return helper.make_graph(
        g.nodes,
        name,
        [],
        [helper.make_tensor_value_info(log_probs, f32, ["B", g.config.num_classes])]
        + [helper.make_tensor_value_info(s, f32, shape) for s in states],
    )


def _operator_branch(g: GraphBuilder):
    """B == 1: per layer one GRU or LSTM operator over the whole sequence, lengths as its
    sequence_lens (Y_h, Y_c: each row's state after its own last real token)."""
    from onnx import TensorProto

    config, L = g.config, g.L
    axis0 = g.const("axis0", [0])
    names = config.state_names
    x = operator_input(g)  # (T, B, E)
    lengths = g("Cast", [LENGTHS], to=TensorProto.INT32)
    starts = [g.split_layers(state_in) for state_in, _ in names]  # (1, B, H) each
    attrs = {"hidden_size": g.H}
    if config.arch == "gru":
        attrs["linear_before_reset"] = 1
    finals: list[list[str]] = [[] for _ in names]
    for layer in range(L):
        inputs = [x, f"op_W{layer}", f"op_R{layer}", f"op_B{layer}", lengths]
        inputs += [start[layer] for start in starts]
        y, *new = g(OPERATORS[config.arch], inputs, 1 + len(names), **attrs)
        if layer < L - 1:
            # (T, B, H): this layer's per-step output is the next one's input.
            x = g("Squeeze", [y, g.const("axis1", [1])])
        else:
            g.nodes[-1].output[0] = ""  # the top layer's per-step outputs are not needed
        for kind, state in zip(finals, new, strict=True):
            kind.append(state)  # (1, B, H)
    top = g("Squeeze", [finals[0][-1], axis0])  # (B, H)
    logits = g("Gemm", [top, "out_weight", "out_bias"], transB=1)  # (B, C)
    states = [kind[0] if L == 1 else g("Concat", kind, axis=0) for kind in finals]
    return _branch(g, "one_row", [g("LogSoftmax", [logits], axis=-1), *states])


def operator_input(g: GraphBuilder) -> str:
    """Layer 0's input sequence for a gated operator (its W_0 applied inside): the
    embedded tokens, one-hot vectors of width V (the product then picks a column of W_0
    exactly), or the normalized frames; (T, B, width)."""
    x = g.time_major()  # (T, B) ids or (T, B, F) frames
    if g.config.input_kind == "tokens":
        return g("Gather", ["embedding", x])
    if g.config.input_kind == "onehot":
        depth = g.const("vocab_size", [g.config.vocab_size])
        return g("OneHot", [x, depth, g.const("off_on", [0.0, 1.0], np.float32)], axis=-1)
    return g.normalize(x)


def _scan_branch(g: GraphBuilder):
    """B > 1: graph.sorted_scan with the step model's cell (Gemm and elementwise nodes)."""
    cell = CELLS[g.config.arch]
    finals = sorted_scan(g, [i for i, _ in g.config.state_names], cell, split=True)
    log_probs, hn = g.head(finals[0])
    return _branch(g, "many_rows", [log_probs, hn, *(g.stack_layers(f) for f in finals[1:])])


def step_graph(config, weights: dict, opset: int, portable: bool = False):
    """The step model: one step of every layer in Gemm and elementwise nodes, no If.

    portable: Slices instead of Splits and whole input terms (for a step file of its own,
    which other runtimes run); the embedded step model, which only onnxruntime runs, has
    step_weights' split form (one Split left per step, of the sigmoid gates).

    Returns:
        onnx.ModelProto with inputs token (B,) int64 and the per-layer (B, H) states of
        step_state_names (h_l, and c_l for the LSTM), outputs log_probs (B, C) and the
        new states (hn_l, cn_l); only the weights it uses.
    """
    from onnx import TensorProto, helper

    g = GraphBuilder(config, opset, "")
    L, H, C = g.L, g.H, config.num_classes
    split = not portable  # onnxruntime's step model: each gate block its own Gather/Gemm
    step_weights(g, config.arch, weights, split=split)
    names = step_state_names(config.arch, L)
    kinds = len(config.state_names)
    states_in = [[names[k * L + layer][0] for k in range(kinds)] for layer in range(L)]
    x = step_in = step_input_name(config)
    news = []
    for layer, state in enumerate(states_in):
        x = input_term(g, layer, x, split)  # (B, GH), or its two blocks
        cell = CELLS[config.arch]
        new = cell(g, layer, x, *state, portable=portable)
        news.append(new)
        x = new[0]  # (B, H): h of this layer, the next one's input
    logits = g("Gemm", [x, "out_weight", "out_bias"], transB=1)
    g("LogSoftmax", [logits], axis=-1)
    # Name the graph outputs: rename the producing nodes' outputs.
    renames = {g.nodes[-1].output[0]: LOG_PROBS}
    for layer, new in enumerate(news):
        renames.update({v: names[k * L + layer][1] for k, v in enumerate(new)})
    for node in g.nodes:
        for slots in (node.input, node.output):
            for i, name in enumerate(slots):
                slots[i] = renames.get(name, name)
    used = {name for node in g.nodes for name in node.input}
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        g.nodes,
        f"rnn_export_{config.arch}_step",
        inputs=[input_info(config, step_in, ["B"])]
        + [helper.make_tensor_value_info(i, f32, ["B", H]) for i, _ in names],
        outputs=[helper.make_tensor_value_info(LOG_PROBS, f32, ["B", C])]
        + [helper.make_tensor_value_info(o, f32, ["B", H]) for _, o in names],
        initializer=[v for k, v in g.inits.items() if k in used],
    )
    return model_of(graph, opset)


def _outside_bias(arch: str, Rb: np.ndarray, H: int) -> np.ndarray:
    """The part of Rb (GH,) added outside a gate product: all of it for the LSTM, the z
    and r blocks for the GRU (its h block is multiplied by r, so it stays with R_h)."""
    if arch == "lstm":
        return Rb
    return np.concatenate([Rb[: 2 * H], np.zeros(H, dtype=Rb.dtype)])


def step_weights(g: GraphBuilder, arch: str, weights: dict, split: bool = False) -> None:
    """The step model's initializers:
    table (V, GH)   embedding @ W_0^T + Wb_0 + outside part of Rb_0 (a model that reads
                    tokens; a "features" model has W0, b0 as the layers above and the
                    normalization in_mean, in_scale instead)
    W{l} (GH, H), b{l} = Wb_l + outside part of Rb_l (GH,) for l > 0
    LSTM: R{l} (4H, H). GRU: Rzr{l} (2H, H), Rh{l} (H, H), Rbh{l} (H,) (Rb's h block)
    out_weight (C, H), out_bias (C,)

    split: each input term and LSTM recurrent weight cut into its gate block (the first
    (G-1)H rows: GRU z, r; LSTM i, o, f) and its candidate block (the last H: GRU h, LSTM
    c), the same numbers: table_g (V, (G-1)H) and table_c (V, H); Wg{l}, bg{l}, Wc{l},
    bc{l}; LSTM Rg{l} (3H, H), Rc{l} (H, H). Each block is then its own Gather or Gemm
    (see graph.input_term), so no Split copies it apart and the LSTM's activations fuse into
    their Gemms (onnxruntime's graphs; the portable ones keep the whole blocks).
    """
    W0, R0, B0 = weights["layers"][0]
    H = R0.shape[2]  # W0's columns are the input width, E or F
    GH = W0.shape[1]
    cut = GH - H  # the gate block's columns

    def const(whole: str, blocks: tuple[str, str], value: np.ndarray, axis: int = 0) -> None:
        """value as one initializer `whole`, or split: its gate and candidate blocks."""
        if not split:
            g.const(whole, value, np.float32)
            return
        for name, block in zip(blocks, np.split(value, [cut], axis=axis), strict=True):
            g.const(name, block, np.float32)

    tokens = g.config.reads_tokens
    if tokens:
        outside = _outside_bias(arch, B0[0, GH:], H)
        table = fold_table(weights["embedding"], W0[0], B0[0, :GH], outside)
        const("table", ("table_g", "table_c"), table, axis=1)
    else:
        g.add_normalization(weights)
    for layer, (W, R, B) in enumerate(weights["layers"]):
        Wb, Rb = B[0, :GH], B[0, GH:]
        if layer or not tokens:
            const(f"W{layer}", (f"Wg{layer}", f"Wc{layer}"), W[0])
            const(f"b{layer}", (f"bg{layer}", f"bc{layer}"), Wb + _outside_bias(arch, Rb, H))
        if arch == "lstm":
            const(f"R{layer}", (f"Rg{layer}", f"Rc{layer}"), R[0])
        else:
            g.const(f"Rzr{layer}", R[0, : 2 * H], np.float32)
            g.const(f"Rh{layer}", R[0, 2 * H :], np.float32)
            g.const(f"Rbh{layer}", Rb[2 * H :], np.float32)
    g.const("out_weight", weights["out_weight"], np.float32)
    g.const("out_bias", weights["out_bias"], np.float32)


def split_columns(g: GraphBuilder, x: str, sizes: list[int], portable: bool = False):
    """x (B, sum(sizes)) cut into column blocks: one Split, or one Slice per block in the
    portable graph (onnx2tf turns Split into a custom op TFLite cannot run)."""
    if not portable:
        name = "split_" + "_".join({g.H: "H", 2 * g.H: "2H", 3 * g.H: "3H"}[n] for n in sizes)
        return g("Split", [x, g.const(name, sizes)], len(sizes), axis=1)
    blocks, start = [], 0
    for size in sizes:
        ends = (g.const(f"col{start}", [start]), g.const(f"col{start + size}", [start + size]))
        blocks.append(g("Slice", [x, *ends, g.const("axis1", [1])]))
        start += size
    return blocks


def gru_step(g: GraphBuilder, layer: int, x: str, h: str, portable: bool = False) -> list[str]:
    """One GRU step (linear_before_reset=1) from x (B, 3H) = its input term, or the pair
    (x_zr, x_h) of input_term's split form; returns [h']."""
    H = g.H
    x_zr, x_h = x if isinstance(x, tuple) else split_columns(g, x, [2 * H, H], portable)
    zr = g("Sigmoid", [g("Gemm", [h, f"Rzr{layer}", x_zr], transB=1)])  # (B, 2H)
    z, r = split_columns(g, zr, [H, H], portable)  # (B, H) each
    h_h = g("Gemm", [h, f"Rh{layer}", f"Rbh{layer}"], transB=1)  # (B, H): h Rh^T + Rb_h
    n = g("Tanh", [g("Add", [x_h, g("Mul", [r, h_h])])])  # (B, H)
    return [g("Add", [n, g("Mul", [z, g("Sub", [h, n])])])]  # (B, H)


def lstm_step(
    g: GraphBuilder, layer: int, x: str, h: str, c: str, portable: bool = False
) -> list[str]:
    """One LSTM step from x (B, 4H) = its input term, or the pair (x_iof, x_c) of
    input_term's split form (then each block is its own Gemm, its activation fused into
    it by onnxruntime); returns [h', c']."""
    H = g.H
    if isinstance(x, tuple):
        sig = g("Sigmoid", [g("Gemm", [h, f"Rg{layer}", x[0]], transB=1)])  # (B, 3H)
        cand = g("Tanh", [g("Gemm", [h, f"Rc{layer}", x[1]], transB=1)])  # (B, H)
    else:
        gates = g("Gemm", [h, f"R{layer}", x], transB=1)  # (B, 4H): i, o, f, c
        sig, cand = split_columns(g, gates, [3 * H, H], portable)
        sig, cand = g("Sigmoid", [sig]), g("Tanh", [cand])
    i, o, f = split_columns(g, sig, [H, H, H], portable)
    c_new = g("Add", [g("Mul", [f, c]), g("Mul", [i, cand])])  # (B, H)
    return [g("Mul", [o, g("Tanh", [c_new])]), c_new]  # (B, H) each


CELLS = {"gru": gru_step, "lstm": lstm_step}
