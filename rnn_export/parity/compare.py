"""One output of the file against the float64 reference, its allowance and PyTorch float32.

An output passes when |file - float64| <= allowance at every element (the allowance of
rnn_export.parity.bounds), and, when a plain tolerance was asked for, also
|file - PyTorch float32| <= atol + rtol * |PyTorch float32|.

Non-finite values: an element where both sides are the same infinity counts as equal
(as in numpy.testing.assert_allclose); a NaN on either side (also on both), or an
infinity the other side does not match, is an infinite error and fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rnn_export.parity.bounds import Approx


class CaseFailure(Exception):
    """A case that produced no comparable outputs; the message is recorded in the report."""


@dataclass(frozen=True)
class Tolerance:
    """A plain float32 tolerance against PyTorch float32, checked in addition when asked."""

    atol: float
    rtol: float

    def to_dict(self) -> dict:
        return {"atol": self.atol, "rtol": self.rtol}


@dataclass(frozen=True)
class OutputCheck:
    """How far one output of the file is from the references, in one case.

    Attributes:
        output: "log_probs" or a state output name ("hn").
        ratio: max over elements of |file - float64| / allowance: passes at <= 1.
        error, allowance: |file - float64| and the allowance at that worst element.
        vs_f64: max |file - float64|.
        vs_torch: max |file - PyTorch float32| (None: PyTorch was not run).
        torch_vs_f64: max |PyTorch float32 - float64|.
        torch_ratio: PyTorch float32's own max |error| / allowance: how much of the
            allowance a correct float32 implementation uses.
        min_atol: with a plain tolerance, the smallest atol that passes at its rtol.
        tolerance: the plain tolerance, or None.
    """

    output: str
    ratio: float
    error: float
    allowance: float
    vs_f64: float
    vs_torch: float | None = None
    torch_vs_f64: float | None = None
    torch_ratio: float | None = None
    min_atol: float | None = None
    tolerance: Tolerance | None = None

    @property
    def within_allowance(self) -> bool:
        return self.ratio <= 1.0

    @property
    def within_tolerance(self) -> bool | None:
        if self.tolerance is None:
            return None
        return self.min_atol <= self.tolerance.atol

    @property
    def passed(self) -> bool:
        return self.within_allowance and self.within_tolerance is not False

    def to_dict(self) -> dict:
        return {
            "output": self.output,
            "passed": self.passed,
            "ratio": number(self.ratio),
            "error": number(self.error),
            "allowance": number(self.allowance),
            "vs_f64": number(self.vs_f64),
            "vs_torch": optional(self.vs_torch),
            "torch_vs_f64": optional(self.torch_vs_f64),
            "torch_ratio": optional(self.torch_ratio),
            "min_atol": optional(self.min_atol),
            "within_tolerance": self.within_tolerance,
        }


def abs_diff(a, b) -> np.ndarray:
    """|a - b| as float64; 0 where both are the same infinity, inf where either is NaN."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a - b)
    bad = np.isnan(diff)  # a NaN on either side, or the same infinity on both (inf - inf)
    if bad.any():
        diff[bad & (a == b)] = 0.0  # equal infinities (NaN == NaN is False)
        diff[bad & ~(a == b)] = np.inf
    return diff


def compare(
    got,
    reference: Approx,
    output: str,
    torch=None,
    tolerance: Tolerance | None = None,
    ratios: np.ndarray | None = None,
) -> OutputCheck:
    """The errors of `got` (the file, float32) against the references, same shape.

    Args:
        got: the file's output.
        reference: the float64 reference with its allowance (radius).
        output: the output's name, for the report.
        torch: PyTorch float32's output on the same inputs, or None.
        tolerance: a plain tolerance against PyTorch float32, or None.
        ratios: `error_ratios(got, reference)` when the caller has computed them already.

    Raises:
        CaseFailure: got has another shape than the reference.
    """
    got = np.asarray(got)
    check_shape(got, reference, output)
    if got.size == 0:
        return OutputCheck(output, 0.0, 0.0, 0.0, 0.0)
    diff = abs_diff(got, reference.value)
    if ratios is None:
        ratios = diff / reference.radius
    worst = np.unravel_index(int(np.argmax(ratios)), ratios.shape)
    check = dict(
        output=output,
        ratio=float(ratios[worst]),
        error=float(diff[worst]),
        allowance=float(reference.radius[worst]),
        vs_f64=float(diff.max()),
    )
    if torch is not None:
        torch = np.asarray(torch)
        own = abs_diff(torch, reference.value)
        check.update(
            vs_torch=float(abs_diff(got, torch).max()),
            torch_vs_f64=float(own.max()),
            torch_ratio=float((own / reference.radius).max()),
        )
        if tolerance is not None:
            scale = np.abs(torch.astype(np.float64))
            with np.errstate(invalid="ignore"):
                excess = abs_diff(got, torch) - tolerance.rtol * np.where(
                    np.isfinite(scale), scale, 0.0
                )
            excess = np.nan_to_num(excess, nan=np.inf, posinf=np.inf)
            check.update(min_atol=max(0.0, float(excess.max())), tolerance=tolerance)
    return OutputCheck(**check)


def check_shape(got: np.ndarray, reference: Approx, output: str) -> None:
    """Raises CaseFailure when got's shape is not the reference's."""
    if got.shape != reference.value.shape:
        raise CaseFailure(
            f"{output} has shape {got.shape}; the model gives {reference.value.shape}"
        )


def error_ratios(got, reference: Approx) -> np.ndarray:
    """|got - reference| / allowance, elementwise (inf where got is NaN)."""
    got = np.asarray(got)
    check_shape(got, reference, "output")
    return abs_diff(got, reference.value) / reference.radius


def number(x: float):
    """A float for JSON: infinities and NaN become strings."""
    return x if math.isfinite(x) else str(x)


def optional(x: float | None):
    return None if x is None else number(x)
