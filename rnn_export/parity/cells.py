"""Each arch's layer step in float64 with its float32 allowance (the operations of
rnn_export.parity.bounds), from the PyTorch model's weights.

A layer's state is a tuple of (B, H) Approx values: (h,) for "cell", "stacked" and
"gru", (h, c) for "lstm". Layer 0's input term depends only on the token, so it is one
row per token of a table (as the exported graph folds it; its rounding is charged to
the step's dot products). The semantics are PyTorch's:

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
    Approx,
    Linear,
    Terms,
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
        if config.arch == "cell":
            w, b = f64(model.i2h.weight), f64(model.i2h.bias)  # (H, 2H): [input | recurrent]
            self.table = _table(f64(model.embed.weight), w[:, :H], [b])
            self.recurrent = [Linear(w[:, H:])]
            self.inputs, self.in_bias, self.rec_bias = [None], [None], [None]
            self.head = model.h2o
            self._parts = {}
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
        self.table = _table(f64(model.embedding.weight), weight("weight_ih", 0), [b_ih, b_hh])
        self.recurrent = [Linear(weight("weight_hh", k)) for k in range(L)]
        self.inputs = [None] + [Linear(weight("weight_ih", k)) for k in range(1, L)]
        self.in_bias = [None] + [weight("bias_ih", k) for k in range(1, L)]
        self.rec_bias = [weight("bias_hh", k) for k in range(L)]
        self.head = model.fc
        self._parts = {}

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
            return affine([recurrent], self.table[tokens][:, rows])
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
            if k == 0:
                a = affine([], self.table[tokens][:, n_rows])
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
        if k == 0:
            z = z + self.table.value[tokens]
        else:
            # the biases summed first, as step() does: the same float64 values bit for bit
            z = z + x @ self.inputs[k].weight.T + (self.in_bias[k] + self.rec_bias[k])
        return activation_value(self.nonlinearity, z)
