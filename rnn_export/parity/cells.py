"""Each arch's layer step in float64 with its float32 allowance (the operations of
rnn_export.parity.bounds), from the PyTorch model's weights.

A layer's state is a tuple of (B, H) Approx values: (h,) for "cell", "stacked" and
"gru", (h, c) for "lstm". Layer 0's input term of a model that reads tokens depends only
on the token, so it is one row per token of a table (as the exported graph folds it;
its rounding is charged to the step's dot products): embedding @ W_0^T, or W_0's
columns themselves for a one-hot input. A features model's layer 0 takes its input
term like the layers above, a product with W_0, of the normalized frames
(x - mean) / scale, whose two float32 roundings are their own elementwise step. The
semantics are PyTorch's:

    stacked  h' = f(W x + b_i + R h + b_h)
    gru      r, z = sigmoid(W_{r,z} x + b_i + R_{r,z} h + b_h)
             n = tanh(W_n x + b_in + r * (R_n h + b_hn))      (the reset gate multiplies
             h' = (1 - z) * n + z * h                           the recurrent product and
                                                                its bias)
    lstm     i, f, o = sigmoid(.), g = tanh(.) of W x + b_i + R h + b_h (order i, f, g, o)
             c' = f * c + i * g,  h' = o * tanh(c')
"""

from __future__ import annotations

import numpy as np

from rnn_export.parity.bounds import (
    ELEMENTWISE_ROUNDING,
    TINY,
    Approx,
    Linear,
    Terms,
    U,
    activation,
    activation_value,
    add,
    affine,
    bias_terms,
    interpolate,
    multiply,
)


def f64(t) -> np.ndarray:
    """A torch tensor as a float64 numpy copy."""
    return t.detach().to("cpu").double().numpy().copy()


def _table(embedding: np.ndarray, weight: np.ndarray, biases: list[np.ndarray]) -> Terms:
    """Each token's input term: embedding @ weight.T + biases, as exact terms."""
    return Terms(
        embedding @ weight.T + sum(biases),
        np.abs(embedding) @ np.abs(weight).T + sum(np.abs(b) for b in biases),
        weight.shape[1] + len(biases),
    )


class Cell:
    """One arch's layers: weights and the step of each layer.

    Args:
        model: a model of rnn_export.models (any arch).
    """

    def __init__(self, model):
        config = model.config
        self.arch = config.arch
        self.nonlinearity = config.nonlinearity
        H = self.H = config.hidden_size
        E = config.input_width
        self.frames = None  # a features model's (mean, scale), float64 (F,) each
        if config.input_kind == "features":
            self.frames = (f64(model.frames.mean), f64(model.frames.scale))
        # The token rows: the embedding, or the identity for a one-hot input (exact).
        embedding = None
        if config.input_kind == "tokens":
            embedding = f64(getattr(model, model.input_name).weight)
        elif config.input_kind == "onehot":
            embedding = np.eye(config.vocab_size)
        self._parts = {}
        if config.arch == "cell":
            w, b = f64(model.i2h.weight), f64(model.i2h.bias)  # (H, E + H): [input | recurrent]
            self.recurrent = [Linear(w[:, E:])]
            self.head = model.h2o
            if embedding is None:  # frames: the input product is layer 0's own
                self.table = None
                self.inputs, self.in_bias, self.rec_bias = [Linear(w[:, :E])], [b], [None]
                return
            self.table = _table(embedding, w[:, :E], [b])
            self.inputs, self.in_bias, self.rec_bias = [None], [None], [None]
            return
        if config.arch not in ("stacked", "gru", "lstm"):
            raise ValueError(f"no float64 reference for arch {config.arch!r}")
        rnn = model.rnn
        L = config.num_layers

        def weight(kind, layer):
            return f64(getattr(rnn, f"{kind}_l{layer}"))

        b_ih, b_hh = weight("bias_ih", 0), weight("bias_hh", 0)
        if config.arch == "gru":
            # b_hn stays with the recurrent product, which the reset gate multiplies.
            b_hh = np.concatenate([b_hh[: 2 * H], np.zeros(H)])
        self.recurrent = [Linear(weight("weight_hh", k)) for k in range(L)]
        self.inputs = [None] + [Linear(weight("weight_ih", k)) for k in range(1, L)]
        self.in_bias = [None] + [weight("bias_ih", k) for k in range(1, L)]
        self.rec_bias = [weight("bias_hh", k) for k in range(L)]
        self.head = model.fc
        self.table = None
        if embedding is None:  # frames: layer 0 as the layers above, on the frames
            self.inputs[0] = Linear(weight("weight_ih", 0))
            self.in_bias[0] = weight("bias_ih", 0)
        else:
            self.table = _table(embedding, weight("weight_ih", 0), [b_ih, b_hh])

    def first_input(self, frames) -> Approx:
        """A features model's layer-0 input: the normalized frames (B, F), rounded twice
        (the subtraction and the division are each one float32 kernel)."""
        mean, scale = self.frames
        shifted = np.asarray(frames, dtype=np.float64) - mean
        value = shifted / scale
        radius = ELEMENTWISE_ROUNDING * U * (np.abs(shifted) / np.abs(scale) + np.abs(value))
        return Approx(value, radius + 2 * TINY)

    def _layer_biases(self, k: int, rows: slice):
        """The fixed bias terms of layer k's product (a cell's one bias; else both)."""
        if self.rec_bias[k] is None:
            return bias_terms(self.in_bias[k][rows])
        return bias_terms(self.in_bias[k][rows], self.rec_bias[k][rows])

    def _part(self, weights: list, k: int, rows: slice) -> Linear:
        """Rows of layer k's weight matrix, made once (|W| included)."""
        key = (id(weights), k, rows.start, rows.stop)
        if key not in self._parts:
            self._parts[key] = Linear(weights[k].weight[rows])
        return self._parts[key]

    def _gates(self, k: int, rows: slice, tokens, x: Approx | None, h: Approx, biases) -> Approx:
        """One dot product per unit of the gate rows `rows`: input term + R h + biases."""
        recurrent = (h, self._part(self.recurrent, k, rows))
        if k == 0:
            if self.table is not None:
                return affine([recurrent], self.table[tokens][:, rows])
            x, biases = self.first_input(tokens), self._layer_biases(0, rows)
        return affine([(x, self._part(self.inputs, k, rows)), recurrent], biases)

    def step(self, k: int, tokens, x: Approx | None, state: tuple[Approx, ...]):
        """Layer k's new state from its input (tokens for k == 0, else x: the new h of
        layer k - 1) and its state."""
        H = self.H
        if self.arch in ("cell", "stacked"):
            biases = None if k == 0 else bias_terms(self.in_bias[k], self.rec_bias[k])
            return (
                activation(
                    self.nonlinearity, self._gates(k, slice(None), tokens, x, *state, biases)
                ),
            )
        if self.arch == "gru":
            (h,) = state
            rz_rows, n_rows = slice(0, 2 * H), slice(2 * H, 3 * H)
            biases = None
            if k > 0:
                biases = bias_terms(self.in_bias[k][rz_rows], self.rec_bias[k][rz_rows])
            rz = activation("sigmoid", self._gates(k, rz_rows, tokens, x, h, biases))
            r, z = rz[:, :H], rz[:, H:]
            if k == 0 and self.table is not None:
                a = affine([], self.table[tokens][:, n_rows])
            elif k == 0:
                part = self._part(self.inputs, 0, n_rows)
                a = affine([(self.first_input(tokens), part)], bias_terms(self.in_bias[0][n_rows]))
            else:
                a = affine(
                    [(x, self._part(self.inputs, k, n_rows))], bias_terms(self.in_bias[k][n_rows])
                )
            m = affine(
                [(h, self._part(self.recurrent, k, n_rows))], bias_terms(self.rec_bias[k][n_rows])
            )
            n = activation("tanh", add(a, multiply(r, m)))
            return (interpolate(z, n, h),)
        h, c = state
        biases = None if k == 0 else bias_terms(self.in_bias[k], self.rec_bias[k])
        gates = self._gates(k, slice(None), tokens, x, h, biases)
        i, f, g, o = (gates[:, j * H : (j + 1) * H] for j in range(4))
        i, f, o = (activation("sigmoid", v) for v in (i, f, o))
        c_new = add(multiply(f, c), multiply(i, activation("tanh", g)))
        return (multiply(o, activation("tanh", c_new)), c_new)

    def step_values(self, k: int, tokens, x: np.ndarray | None, h: np.ndarray) -> np.ndarray:
        """step() of "cell" / "stacked" on values alone (for bounds that say nothing)."""
        z = h @ self.recurrent[k].weight.T
        if k == 0 and self.table is not None:
            z = z + self.table.value[tokens]
        elif k == 0:
            biases = self._layer_biases(0, slice(None)).value
            z = z + self.first_input(tokens).value @ self.inputs[0].weight.T + biases
        else:
            # the biases summed first, as step() does: the same float64 values bit for bit
            z = z + x @ self.inputs[k].weight.T + (self.in_bias[k] + self.rec_bias[k])
        return activation_value(self.nonlinearity, z)
