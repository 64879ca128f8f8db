"""compare: one output against the float64 reference's allowance and PyTorch float32."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnn_export.parity.bounds import Approx
from rnn_export.parity.compare import CaseFailure, Tolerance, abs_diff, compare

pytestmark = pytest.mark.parity


def _ref(value, radius):
    return Approx(np.asarray(value, dtype=np.float64), np.asarray(radius, dtype=np.float64))


def test_ratio_error_and_allowance_are_those_of_the_worst_element():
    ref = _ref([1.0, 2.0, 3.0], [1e-6, 1e-3, 1e-6])
    got = np.array([1.0 + 5e-7, 2.0 + 9e-4, 3.0 - 3e-6])
    o = compare(got, ref, "hn", torch=np.array([1.0, 2.0, 3.0]))
    assert o.ratio == pytest.approx(3.0)  # element 2: 3e-6 / 1e-6
    assert o.error == pytest.approx(3e-6) and o.allowance == 1e-6
    assert o.vs_f64 == pytest.approx(9e-4)  # the largest error is elsewhere, within its own
    assert o.torch_vs_f64 == 0.0 and o.torch_ratio == 0.0
    assert o.vs_torch == pytest.approx(9e-4)
    assert not o.passed and not o.within_allowance


def test_an_error_equal_to_its_allowance_passes_and_one_just_over_fails():
    ref = _ref([0.5], [2.0**-20])
    assert compare(np.array([0.5 + 2.0**-20]), ref, "hn").passed
    assert not compare(np.array([0.5 + 2.0**-20 * (1 + 2.0**-30)]), ref, "hn").passed


@pytest.mark.parametrize(
    "got, exact, ratio",
    [
        ([np.inf, 1.0], [np.inf, 1.0], 0.0),  # the same infinity is equal
        ([-np.inf, 1.0], [np.inf, 1.0], math.inf),
        ([3e38, 1.0], [np.inf, 1.0], math.inf),
        ([np.nan, 1.0], [0.0, 1.0], math.inf),  # NaN fails in the file
        ([0.0, 1.0], [np.nan, 1.0], math.inf),  # ... and in the reference
        ([np.nan, 1.0], [np.nan, 1.0], math.inf),  # ... and in both
    ],
)
def test_non_finite_values(got, exact, ratio):
    o = compare(np.array(got), _ref(exact, [1e30, 1e-6]), "hn")
    assert o.ratio == ratio
    assert o.passed == (ratio == 0.0)


def test_abs_diff_is_float64_and_exact_for_finite_values():
    a = np.array([1.0, 2.0], dtype=np.float32)
    assert abs_diff(a, a + np.float32(2.0**-20)).dtype == np.float64
    np.testing.assert_array_equal(abs_diff([1.0, -np.inf], [1.0 + 2**-40, -np.inf]), [2**-40, 0])


def test_shape_mismatch_is_a_case_failure():
    with pytest.raises(CaseFailure, match=r"hn has shape \(2, 3\); the model gives \(3, 2\)"):
        compare(np.zeros((2, 3)), _ref(np.zeros((3, 2)), np.ones((3, 2))), "hn")


def test_plain_tolerance_reports_the_smallest_passing_atol():
    ref = _ref([1.0, -2.0], [1.0, 1.0])  # a wide allowance: only the tolerance can fail
    torch = np.array([1.0, -2.0])
    got = np.array([1.0, -2.5])
    o = compare(got, ref, "hn", torch, Tolerance(atol=1e-5, rtol=1e-4))
    assert o.within_allowance and o.within_tolerance is False and not o.passed
    np.testing.assert_allclose(o.min_atol, 0.5 - 1e-4 * 2.0, rtol=1e-12)
    assert compare(got, ref, "hn", torch, Tolerance(o.min_atol, 1e-4)).passed
    assert compare(got, ref, "hn", torch).within_tolerance is None
