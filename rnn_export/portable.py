"""The portable main graph (`convert --portable`): one Scan that every tested runtime computes.

The default main graph (rnn_export.graph) is the fastest for onnxruntime, and it leans on
constructs that other runtimes get wrong or cannot run (docs/runtimes.md): the RNN operator's
sequence_lens (ignored by OpenVINO with dynamic shapes and by the ONNX reference), an
activation list of Relu or Affine (tract reads them as Tanh), If, ScatterElements and
Split (custom ops after onnx2tf). This graph has the same inputs, outputs and metadata
and none of those:

    x = Gather(table, Transpose(tokens))                      (T, B, H)
    running = Unsqueeze(Range(T) < lengths)                   (T, B, 1) bool
    Scan over (x_t, running_t), per layer l:
        y_l = f(h_l R_l^T + (l ? y_{l-1} W_l^T + b_l : x_t))  (B, H)
        h_l = Where(running_t, y_l, h_l)                      a row past its length keeps
                                                              its state, exactly
    log_probs = LogSoftmax(Gemm(h_top, out_weight^T, out_bias))  (B, C)

The gated arches ("gru", "lstm") use the same Scan with the step model's cell
(rnn_export.gated, its Splits written as Slices) and a Where per state (h, and c for the
LSTM); their table is the step model's (V, GH) input term of layer 0.

Per-layer states come out of an (L, B, H) state by Gather (not Split) and go back by
Unsqueeze + Concat. Every step computes every row (no sorting): slower than the default
graph on onnxruntime for mixed lengths, and the same numbers, since a row's arithmetic is
the same Gemm + f in both.
"""

from __future__ import annotations

from rnn_export.config import LENGTHS, LOG_PROBS
from rnn_export.gated import CELLS, GATED_ARCHS, GATES, step_weights
from rnn_export.graph import GraphBuilder, input_info, input_term, main_signature, model_of


def portable_main_graph(config, weights: dict, opset: int):
    """The portable main graph of a model (see the module docstring).

    Args:
        config: the model's ModelConfig.
        weights: graph.onnx_weights(model).
        opset: the ONNX opset.

    Returns:
        onnx.ModelProto (no metadata) with the default main graph's inputs and outputs.
    """
    from onnx import TensorProto, helper

    gated = config.arch in GATED_ARCHS
    if gated:
        g = GraphBuilder(config, opset, "")
        step_weights(g, config.arch, weights)  # the step model's: table (V, GH), W, b, R
    else:
        g = GraphBuilder(config, opset, "", weights=weights)
    L, H = g.L, g.H
    names = config.state_names  # ((h0, hn),) or ((h0, hn), (c0, cn))
    width = GATES[config.arch] * H if gated else H  # columns of a layer's input term
    axis0, axis1, axis2 = (g.const(f"axis{i}", [i]) for i in range(3))
    steps = g("Gather", [g("Shape", [g.input]), g.const("one", 1)])  # scalar T
    t = g("Unsqueeze", [g("Range", [g.const("zero", 0), steps, g.const("one", 1)]), axis1])
    running = g("Less", [t, g("Unsqueeze", [LENGTHS, axis0])])  # (T, B)
    running = g("Unsqueeze", [running, axis2])  # (T, B, 1)
    tokens = config.reads_tokens
    # Token ids: every step's input term at once (T, B, width); frames: the scanned
    # frames (T, B, F), their input term computed in the step (a Gemm takes 2-D inputs).
    x = g("Gather", ["table", g.time_major()]) if tokens else g.time_major()
    starts = []  # layer-major: layer 0's h (and c), layer 1's, ...
    for layer in range(L):
        for state_in, _ in names:
            if config.arch == "cell":
                starts.append(state_in)
            else:
                starts.append(g("Gather", [state_in, g.const(f"layer{layer}", layer)], axis=0))

    b = GraphBuilder(config, opset, "b_", g.inits)
    hs = [f"b_h{k}" for k in range(len(starts))]
    x_t, run_t = "b_x", "b_running"
    y, outs = x_t, []
    for layer in range(L):
        state = hs[layer * len(names) : (layer + 1) * len(names)]
        if layer or not tokens:
            y = input_term(b, layer, y)  # (B, width)
        if gated:
            new = CELLS[config.arch](b, layer, y, *state, portable=True)
        else:
            new = [b.activation(b("Gemm", [state[0], f"R{layer}", y], transB=1))]  # (B, H)
        outs += [b("Where", [run_t, v, old]) for v, old in zip(new, state, strict=True)]
        y = new[0]  # this layer's h: the next layer's input (rows past their end unused)
    f32 = TensorProto.FLOAT
    # Body shapes left unnamed: a body dim named like the outer graph's "B" is a second,
    # unrelated symbol to some runtimes.
    body = helper.make_graph(
        b.nodes,
        "step_every_row",
        [helper.make_tensor_value_info(h, f32, [None, H]) for h in hs]
        + [
            helper.make_tensor_value_info(x_t, f32, [None, width])
            if tokens
            else input_info(config, x_t, [None]),
            helper.make_tensor_value_info(run_t, TensorProto.BOOL, [None, 1]),
        ],
        [helper.make_tensor_value_info(o, f32, [None, H]) for o in outs],
    )
    finals = g("Scan", [*starts, x, running], len(starts), body=body, num_scan_inputs=2)
    finals = finals if len(starts) > 1 else [finals]
    results = []
    for k in range(len(names)):
        layers = finals[k :: len(names)]
        if config.arch == "cell":
            results.append(layers[0])
        else:
            results.append(g("Concat", [g("Unsqueeze", [f, axis0]) for f in layers], axis=0))
    logits = g("Gemm", [finals[(L - 1) * len(names)], "out_weight", "out_bias"], transB=1)
    log_probs = g("LogSoftmax", [logits], axis=-1)  # (B, C)
    g.nodes.append(helper.make_node("Identity", [log_probs], [LOG_PROBS]))
    for (_, state_out), result in zip(names, results, strict=True):
        g.nodes.append(helper.make_node("Identity", [result], [state_out]))
    used = {name for node in g.nodes for name in node.input}
    used |= {name for node in b.nodes for name in node.input}
    inputs, outputs = main_signature(config)
    graph = helper.make_graph(
        g.nodes,
        f"rnn_export_{config.arch}_portable",
        inputs=inputs,
        outputs=outputs,
        initializer=[v for k, v in g.inits.items() if k in used],
    )
    return model_of(graph, opset)
