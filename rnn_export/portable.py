"""The portable main graph (`convert --portable`): one Scan that every tested runtime computes.

The default main graph (rnn_export.graph) is the fastest for onnxruntime, and it leans on
constructs that other runtimes get wrong or cannot run (issue 15): the RNN operator's
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

Per-layer states come out of an (L, B, H) state by Gather (not Split) and go back by
Unsqueeze + Concat. Every step computes every row (no sorting): slower than the default
graph on onnxruntime for mixed lengths, and the same numbers, since a row's arithmetic is
the same Gemm + f in both.
"""

from __future__ import annotations

from rnn_export.config import LENGTHS, LOG_PROBS, STATE_IN, STATE_OUT, TOKENS
from rnn_export.graph import GraphBuilder, model_of


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

    g = GraphBuilder(config, opset, "", weights=weights)
    L, H = g.L, g.H
    axis0, axis1, axis2 = (g.const(f"axis{i}", [i]) for i in range(3))
    steps = g("Gather", [g("Shape", [TOKENS]), g.const("one", 1)])  # scalar T
    t = g("Unsqueeze", [g("Range", [g.const("zero", 0), steps, g.const("one", 1)]), axis1])
    running = g("Less", [t, g("Unsqueeze", [LENGTHS, axis0])])  # (T, B)
    running = g("Unsqueeze", [running, axis2])  # (T, B, 1)
    x = g("Gather", ["table", g("Transpose", [TOKENS], perm=[1, 0])])  # (T, B, H)
    if config.arch == "cell":
        h0s = [STATE_IN]
    else:
        h0s = [g("Gather", [STATE_IN, g.const(f"layer{i}", i)], axis=0) for i in range(L)]

    b = GraphBuilder(config, opset, "b_", g.inits)
    hs = [f"b_h{layer}" for layer in range(L)]
    x_t, run_t = "b_x", "b_running"
    y, outs = x_t, []
    for layer, h in enumerate(hs):
        if layer:
            y = b("Gemm", [y, f"W{layer}", f"b{layer}"], transB=1)  # (B, H)
        y = b.activation(b("Gemm", [h, f"R{layer}", y], transB=1))  # (B, H)
        outs.append(b("Where", [run_t, y, h]))  # (B, H)
    f32 = TensorProto.FLOAT
    # Body shapes left unnamed: a body dim named like the outer graph's "B" is a second,
    # unrelated symbol to some runtimes.
    body = helper.make_graph(
        b.nodes,
        "step_every_row",
        [helper.make_tensor_value_info(h, f32, [None, H]) for h in hs]
        + [
            helper.make_tensor_value_info(x_t, f32, [None, H]),
            helper.make_tensor_value_info(run_t, TensorProto.BOOL, [None, 1]),
        ],
        [helper.make_tensor_value_info(o, f32, [None, H]) for o in outs],
    )
    finals = g("Scan", [*h0s, x, running], L, body=body, num_scan_inputs=2)
    finals = finals if L > 1 else [finals]
    if config.arch == "cell":
        hn = finals[0]
    else:
        hn = g("Concat", [g("Unsqueeze", [f, axis0]) for f in finals], axis=0)  # (L, B, H)
    logits = g("Gemm", [finals[-1], "out_weight", "out_bias"], transB=1)  # (B, C)
    log_probs = g("LogSoftmax", [logits], axis=-1)
    g.nodes.append(helper.make_node("Identity", [log_probs], [LOG_PROBS]))
    g.nodes.append(helper.make_node("Identity", [hn], [STATE_OUT]))
    state_shape = list(config.state_shape("B"))
    used = {name for node in g.nodes for name in node.input}
    used |= {name for node in b.nodes for name in node.input}
    graph = helper.make_graph(
        g.nodes,
        f"rnn_export_{config.arch}_portable",
        inputs=[
            helper.make_tensor_value_info(TOKENS, TensorProto.INT64, ["B", "T"]),
            helper.make_tensor_value_info(STATE_IN, f32, state_shape),
            helper.make_tensor_value_info(LENGTHS, TensorProto.INT64, ["B"]),
        ],
        outputs=[
            helper.make_tensor_value_info(LOG_PROBS, f32, ["B", config.num_classes]),
            helper.make_tensor_value_info(STATE_OUT, f32, state_shape),
        ],
        initializer=[v for k, v in g.inits.items() if k in used],
    )
    return model_of(graph, opset)
