"""The rounding model: every radius covers what float32 arithmetic really does, in any order.

Each test computes the same function the way a float32 runtime might (sums in several
orders, with and without fused multiply-add, in lanes, a few ulp off in elementwise
kernels) and checks that the error against the exact result stays within the radius;
and that the radius is not vacuous (a wrong input of a few times it is caught).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnn_export.parity import bounds
from rnn_export.parity.bounds import Approx, Linear, Terms, activation, affine, log_softmax

U = bounds.U
pytestmark = pytest.mark.parity


def _sum_f32(terms: np.ndarray, order, fma: bool = True) -> np.ndarray:
    """Sequential float32 sums of terms (..., n) in the given order of the last axis."""
    acc = np.zeros(terms.shape[:-1], dtype=np.float32)
    for k in order:
        t = terms[..., k] if fma else terms[..., k].astype(np.float32)
        acc = (acc.astype(np.float64) + t).astype(np.float32)  # one rounding per addition
    return acc


def _lanes_f32(terms: np.ndarray, lanes: int = 16) -> np.ndarray:
    """Sums in `lanes` interleaved accumulators, then a pairwise tree, as SIMD kernels do."""
    n = terms.shape[-1]
    parts = [_sum_f32(terms, range(j, n, lanes)) for j in range(lanes)]
    while len(parts) > 1:
        parts = [
            (parts[i].astype(np.float64) + parts[i + 1]).astype(np.float32)
            for i in range(0, len(parts), 2)
        ]
    return parts[0]


@pytest.fixture(scope="module")
def dot_products():
    """Rows x (B, 2H) of [input, state] against W (H, 2H), terms cancelling like a trained
    recurrence's (a large input term nearly undone by the recurrent term)."""
    rng = np.random.default_rng(0)
    B, H = 64, 64
    x = rng.normal(size=(B, H)).astype(np.float32)
    h = np.tanh(rng.normal(size=(B, H))).astype(np.float32)
    W = (rng.normal(size=(H, H)) / math.sqrt(H)).astype(np.float32)
    R = -(W * 0.9 + rng.normal(size=(H, H)).astype(np.float32) * 0.1 / math.sqrt(H))
    b = rng.normal(size=H).astype(np.float32) * 0.1
    return x, h, W.astype(np.float32), R.astype(np.float32), b


def test_affine_radius_covers_every_summation_order(dot_products):
    x, h, W, R, b = dot_products
    exact_terms = np.concatenate(
        [
            x.astype(np.float64)[:, None, :] * W.astype(np.float64)[None],
            h.astype(np.float64)[:, None, :] * R.astype(np.float64)[None],
            np.broadcast_to(b.astype(np.float64)[None, :, None], (x.shape[0], W.shape[0], 1)),
        ],
        axis=-1,
    )  # (B, H, 2H + 1)
    z = affine(
        [(Approx.exact(x), Linear(W)), (Approx.exact(h), Linear(R))],
        Terms(b.astype(np.float64), np.abs(b.astype(np.float64)), 1),
    )
    np.testing.assert_allclose(z.value, exact_terms.sum(axis=-1), rtol=1e-12, atol=1e-12)
    n = exact_terms.shape[-1]
    rng = np.random.default_rng(1)
    orders = {
        "index order, FMA": (range(n), True),
        "index order, no FMA": (range(n), False),
        "reversed": (range(n - 1, -1, -1), True),
        **{f"random order {i}": (rng.permutation(n), False) for i in range(3)},
    }
    worst = {}
    for name, (order, fma) in orders.items():
        got = _sum_f32(exact_terms, order, fma)
        worst[name] = float((np.abs(got - z.value) / z.radius).max())
    worst["16 lanes"] = float((np.abs(_lanes_f32(exact_terms) - z.value) / z.radius).max())
    # The largest share any order takes leaves room for orders not tried.
    assert max(worst.values()) <= 0.75, worst
    # Not vacuous: the radius is tiny against the values.
    assert float(np.median(z.radius / (np.abs(z.value) + 1e-3))) < 1e-4


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "relu", "identity"])
def test_activation_radius_covers_its_interval(name):
    """Any input within the radius, through a kernel 8 ulp off: within the output radius."""
    rng = np.random.default_rng(2)
    z = Approx(rng.normal(scale=3.0, size=4000), np.abs(rng.normal(scale=1e-3, size=4000)))
    y = activation(name, z)
    f = {
        "tanh": np.tanh,
        "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
        "relu": lambda v: np.maximum(v, 0.0),
        "identity": lambda v: v,
    }[name]
    for edge in (-1.0, -0.37, 0.5, 1.0):
        inputs = z.value + edge * z.radius
        got = f(inputs) * (1 + rng.uniform(-16, 16, size=inputs.shape) * U)
        assert (np.abs(got - y.value) <= y.radius).all(), name


def test_log_softmax_radius_covers_perturbed_logits():
    rng = np.random.default_rng(3)
    y = Approx(rng.normal(scale=4.0, size=(500, 7)), np.full((500, 7), 1e-4))
    lp = log_softmax(y)

    def exact(v):
        top = v.max(axis=-1, keepdims=True)
        return v - top - np.log(np.exp(v - top).sum(axis=-1, keepdims=True))

    np.testing.assert_allclose(lp.value, exact(y.value), rtol=0, atol=1e-12)
    for _ in range(20):
        moved = y.value + rng.uniform(-1, 1, size=y.value.shape) * y.radius
        assert (np.abs(exact(moved) - lp.value) <= lp.radius).all()
    # the allowance is of the size of the propagated error, not far larger
    assert float(lp.radius.max()) < 4 * 1e-4


def test_radius_of_a_saturating_function_stops_at_its_range():
    z = Approx(np.array([0.0, 5.0]), np.array([1e30, 1e30]))
    assert (activation("tanh", z).radius <= 2.0 * (1 + 1e-6)).all()
    assert (activation("sigmoid", z).radius <= 1.0 * (1 + 1e-6)).all()


def test_a_wrong_input_of_a_few_radii_is_caught(dot_products):
    """The allowance is not so wide that a real error hides in it."""
    x, h, W, R, b = dot_products
    z = affine([(Approx.exact(x), Linear(W)), (Approx.exact(h), Linear(R))])
    wrong = W.astype(np.float64).copy()
    wrong[0, 0] += 10 * float(z.radius[:, 0].max()) / float(np.abs(x[:, 0]).min() + 1e-9)
    got = x.astype(np.float64) @ wrong.T + h.astype(np.float64) @ R.T
    assert float((np.abs(got - z.value) / z.radius)[:, 0].max()) > 10


def test_sigmoid_radius_covers_a_kernel_accurate_to_ulp_of_one():
    """A logistic kernel computed from 1/2 + ... (onnxruntime's) rounds to ulp of 1, so a
    tiny sigmoid is off by many ulp of itself: still within the radius."""
    x = np.linspace(-30.0, 30.0, 6001).astype(np.float32)
    y = activation("sigmoid", Approx.exact(x))
    f = np.float32
    half_tanh = (f(0.5) + f(0.5) * np.tanh(f(0.5) * x)).astype(np.float64)
    ratio = np.abs(half_tanh - y.value) / y.radius
    assert ratio.max() <= 0.5, ratio.max()
    # the same error relative to the result: far beyond 16 ulp where the result is tiny
    assert (np.abs(half_tanh - y.value) / y.value).max() > 1e3 * U


def test_tanh_radius_covers_a_kernel_accurate_to_ulp_of_one():
    """tanh from exponentials, (1 - e^-2x) / (1 + e^-2x) in float32 as the ONNX recurrent
    operators define it, loses ulps of 1 where 1 - e^-2x cancels: within the radius even
    where tanh is tiny (an exactly representable pre-activation: nothing else widens it)."""
    x = np.concatenate([np.linspace(-9.0, 9.0, 6001), np.geomspace(1e-7, 1e-2, 2001)])
    x = x.astype(np.float32)
    y = activation("tanh", Approx.exact(x))
    e = np.exp(np.float32(-2.0) * x)
    from_exp = ((np.float32(1.0) - e) / (np.float32(1.0) + e)).astype(np.float64)
    ratio = np.abs(from_exp - y.value) / y.radius
    assert ratio.max() <= 0.5, ratio.max()
    # the same error relative to the result: far beyond 16 ulp where the result is tiny
    tiny = (np.abs(y.value) > 0) & (np.abs(y.value) < 1e-3)
    assert (np.abs(from_exp - y.value)[tiny] / np.abs(y.value[tiny])).max() > 1e3 * U


def _blends(z, n, h):
    """(1 - z) n + z h in float32 the ways kernels write it."""
    f32 = np.float32
    z, n, h = (v.astype(f32) for v in (z, n, h))
    return {
        "onnx": (f32(1) - z) * n + z * h,
        "pytorch": n + z * (h - n),
        "expanded": n + z * h - z * n,
        "fma": ((f32(1) - z) * n).astype(np.float64) + z.astype(np.float64) * h,
    }


def test_interpolate_radius_covers_every_way_of_writing_it():
    rng = np.random.default_rng(4)
    N = 20000
    z = Approx(rng.uniform(0, 1, N), rng.uniform(0, 1e-6, N))
    n = Approx(rng.uniform(-1, 1, N), rng.uniform(0, 1e-5, N))
    h = Approx(rng.uniform(-3, 3, N), rng.uniform(0, 1e-5, N))
    y = bounds.interpolate(z, n, h)
    np.testing.assert_allclose(y.value, (1 - z.value) * n.value + z.value * h.value, atol=1e-15)
    worst = 0.0
    for edges in [(-1, 1, -1), (1, -1, 1), (1, 1, 1), (0.3, -0.7, 0.1)]:
        moved = [v.value + e * v.radius for v, e in zip((z, n, h), edges, strict=True)]
        for name, got in _blends(*moved).items():
            ratio = np.abs(got.astype(np.float64) - y.value) / y.radius
            assert ratio.max() <= 1.0, name
            worst = max(worst, float(ratio.max()))
    assert worst > 0.3  # the propagated part is tight: the corners reach it
    # exact inputs: only the kernels' rounding, of the size of a few ulp
    exact = bounds.interpolate(*(Approx.exact(v.value.astype(np.float32)) for v in (z, n, h)))
    for name, got in _blends(z.value, n.value, h.value).items():
        ratio = np.abs(got.astype(np.float64) - exact.value) / exact.radius
        assert 1e-3 < ratio.max() <= 0.5, (name, ratio.max())
