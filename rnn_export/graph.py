"""The ONNX graphs of an export, written with onnx.helper straight from a model's weights.

Both arches are the same recurrence, h_t = f(x_t W_l^T + Wb_l + h_{t-1} R_l^T + Rb_l) per
layer l: the hand-built cell h = f(i2h([x, h])) is one layer with W = i2h.weight[:, :H],
R = i2h.weight[:, H:], Wb = i2h.bias, Rb = 0. Layer 0's input term depends only on the
token, so it is folded at export into a table (V, H) = embedding @ W_0^T + Wb_0 + Rb_0
(computed by PyTorch in float32, rounding as PyTorch's layer 0 does): layer 0 needs no
input matrix product, only a Gather.

The main graph (B, T symbolic; "cell" has L=1 and its state has no layer axis). A
top-level If picks the fastest of three paths, each the same math (docs/benchmarks.md
times the streaming and the offline runs):
    T == 1 (streams, pools): per layer Gemm(h0_l, R_l, x) + f, no loop, as few nodes
        as possible (at batch 1 each onnxruntime node costs about as much as its math);
        lengths is not read: 1 <= lengths <= T makes every row's length 1.
    T > 1, B == 1: one ONNX RNN operator per layer (layer 0 with W = identity, exact):
        a single kernel runs every step, with no per-step executor cost.
    T > 1, B > 1: rows sorted by length (TopK), then a Scan over time whose step t
        computes only the rows still running (Slice, Gemm + f, Concat per layer), as
        PyTorch's packed sequences do; rows return to their order at the end. The
        RNN operator's CPU kernel is ~5x slower than Gemm at large B, hence the Scan.
    hn (B, H) or (L, B, H): each row's state after its own last real step.
    log_probs = LogSoftmax(Gemm(top layer's state, out_weight^T, out_bias)) (B, C).

The step model (embedded in the file's metadata by rnn_export.export): token (B,) and one
(B, H) state per layer in, log_probs and the new per-layer states out; the T == 1 path
without the If and without the reshapes between the (L, B, H) state and its layers.

`onnx_weights` gives the weights in ONNX layout once; `main_graph` and `step_graph` build
the two ModelProtos from them (sharing one folded table).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rnn_export import __version__
from rnn_export.config import (
    LENGTHS,
    LOG_PROBS,
    STATE_IN,
    STATE_OUT,
    input_name,
    step_state_names,
)

STEP_TOKEN = "token"  # the step model's (B,) token input
STEP_FRAME = "frame"  # a features model's step input: float32 (B, F)


def step_input_name(config) -> str:
    """The step model's input: "token" (int64 (B,)) or "frame" (float32 (B, F))."""
    return STEP_TOKEN if config.reads_tokens else STEP_FRAME


# PyTorch's gate blocks (rows of weight_ih, weight_hh, bias_ih, bias_hh) in ONNX's order:
# GRU r, z, n -> z, r, h; LSTM i, f, g, o -> i, o, f, c; nn.RNN has one block.
ONNX_GATE_ORDER = {"stacked": (0,), "gru": (1, 0, 2), "lstm": (0, 3, 1, 2)}


def onnx_weights(model: nn.Module) -> dict:
    """The model's weights in the layout of the ONNX graph, as float32 numpy arrays.

    Returns:
        {"embedding": (V, E) or None, "layers": [(W (1, GH, E_l), R (1, GH, H),
         B (1, 2GH)), ...], "out_weight": (C, H), "out_bias": (C,)}, and for "features"
        "mean" and "scale" (F,): the input stage's normalization. "embedding" is the token
        Embedding ("tokens"), None for "onehot" (its input is a one-hot vector of width V,
        so layer 0's input term of token v is column v of W_0). Per layer exactly the W, R,
        B inputs of
        the ONNX RNN (G = 1), GRU (G = 3, gates z, r, h) or LSTM (G = 4, gates i, o, f, c)
        operator, B = [Wb, Rb]. For "cell" and "stacked" h_t = f(x_t W^T + h_{t-1} R^T +
        Wb + Rb); "gru" is ONNX's GRU with linear_before_reset=1 (PyTorch's: the reset gate
        multiplies h R_h^T + Rb_h); "lstm" is ONNX's LSTM without peepholes.
    """

    def arr(t):
        return t.detach().to(torch.float32).cpu().numpy().copy()

    config = model.config
    stage = {"embedding": None}
    if config.input_kind == "tokens":
        stage["embedding"] = arr(getattr(model, model.input_name).weight)
    elif config.input_kind == "features":
        stage = {
            "embedding": None,
            "mean": arr(model.frames.mean),
            "scale": arr(model.frames.scale),
        }
    if config.arch == "cell":
        E = config.input_width
        w, b = arr(model.i2h.weight), arr(model.i2h.bias)  # (H, E + H): [input | recurrent]
        # The cell's one bias plays Wb; Rb is zero, so the sum is the same bias exactly.
        layers = [(w[None, :, :E], w[None, :, E:], np.concatenate([b, np.zeros_like(b)])[None])]
        return stage | {
            "layers": layers,
            "out_weight": arr(model.h2o.weight),
            "out_bias": arr(model.h2o.bias),
        }
    rnn, order = model.rnn, ONNX_GATE_ORDER[config.arch]

    def gates(name: str, layer: int) -> np.ndarray:
        blocks = np.split(arr(getattr(rnn, f"{name}_l{layer}")), len(order))
        return np.concatenate([blocks[i] for i in order])

    layers = []
    for layer in range(rnn.num_layers):
        w_ih, w_hh, b_ih, b_hh = (
            gates(name, layer) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )
        layers.append((w_ih[None], w_hh[None], np.concatenate([b_ih, b_hh])[None]))
    return stage | {
        "layers": layers,
        "out_weight": arr(model.fc.weight),
        "out_bias": arr(model.fc.bias),
    }


def fold_table(embedding, W, Wb, Rb) -> np.ndarray:
    """Layer 0's input term per token, (V, GH) = embedding @ W^T + Wb + Rb, float32.

    Folded with PyTorch's own float32 kernel, in PyTorch's order (linear(x, W, Wb) + Rb),
    so the table rounds as PyTorch's layer 0 does per token: a table exact in float64 is
    closer to the true value but drifts from PyTorch in long, chaotic rows. embedding
    None (a one-hot input): the one-hot product picks column v of W exactly, so the table
    is W^T + Wb + Rb, with no product at all.
    """
    with torch.no_grad():
        if embedding is None:
            table = torch.from_numpy(np.ascontiguousarray(W.T)) + torch.from_numpy(Wb)
        else:
            table = nn.functional.linear(
                torch.from_numpy(embedding), torch.from_numpy(W), torch.from_numpy(Wb)
            )
        table = table + torch.from_numpy(Rb)
    return table.numpy().astype(np.float32, copy=False)


def count_nodes(graph) -> int:
    """Nodes of an onnx GraphProto, those inside If/Scan subgraphs included."""
    import onnx

    total = 0
    for node in graph.node:
        total += 1
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                total += count_nodes(attr.g)
    return total


def main_graph(config, weights: dict, opset: int):
    """One graph for every (B, T): a top-level If picks the fastest of three paths.

    T == 1           -> _step_branch: one step, no loop (streams and pools).
    T > 1 and B == 1 -> _rnn_branch: the ONNX RNN operator, one per layer.
    T > 1 and B > 1  -> _sorted_scan_branch: a Scan over rows sorted by length.
    All three start from the same folded table (embedding @ W_0^T + both layer-0 biases),
    so layer 0 needs no input matrix product.

    Returns:
        onnx.ModelProto (no metadata) with inputs tokens, h0, lengths and outputs
        log_probs, hn.
    """
    from onnx import helper

    g = GraphBuilder(config, opset, "", weights=weights)
    step = _step_branch(GraphBuilder(config, opset, "s_", g.inits))
    one_row = _rnn_branch(GraphBuilder(config, opset, "r_", g.inits))
    many_rows = _sorted_scan_branch(GraphBuilder(config, opset, "q_", g.inits))
    e = GraphBuilder(config, opset, "e_", g.inits)
    rows = e("Gather", [e("Shape", [g.input]), g.const("axis0", [0])])  # [B]
    is_one_row = e("Equal", [rows, g.const("one1", [1])])
    picked = e("If", [is_one_row], 2, then_branch=one_row, else_branch=many_rows)
    longer = e.branch("longer", picked)

    if opset >= 15:
        steps = g("Shape", [g.input], start=1, end=2)  # [T]
    else:
        steps = g("Gather", [g("Shape", [g.input]), g.const("axis1", [1])])
    is_step = g("Equal", [steps, g.const("one1", [1])])
    g.nodes.append(
        helper.make_node(
            "If", [is_step], [LOG_PROBS, STATE_OUT], then_branch=step, else_branch=longer
        )
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


def input_info(config, name: str, dims: list):
    """The value info of an input of the input stage: int64 ids of shape dims, or float32
    frames of shape dims + [F] ("features")."""
    from onnx import TensorProto, helper

    if config.reads_tokens:
        return helper.make_tensor_value_info(name, TensorProto.INT64, dims)
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [*dims, config.input_size])


def main_signature(config) -> tuple[list, list]:
    """The value infos of every main graph (default or portable, any arch): inputs tokens
    (B, T) (or features (B, T, F)), each state of config.state_names, lengths (B);
    outputs log_probs (B, C) and each new state."""
    from onnx import TensorProto, helper

    f32, shape = TensorProto.FLOAT, list(config.state_shape("B"))
    names = config.state_names
    inputs = (
        [input_info(config, input_name(config), ["B", "T"])]
        + [helper.make_tensor_value_info(i, f32, shape) for i, _ in names]
        + [helper.make_tensor_value_info(LENGTHS, TensorProto.INT64, ["B"])]
    )
    outputs = [helper.make_tensor_value_info(LOG_PROBS, f32, ["B", config.num_classes])]
    outputs += [helper.make_tensor_value_info(o, f32, shape) for _, o in names]
    return inputs, outputs


def step_graph(config, weights: dict, opset: int):
    """The step model: _step_branch's math with per-layer states and no If (fewest nodes).

    Cell: Gather, Gemm + f (fused by onnxruntime), Gemm, LogSoftmax. Each further layer
    adds Gemm (input term) and Gemm + f.

    Returns:
        onnx.ModelProto with inputs token (B,) int64 and h_l (B, H) per layer, outputs
        log_probs (B, C) and hn_l (B, H); only the weights it uses.
    """
    from onnx import TensorProto, helper

    g = GraphBuilder(config, opset, "", weights=weights)
    names = step_state_names(config.arch, g.L)
    step_in = step_input_name(config)
    finals = g.step_layers(input_term(g, 0, step_in), [h for h, _ in names])
    logits = g("Gemm", [finals[-1], "out_weight", "out_bias"], transB=1)
    g("LogSoftmax", [logits], axis=-1)
    # Name the graph outputs: rename the producing nodes' outputs.
    renames = {g.nodes[-1].output[0]: LOG_PROBS}
    renames.update({x: out for x, (_, out) in zip(finals, names, strict=True)})
    for node in g.nodes:
        for slots in (node.input, node.output):
            for i, name in enumerate(slots):
                slots[i] = renames.get(name, name)
    used = {name for node in g.nodes for name in node.input}
    f32, H = TensorProto.FLOAT, g.H
    graph = helper.make_graph(
        g.nodes,
        f"rnn_export_{config.arch}_step",
        inputs=[input_info(config, step_in, ["B"])]
        + [helper.make_tensor_value_info(h, f32, ["B", H]) for h, _ in names],
        outputs=[helper.make_tensor_value_info(LOG_PROBS, f32, ["B", config.num_classes])]
        + [helper.make_tensor_value_info(hn, f32, ["B", H]) for _, hn in names],
        initializer=[v for k, v in g.inits.items() if k in used],
    )
    return model_of(graph, opset)


def model_of(graph, opset: int):
    """A ModelProto around graph at opset."""
    from onnx import helper

    opsets = [helper.make_opsetid("", opset)]
    # The oldest IR version that carries this opset: older runtimes on devices can load it.
    return helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=helper.find_min_ir_version_for(opsets),
        producer_name="rnn-export",
        producer_version=__version__,
    )


class GraphBuilder:
    """Nodes of one (sub)graph; initializers are shared by all graphs of one export.

    g(op, inputs, n_out=1, **attrs) appends a node and returns its output name(s),
    made unique by the graph's prefix. Weight initializers (made on first use):
        table (V, H)  embedding @ W_0^T + Wb_0 + Rb_0: layer 0's input term for a token
                      (a "features" model has instead W0 (H, F), b0, B0 like the layers
                      above and in_mean, in_scale (F,): the input stage's normalization)
        R{l} (H, H)   recurrent weight; W{l} (H, H), b{l} = Wb_l + Rb_l (H,) for l > 0
        B{l} (1, 2H)  [Wb_l, Rb_l] for the RNN operator; out_weight (C, H), out_bias (C,)
    """

    def __init__(self, config, opset: int, prefix: str, inits: dict | None = None, weights=None):
        self.config, self.opset, self.prefix = config, opset, prefix
        self.L, self.H = config.num_layers, config.hidden_size
        self.input = input_name(config)  # the main graph's input
        self.act = {"tanh": "Tanh", "relu": "Relu", "identity": None}[config.nonlinearity]
        self.nodes: list = []
        self.inits = {} if inits is None else inits
        if weights is not None:
            self._add_weights(weights)

    def _add_weights(self, weights: dict) -> None:
        W0, _, B0 = weights["layers"][0]
        H = W0.shape[1]
        if self.config.reads_tokens:
            table = fold_table(weights["embedding"], W0[0], B0[0, :H], B0[0, H:])
            self.const("table", table, np.float32)
        else:
            self.add_normalization(weights)
        for layer, (W, R, B) in enumerate(weights["layers"]):
            self.const(f"R{layer}", R[0], np.float32)
            if layer or not self.config.reads_tokens:
                self.const(f"W{layer}", W[0], np.float32)
                self.const(f"b{layer}", B[0, :H] + B[0, H:], np.float32)
                self.const(f"B{layer}", B, np.float32)
        self.const("out_weight", weights["out_weight"], np.float32)
        self.const("out_bias", weights["out_bias"], np.float32)

    def add_normalization(self, weights: dict) -> None:
        """The input stage's per-feature mean and scale of a "features" model."""
        self.const("in_mean", weights["mean"], np.float32)
        self.const("in_scale", weights["scale"], np.float32)

    def normalize(self, frames: str) -> str:
        """(frames - mean) / scale, as the model's input stage computes it."""
        return self("Div", [self("Sub", [frames, "in_mean"]), "in_scale"])

    def const(self, name: str, value, dtype=np.int64) -> str:
        from onnx import numpy_helper

        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(np.asarray(value, dtype=dtype), name)
        return name

    def __call__(self, op: str, inputs: list, n_out: int = 1, **attrs):
        from onnx import helper

        outputs = [f"{self.prefix}{op}{len(self.nodes)}_{k}" for k in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0] if n_out == 1 else outputs

    def one_step_input(self) -> str:
        """The main input of a call with T == 1 as one step's: (B,) ids or (B, F) frames.
        Reshape, not Squeeze: a Squeeze of axis 1 would fail shape inference at load for a
        graph whose T is fixed (a traced graph, or the parity suite's broken copy)."""
        if self.config.reads_tokens:
            return self("Reshape", [self.input, self.const("minus1", [-1])])  # (B,)
        shape = self.const("rows_of_F", [-1, self.config.input_size])
        return self("Reshape", [self.input, shape])  # (B, F)

    def time_major(self) -> str:
        """The main input with time first: (T, B) ids or (T, B, F) frames."""
        perm = [1, 0] if self.config.reads_tokens else [1, 0, 2]
        return self("Transpose", [self.input], perm=perm)

    def activation(self, x: str) -> str:
        return x if self.act is None else self(self.act, [x])

    def step_layers(self, x: str, states: list[str]) -> list[str]:
        """One step of every layer: h_l = f(x_l W_l^T + b_l + h_l R_l^T), x_0 = x (B, H),
        layer 0's input term.

        Returns:
            Each layer's new (B, H) state; the last is the top layer's.
        """
        finals = []
        for layer, h in enumerate(states):
            if layer:
                x = self("Gemm", [x, f"W{layer}", f"b{layer}"], transB=1)  # (B, H)
            x = self.activation(self("Gemm", [h, f"R{layer}", x], transB=1))  # (B, H)
            finals.append(x)
        return finals

    def layer_states(self, state: str) -> list[str]:
        """Each layer's (B, H) state from a state of the model's shape."""
        if self.config.arch == "cell":
            return [state]
        # (L, B, H) -> (L * B, H) -> L x (B, H): one node fewer than Split + L Squeeze.
        rows = self("Reshape", [state, self.const("rows_of_H", [-1, self.H])])
        return self.split_layers(rows)

    def split_layers(self, x: str) -> list[str]:
        """x split along axis 0 into L equal parts."""
        if self.L == 1:
            return [x]
        attrs = {"num_outputs": self.L} if self.opset >= 18 else {}  # older: equal parts
        return self("Split", [x], self.L, axis=0, **attrs)

    def stack_layers(self, finals: list[str]) -> str:
        """A (L, B, H) state from each layer's (B, H) state."""
        if self.L == 1:
            return self("Unsqueeze", [finals[0], self.const("axis0", [0])])
        # (L * B, H) -> (L, B, H): one node fewer than an Unsqueeze per layer + Concat
        shape = self.const("state_shape", [self.L, -1, self.H])
        return self("Reshape", [self("Concat", finals, axis=0), shape])

    def head(self, finals: list[str]) -> tuple[str, str]:
        """(log_probs (B, C), hn) from each layer's final (B, H) state."""
        hn = finals[0] if self.config.arch == "cell" else self.stack_layers(finals)
        logits = self("Gemm", [finals[-1], "out_weight", "out_bias"], transB=1)  # (B, C)
        return self("LogSoftmax", [logits], axis=-1), hn

    def branch(self, name: str, outputs: tuple[str, str]):
        """This graph as an If branch with outputs (log_probs, hn)."""
        from onnx import TensorProto, helper

        log_probs, hn = outputs
        return helper.make_graph(
            self.nodes,
            name,
            [],
            [
                helper.make_tensor_value_info(
                    log_probs, TensorProto.FLOAT, ["B", self.config.num_classes]
                ),
                helper.make_tensor_value_info(
                    hn, TensorProto.FLOAT, list(self.config.state_shape("B"))
                ),
            ],
        )


def _step_branch(g: GraphBuilder):
    """T == 1: h_l = f(x W_l^T + b_l + h0_l R_l^T) once per layer; lengths is 1 here.

    Every node costs ~1-2 us at batch 1, so this path has the fewest nodes possible.
    """
    x = input_term(g, 0, g.one_step_input())  # (B, H)
    return g.branch("one_step", g.head(g.step_layers(x, g.layer_states(STATE_IN))))


def _rnn_branch(g: GraphBuilder):
    """B == 1, T > 1: the RNN operator runs all steps in one kernel (no per-step cost).

    Layer 0's input of a token is already projected (the table), so its W is the
    identity, exact; a "features" model's layer 0 runs with W0 on the normalized frames.
    """
    from onnx import TensorProto

    axis0, axis1 = g.const("axis0", [0]), g.const("axis1", [1])
    attrs = {"hidden_size": g.H, "activations": [g.act or "Affine"]}
    if g.act is None:
        attrs.update(activation_alpha=[1.0], activation_beta=[0.0])  # Affine(1, 0) = identity
    tokens = g.config.reads_tokens
    if tokens:
        x = g("Gather", ["table", g.time_major()])  # (T, B, H)
    else:
        x = g.normalize(g.time_major())  # (T, B, F)
    lengths = g("Cast", [LENGTHS], to=TensorProto.INT32)
    if g.config.arch == "cell":
        h0s = [g("Unsqueeze", [STATE_IN, axis0])]
    else:
        h0s = g.split_layers(STATE_IN)  # (1, B, H) each
    finals = []
    for layer in range(g.L):
        W = g("EyeLike", ["R0"]) if layer == 0 and tokens else f"W{layer}"
        B = "" if layer == 0 and tokens else f"B{layer}"
        W, R = (g("Unsqueeze", [w, axis0]) for w in (W, f"R{layer}"))  # (1, H, H)
        y, y_h = g("RNN", [x, W, R, B, lengths, h0s[layer]], 2, **attrs)
        if layer < g.L - 1:
            x = g("Squeeze", [y, axis1])  # (T, B, H)
        else:
            g.nodes[-1].output[0] = ""  # the top layer's per-step outputs are not needed
        finals.append(g("Squeeze", [y_h, axis0]))  # (B, H): each row after its last step
    return g.branch("one_row", g.head(finals))


def _sorted_scan_branch(g: GraphBuilder):
    """B > 1, T > 1: sorted_scan with the plain cell h' = f(x + h R^T)."""

    def cell(b: GraphBuilder, layer: int, x_run: str, h_run: str) -> list[str]:
        return [b.activation(b("Gemm", [h_run, f"R{layer}", x_run], transB=1))]  # (n, H)

    (finals,) = sorted_scan(g, [STATE_IN], cell)
    return g.branch("many_rows", g.head(finals))


def input_term(g: GraphBuilder, layer: int, source: str, split: bool = False):
    """A layer's input term: of token ids (layer 0: the table's rows), of frames (layer 0
    of a "features" model: Gemm with W0, b0 of the normalized frames) or of the layer
    below's new h (Gemm with W{l}, b{l}); split (a gated graph's, see
    gated.step_weights): the pair (gate block, candidate block), else one (B, width)."""
    if layer == 0:
        if g.config.reads_tokens:
            if not split:
                return g("Gather", ["table", source])
            return g("Gather", ["table_g", source]), g("Gather", ["table_c", source])
        source = g.normalize(source)  # (B, F)
    if not split:
        return g("Gemm", [source, f"W{layer}", f"b{layer}"], transB=1)
    return tuple(g("Gemm", [source, f"W{k}{layer}", f"b{k}{layer}"], transB=1) for k in ("g", "c"))


def sorted_scan(g: GraphBuilder, states: list[str], cell, split: bool = False) -> list[list[str]]:
    """B > 1, T > 1: rows sorted by length, longest first; step t runs only rows still going.

    Like PyTorch's packed sequences, padding costs no arithmetic; the Scan stops at the
    longest row. The scan body gathers the input term of the first n_t rows' tokens
    (n_t = rows with length > t), slices their states, steps them, and concatenates the
    finished rows back unchanged.

    Args:
        states: the graph's state inputs (each of the model's state shape), in order.
        cell: cell(b, layer, x_run, *state_runs) -> the layer's new states (n, H) in
            the order of states, the first one the next layer's input; x_run (n, width)
            is the layer's input term (the table row for layer 0, width H or GH for a
            gated cell, else Gemm(x, W{l}, b{l}) of the layer below's new first state).
        split: the input terms in input_term's split form (a gated cell's), not whole.

    Returns:
        Per state, each layer's (B, H) state after each row's own last real token, in
        the rows' own order.
    """
    from onnx import TensorProto, helper

    L, H = g.L, g.H
    axis0, axis1, zero1 = g.const("axis0", [0]), g.const("axis1", [1]), g.const("zero1", [0])
    zero, one = g.const("zero", 0), g.const("one", 1)
    n_rows = g("Gather", [g("Shape", [g.input]), axis0])  # [B]
    lengths, order = g("TopK", [LENGTHS, n_rows], 2)  # descending
    longest = g("Gather", [lengths, axis0])  # [T']
    inputs = g("Slice", [g.time_major(), zero1, longest])  # (T', B) ids or (T', B, F)
    inputs = g("Gather", [inputs, order], axis=1)  # rows in length order
    t = g("Unsqueeze", [g("Range", [zero, g("Squeeze", [longest, axis0]), one]), axis1])
    running = g("Cast", [g("Less", [t, lengths])], to=TensorProto.INT64)  # (T', B)
    counts = g("ReduceSum", [running, axis1], keepdims=1)  # (T', 1): n_t
    axis = 0 if g.config.arch == "cell" else 1
    starts = [g.layer_states(g("Gather", [s, order], axis=axis)) for s in states]  # (B, H)

    b = GraphBuilder(g.config, g.opset, g.prefix + "b_", g.inits)
    kinds = len(states)
    # Carried states: every layer of the first state, then every layer of the next.
    carried = [f"{b.prefix}{states[k][0]}{layer}" for k in range(kinds) for layer in range(L)]
    # Layer 0's input term is gathered per step for the running rows only: gathering the
    # whole (T', B, width) term up front and slicing it per step writes and reads all of
    # it once more (16 MiB of float32 at B=256, T=128, H=128).
    tok_t, n = b.prefix + "tok", b.prefix + "n"
    x_run = b("Slice", [tok_t, zero1, n])  # (n,) or (n, F): the running rows' inputs
    outs = [""] * len(carried)
    for layer in range(L):
        x_run = input_term(b, layer, x_run, split)  # (n, width), or its two blocks
        mine = [carried[k * L + layer] for k in range(kinds)]
        runs = [b("Slice", [h, zero1, n]) for h in mine]  # (n, H) each
        new = cell(b, layer, x_run, *runs)
        for k, (h, h_new) in enumerate(zip(mine, new, strict=True)):
            done = b("Slice", [h, n, g.const("int64_max1", [np.iinfo(np.int64).max])])
            outs[k * L + layer] = b("Concat", [h_new, done], axis=0)  # (B, H)
        x_run = new[0]
    f32 = TensorProto.FLOAT
    body = helper.make_graph(
        b.nodes,
        "step_running_rows",
        [helper.make_tensor_value_info(h, f32, ["B", H]) for h in carried]
        + [
            input_info(g.config, tok_t, ["B"]),
            helper.make_tensor_value_info(n, TensorProto.INT64, [1]),
        ],
        [helper.make_tensor_value_info(o, f32, ["B", H]) for o in outs],
    )
    flat = [h for start in starts for h in start]
    finals = g("Scan", [*flat, inputs, counts], len(carried), body=body, num_scan_inputs=2)
    finals = finals if len(carried) > 1 else [finals]
    row_ids = g("Range", [zero, g("Squeeze", [n_rows, axis0]), one])  # 0..B-1
    unsort = g("ScatterElements", [row_ids, order, row_ids])  # the inverse permutation of order
    unsorted = [g("Gather", [f, unsort]) for f in finals]
    return [unsorted[k * L : (k + 1) * L] for k in range(kinds)]
