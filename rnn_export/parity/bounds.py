"""The float32 allowance: how far a correct float32 implementation may be from the exact result.

Every value of the reference is carried as an `Approx`: its exact value (computed in
float64 from the same float32 inputs) and a radius, a bound on |float32 - exact| for
any implementation that computes the model's function in float32 and rounds each of
its operations no worse than this rounding model says:

    dot product / Gemm of n terms (biases included), in any order:
        |rounding| <= DOT_ROUNDING * sqrt(n) * u * sum |terms|
    elementwise kernel (activation, product, sum of two, state output, log-softmax):
        |rounding| <= ELEMENTWISE_ROUNDING * u * |result|  (16 ulp)
    sigmoid and tanh: the same of max(|y|, 1 - |y|): a kernel that computes them from
        exponentials is accurate to a few ulp of 1, not of a tiny result (see below)
    plus TINY (the smallest normal float32) per operation, for flush-to-zero

with u = 2**-24, float32's unit roundoff. Errors already present propagate through
each operation exactly as calculus says, with derivatives bounded over the whole
interval value +- radius (mean value theorem), so the radius is a rigorous bound for
those rounding rates, however long the run; it only grows looser as a recurrence
amplifies it (the absolute values of a Jacobian propagate it, not the Jacobian).

Why these rates. A sum computed in float32 makes one rounding per addition, each at
most u times the partial sum so far; with rounding errors of random sign the total is
about u * sqrt(n) * (size of the partial sums), and a partial sum is at most
sum |terms|. PyTorch's own float32 stays within 0.2 of this allowance on trained default
models (the largest share seen: dot products of a layer's input term and its recurrent
term that nearly cancel). onnxruntime's Tanh is up to 4.5 ulp off on x86-64 CPUs
(PyTorch's 0.6 ulp): 16 ulp per elementwise kernel leaves room for a runtime that
rounds each state a few ulp worse still.

Why sigmoid and tanh are relative to 1 near zero. A logistic kernel computed as 1/2 +
1/2 tanh(x/2) (onnxruntime's Sigmoid) rounds to ulps of 1/2, however tiny s is; a tanh
computed from exponentials, (1 - e^-2x) / (1 + e^-2x) as the ONNX RNN, GRU and LSTM
operators define it (onnxruntime's RNN operator: up to 2.8 u of absolute error at every
|t|, 1.5 u where |t| < 1e-3, that is tens of thousands of ulp of a tiny t), loses the
same where 1 - e^-2x cancels. A bound relative to |t| alone holds only when every
product before the tanh is inexact enough to widen the dot product's own allowance: a
dense input weight (a trained embedding times W_ih) does, but an exactly representable
or sparse one (a one-hot input folded with W_ih = identity, a permutation) leaves a
small pre-activation with an allowance of a few ulp of itself, and the tanh kernel's
absolute error then exceeds it (1.1x-3.8x on the PyTorch tutorial's name classifiers).
A wrong weight, wiring or length rule moves a
result by far more than this: the parity suite shows each broken model at 10x or more.

Everything here is plain numpy float64; the arch's recurrence is written with these
operations in rnn_export.parity.reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

U = 2.0**-24  # float32 unit roundoff: |fl(x) - x| <= U |x| for a correctly rounded result
TINY = 2.0**-126  # the smallest normal float32: underflow and flush-to-zero
DOT_ROUNDING = 1.0  # x sqrt(n) u sum|terms| per dot product of n terms
ELEMENTWISE_ROUNDING = 32.0  # x u |result| per elementwise kernel: 16 ulp
# A radius never grows past this: beyond it the bound says nothing, and inf * 0 in a
# matrix product would turn it into NaN.
RADIUS_CAP = 1e100

_SATURATING = {"tanh": 2.0, "sigmoid": 1.0}  # |a - b| of two values in the function's range


@dataclass(frozen=True)
class Approx:
    """A value known up to a radius: exact float64 `value`, |float32 result - value| <= radius.

    Args:
        value: float64 array, the exact result from the same float32 inputs.
        radius: float64 array of the same shape, >= 0.
    """

    value: np.ndarray
    radius: np.ndarray

    @classmethod
    def exact(cls, x) -> Approx:
        """A float32 input, known exactly."""
        value = np.asarray(x, dtype=np.float64)
        return cls(value, np.zeros_like(value))

    @property
    def magnitude(self) -> np.ndarray:
        """A bound on |float32 result|."""
        return np.abs(self.value) + self.radius

    def __getitem__(self, index) -> Approx:
        return Approx(self.value[index], self.radius[index])


def _elementwise(
    value: np.ndarray, propagated: np.ndarray, cap: float = RADIUS_CAP, scale=None
) -> Approx:
    # The kernel rounds its own result, which may be anywhere within the propagated radius;
    # `scale` replaces |result| for a kernel whose error is relative to something else.
    size = np.abs(value) if scale is None else scale
    radius = propagated + ELEMENTWISE_ROUNDING * U * (size + propagated) + TINY
    return Approx(value, np.minimum(radius, cap))


class Linear:
    """A weight matrix (out, in) as float64, with |W| kept for the bounds."""

    def __init__(self, weight):
        self.weight = np.asarray(weight, dtype=np.float64)
        self.abs = np.abs(self.weight)

    @property
    def fan_in(self) -> int:
        return self.weight.shape[1]


@dataclass(frozen=True)
class Terms:
    """Part of a dot product whose terms are all exact inputs (a token's row of a table).

    Args:
        value: the exact sum of the terms; size: sum |terms|; count: how many terms.
    """

    value: np.ndarray
    size: np.ndarray
    count: int

    def __getitem__(self, index) -> Terms:
        return Terms(self.value[index], self.size[index], self.count)


def affine(products: list[tuple[Approx, Linear]], fixed: Terms | None = None) -> Approx:
    """fixed + sum_k x_k @ W_k^T: one dot product of all the terms, summed in any order.

    Args:
        products: (x (B, in), W (out, in)) pairs.
        fixed: terms over exact inputs (biases, a token's input term), or None.
    """
    n = sum(w.fan_in for _, w in products)
    value = sum(x.value @ w.weight.T for x, w in products)
    size = sum(x.magnitude @ w.abs.T for x, w in products)
    if fixed is not None:
        n += fixed.count
        value = value + fixed.value
        size = size + fixed.size
    propagated = sum(x.radius @ w.abs.T for x, w in products)
    radius = propagated + DOT_ROUNDING * math.sqrt(n) * U * size + TINY
    return Approx(value, np.minimum(radius, RADIUS_CAP))


def bias_terms(*biases) -> Terms:
    """Exact bias vectors as the fixed terms of a dot product."""
    b = [np.asarray(x, dtype=np.float64) for x in biases]
    return Terms(sum(b), sum(np.abs(x) for x in b), len(b))


def activation_value(name: str, z: np.ndarray) -> np.ndarray:
    """tanh, sigmoid, relu or identity of exact values z."""
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * z))
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "identity":
        return z
    raise ValueError(f"unknown activation {name!r}")


def activation(name: str, z: Approx) -> Approx:
    """tanh, sigmoid, relu or identity of z, elementwise."""
    value = activation_value(name, z.value)
    low = np.maximum(np.abs(z.value) - z.radius, 0.0)  # the smallest |z| in the interval
    # the largest derivative over the interval
    if name == "tanh":
        slope = 1.0 - np.tanh(low) ** 2
    elif name == "sigmoid":
        s = activation_value("sigmoid", low)
        slope = s * (1.0 - s)
    elif name == "relu":
        slope = (z.value + z.radius > 0).astype(np.float64)
    else:
        slope = 1.0
    # Logistic and tanh kernels round to a few ulp of 1 as well (see the module docstring).
    scale = None
    if name in _SATURATING:
        size = np.abs(value)
        scale = np.maximum(size, 1.0 - size)
    return _elementwise(value, slope * z.radius, radius_cap(name), scale)


def radius_cap(name: str) -> float:
    """The largest radius an activation's output gets: for a saturating function the
    width of its range (plus the last bits a kernel may round past its end), since both
    results lie in it; else RADIUS_CAP / 2. A radius at the cap says nothing."""
    return _SATURATING.get(name, RADIUS_CAP / 2) * (1 + 1e-6)


def multiply(a: Approx, b: Approx) -> Approx:
    """a * b, elementwise (broadcasting)."""
    propagated = np.abs(a.value) * b.radius + np.abs(b.value) * a.radius + a.radius * b.radius
    return _elementwise(a.value * b.value, propagated)


def add(a: Approx, b: Approx) -> Approx:
    """a + b, elementwise (broadcasting)."""
    return _elementwise(a.value + b.value, a.radius + b.radius)


def one_minus(a: Approx) -> Approx:
    """1 - a, elementwise."""
    return _elementwise(1.0 - a.value, a.radius)


def interpolate(z: Approx, n: Approx, h: Approx) -> Approx:
    """(1 - z) * n + z * h, elementwise: a GRU's new state from its update gate z.

    Propagated exactly (the function is bilinear): d = dz (h - n) + (1 - z) dn + z dh +
    dz (dh - dn). The rounding is the largest of the ways of writing it in float32
    kernels, each of which rounds its own results (magnitudes over the intervals; a fused
    multiply-add rounds less): (1 - z) * n + z * h rounds 1 - z, both products and the
    sum; n + z * (h - n) (PyTorch's) the difference, the product and the sum;
    n + z * h - z * n both products, the sum and the difference.
    """
    value = (1.0 - z.value) * n.value + z.value * h.value
    propagated = (
        z.radius * np.abs(h.value - n.value)
        + np.abs(1.0 - z.value) * n.radius
        + np.abs(z.value) * h.radius
        + z.radius * (n.radius + h.radius)
    )
    mz, mn, mh = z.magnitude, n.magnitude, h.magnitude
    m1z = np.abs(1.0 - z.value) + z.radius
    mhn = np.abs(h.value - n.value) + h.radius + n.radius
    result = np.abs(value) + propagated
    size = np.maximum.reduce(
        [
            2 * m1z * mn + mz * mh + result,
            2 * mz * mhn + result,
            2 * mz * mh + mn + mz * mn + result,
        ]
    )
    # (1 + 8 e): a kernel's input already carries the earlier kernels' rounding
    e = ELEMENTWISE_ROUNDING * U
    radius = propagated + e * (1 + 8 * e) * size + 4 * TINY
    return Approx(value, np.minimum(radius, RADIUS_CAP))


def log_softmax(y: Approx) -> Approx:
    """log_softmax over the last axis.

    d lp_i = dy_i - sum_j p_j dy_j; over the interval each p_j is at most exp(2 max r)
    times its value, so |d lp_i| <= r_i + exp(2 max r) sum_j p_j r_j. The kernel's own
    rounding: the subtraction of the maximum, the exponentials, their sum and its log.
    """
    top = y.value.max(axis=-1, keepdims=True)
    shifted = y.value - top
    lse = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    value = shifted - lse
    p = np.exp(value)
    widest = y.radius.max(axis=-1, keepdims=True)
    with np.errstate(over="ignore"):
        # Past a radius of 100 the bound says nothing (and exp() would overflow).
        spread = np.exp(2 * np.minimum(widest, 100.0))
        propagated = y.radius + spread * (p * y.radius).sum(axis=-1, keepdims=True)
        propagated = np.where(widest > 100.0, RADIUS_CAP, np.minimum(propagated, RADIUS_CAP))
        scale = np.abs(shifted) + lse + np.abs(value) + 1.0 + 2 * propagated
        radius = propagated + ELEMENTWISE_ROUNDING * U * scale + TINY
    return Approx(value, np.minimum(radius, RADIUS_CAP))


def select(keep_new: np.ndarray, new: Approx, old: Approx) -> Approx:
    """Per row: new where keep_new (B,) is True, old where a padded row keeps its state."""
    mask = keep_new.reshape(-1, *([1] * (new.value.ndim - 1)))
    return Approx(np.where(mask, new.value, old.value), np.where(mask, new.radius, old.radius))


def stack(parts: list[Approx]) -> Approx:
    """Approx values stacked along a new first axis (per-layer states -> (L, B, H))."""
    return Approx(np.stack([p.value for p in parts]), np.stack([p.radius for p in parts]))
