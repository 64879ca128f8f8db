"""Parity checks: does an exported .onnx file compute what its checkpoint's PyTorch model computes?

`verify_parity` runs the PyTorch model (the reference) and onnxruntime, under each
execution provider asked for, over a matrix of cases: batch sizes x lengths with random
initial states, zero initial states, mixed lengths in one padded batch, the run's own
validation split, the model driven one token at a time and in random chunks with its
state fed back, and a long stream whose error is recorded against the step index (drift).
A file that embeds a step model (what the runtime steps streams through on the CPU) has
it checked too, on the CPU: family "step model", the one-token-per-call cases and the
long stream driven through it.

Tolerance. With a = onnxruntime, b = PyTorch float32 and x = the same PyTorch model run
in float64 from the same inputs, per case and output:

    min_atol = max(|a - b| - rtol * |b|), clipped at 0   (the smallest atol that passes)
    noise    = max |b - x|                               (PyTorch float32's own error)
    eff_atol = max(atol, 2 * noise)                      (atol alone with strict=True)
    pass    <=> min_atol <= eff_atol

PyTorch float32 is itself only an approximation of the model's function; a trained
recurrence amplifies rounding, so two correct float32 implementations that round
differently can be further apart than atol. By the triangle inequality, an export no less
accurate than PyTorch float32 (|a - x| <= noise) is within 2 * noise of PyTorch, so that
is the error a correct export may have. When noise <= atol / 2 (every well-conditioned
model) the rule is the plain |a - b| <= atol + rtol * |b|. The long stream is one case
(noise over all its steps); its windows show their own noise and 2 * noise as a drift
diagnostic only: which library rounds worse within a given window is chance (measured on
the trained stacked tanh run: onnxruntime 12x PyTorch's error against float64 in steps
0-499, PyTorch the worse one later; 1.25x over the whole stream), so a per-window rule
would fail correct exports.

Non-finite values: an element where a and b are the same infinity counts as equal (as in
numpy.testing.assert_allclose); a NaN in either (also in both), or an infinity the other
does not match, is an infinite error and fails. An infinite noise (PyTorch float32
overflowed where float64 did not) gives no allowance: the effective atol is atol.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
BATCH_SIZES = (1, 8, 17)
# A traced export fixes T to its example's length (7 tokens in the example);
# verify tries that length, much longer ones and 1.
EXAMPLE_LENGTH = 7
LONG_LENGTH = 1000
STREAM_STEPS = 10_000
DRIFT_WINDOWS = 20
OUTPUTS = ("log_probs", "hn")
# A failing output within this factor of PyTorch float32's own error against float64 is
# reported as rounding (a diagnosis only: it never turns a failure into a pass).
ROUNDING_RATIO = 4


class ParityUsageError(ValueError):
    """Bad input to a parity check: unreadable files, a model and checkpoint that do not
    belong together, an unknown provider name."""


class ParityError(Exception):
    """At least one parity case failed; `.report` holds every case's figures."""

    def __init__(self, report: ParityReport):
        self.report = report
        failed = report.failures()
        names = ", ".join(f"{c.provider}/{c.name}" for c in failed[:5])
        more = f" (+{len(failed) - 5} more)" if len(failed) > 5 else ""
        bad = [p for p in report.providers if p.status == "unavailable"]
        parts = []
        if failed:
            parts.append(f"{len(failed)} of {len(report.cases)} cases failed: {names}{more}")
        parts += [f"provider {p.name} asked for but unavailable: {p.reason}" for p in bad]
        super().__init__(f"parity check failed ({report.rule()}): " + "; ".join(parts))


@dataclass(frozen=True)
class OutputError:
    """How far one output of onnxruntime (a) is from PyTorch's (b) in one case.

    torch_vs_f64 is the noise: max |PyTorch float32 - PyTorch float64| (the same model in
    float64 from the same inputs); onnx_vs_f64 is max |onnxruntime - PyTorch float64|.
    eff_atol = max(atol, 2 * noise) (atol under strict; None: atol) is what min_atol is
    held to. When a case fails, onnx_vs_f64 against torch_vs_f64 tells float32 rounding
    amplified by the model (close) from an export that computes something else (far above).

    """

    output: str
    max_abs: float
    max_rel: float
    min_atol: float
    atol: float
    rtol: float
    torch_vs_f64: float | None = None
    onnx_vs_f64: float | None = None
    eff_atol: float | None = None

    @property
    def noise(self) -> float | None:
        return self.torch_vs_f64

    @property
    def effective_atol(self) -> float:
        return self.atol if self.eff_atol is None else self.eff_atol

    @property
    def passed(self) -> bool:
        return self.min_atol <= self.effective_atol

    def to_dict(self) -> dict:
        return {
            "output": self.output,
            "max_abs": _num(self.max_abs),
            "max_rel": _num(self.max_rel),
            "atol": self.atol,
            "rtol": self.rtol,
            "min_atol": _num(self.min_atol),
            "noise": _opt(self.noise),
            "eff_atol": _num(self.effective_atol),
            "passed": self.passed,
            "torch_vs_f64": _opt(self.torch_vs_f64),
            "onnx_vs_f64": _opt(self.onnx_vs_f64),
        }


@dataclass(frozen=True)
class CaseResult:
    """One case under one provider.

    Args:
        provider: "cpu" or "cuda".
        name: unique within a provider, e.g. "B=17 T=1000 random h0".
        family: shapes | zero-state | mixed-lengths | validation | step-by-step | chunks | stream
            | step model (the embedded step model: one token per call and the long stream).
        batch_size: B.
        length: T, or "min..max" for cases whose rows have different lengths.
        outputs: the errors of log_probs and hn (empty when `error` is set).
        agreement: on real inputs, the fraction of rows whose top label is the same.
        error: why the case produced no comparable outputs (onnxruntime raised, shapes differ).
    """

    provider: str
    name: str
    family: str
    batch_size: int
    length: int | str
    outputs: tuple[OutputError, ...] = ()
    agreement: float | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(o.passed for o in self.outputs)

    def to_dict(self) -> dict:
        return {
            "provider": self.provider,
            "name": self.name,
            "family": self.family,
            "batch_size": self.batch_size,
            "length": self.length,
            "passed": self.passed,
            "error": self.error,
            "agreement": self.agreement,
            "outputs": [o.to_dict() for o in self.outputs],
        }


@dataclass(frozen=True)
class ProviderStatus:
    """Whether a provider was run, skipped (under "all") or unavailable (asked for explicitly).

    placement: for a provider that ran, execution provider -> op types of the kernels
    that ran there, from one profiled call per graph branch (T=1, B=1, B>1).
    """

    name: str
    execution_provider: str
    status: str  # "ran" | "skipped" | "unavailable"
    reason: str | None = None
    placement: dict[str, list[str]] | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "execution_provider": self.execution_provider,
            "status": self.status,
            "reason": self.reason,
            "placement": self.placement,
        }


@dataclass
class DriftCurve:
    """Error against step index over one long stream under one provider.

    Args:
        provider: "cpu" or "cuda".
        steps: number of single-token steps.
        window: steps per window; window i covers steps [i * window, (i + 1) * window).
        max_abs: output -> max absolute error in each window.
        min_atol: output -> smallest passing atol (at the report's rtol) in each window.
        torch_vs_f64: output -> max |PyTorch float32 - PyTorch float64| in each window: the
            window's noise.
        eff_atol: output -> max(atol, 2 * the window's noise) (atol if strict): a
            diagnostic; the stream passes or fails as one case (see the module docstring).
        onnx_vs_f64: output -> max |onnxruntime - PyTorch float64| in each window.
        per_step, per_step_torch_vs_f64: output -> (steps,) the same per step (for plots;
            not in JSON).
    """

    provider: str
    steps: int
    window: int
    max_abs: dict[str, list[float]]
    min_atol: dict[str, list[float]]
    torch_vs_f64: dict[str, list[float]]
    eff_atol: dict[str, list[float]] = field(default_factory=dict)
    onnx_vs_f64: dict[str, list[float]] = field(default_factory=dict)
    per_step: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    per_step_torch_vs_f64: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "provider": self.provider,
            "steps": self.steps,
            "window": self.window,
            "window_starts": list(range(0, self.steps, self.window)),
            "max_abs": {k: [_num(x) for x in v] for k, v in self.max_abs.items()},
            "min_atol": {k: [_num(x) for x in v] for k, v in self.min_atol.items()},
            "torch_vs_f64": {k: [_num(x) for x in v] for k, v in self.torch_vs_f64.items()},
            "noise": {k: [_num(x) for x in v] for k, v in self.torch_vs_f64.items()},
            "eff_atol": {k: [_num(x) for x in v] for k, v in self.eff_atol.items()},
            "onnx_vs_f64": {k: [_num(x) for x in v] for k, v in self.onnx_vs_f64.items()},
            "within_window_eff_atol": {k: self.within_window(k) for k in self.min_atol},
        }

    def within_window(self, output: str) -> list[bool]:
        """Per window: min_atol <= the window's own eff_atol (diagnostic)."""
        return [m <= e for m, e in zip(self.min_atol[output], self.eff_atol[output], strict=True)]


@dataclass
class ParityReport:
    """Every figure of one verify run; `passed` is the verdict."""

    model: str
    checkpoint: str
    checkpoint_sha256: str
    model_info: dict
    atol: float
    rtol: float
    providers: list[ProviderStatus]
    cases: list[CaseResult]
    drift: list[DriftCurve]
    wall_s: float = 0.0
    strict: bool = False

    @property
    def passed(self) -> bool:
        ran = any(p.status == "ran" for p in self.providers)
        unavailable = any(p.status == "unavailable" for p in self.providers)
        return ran and not unavailable and all(c.passed for c in self.cases)

    def failures(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.passed]

    def rule(self) -> str:
        """The acceptance rule in one line."""
        if self.strict:
            return (
                f"strict: |onnx - torch| <= atol + rtol*|torch|, atol {self.atol:g}, "
                f"rtol {self.rtol:g}"
            )
        return (
            f"|onnx - torch| <= eff_atol + rtol*|torch|, eff_atol = max(atol, 2*noise), "
            f"noise = max|torch f32 - torch f64|; atol {self.atol:g}, rtol {self.rtol:g}"
        )

    def diagnosis(self) -> str | None:
        """What the float64 diagnostics say about the failing outputs (None if none failed).

        A failing output whose onnx~f64 is within ROUNDING_RATIO x torch~f64 is consistent
        with float32 rounding amplified by the model; one further out points at the file.
        """
        failing = [o for c in self.cases for o in c.outputs if not o.passed]
        if not failing:
            return None
        far = [o for o in failing if not o.onnx_vs_f64 <= ROUNDING_RATIO * (o.torch_vs_f64 or 0.0)]
        if not far:
            return (
                f"all {len(failing)} failing outputs are within {ROUNDING_RATIO}x of PyTorch "
                "float32's own error against float64: consistent with float32 rounding "
                "amplified by the model, not with a different computation"
            )
        return (
            f"{len(far)} of {len(failing)} failing outputs are further from float64 than "
            f"{ROUNDING_RATIO}x PyTorch float32's own error: the file computes something else"
        )

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "model": self.model,
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
            "model_info": self.model_info,
            "atol": self.atol,
            "rtol": self.rtol,
            "strict": self.strict,
            "tolerance": (
                "|onnx - torch| <= atol + rtol * |torch|, elementwise"
                if self.strict
                else "|onnx - torch| <= eff_atol + rtol * |torch|, elementwise, with "
                "eff_atol = max(atol, 2 * noise) and noise = max |torch float32 - torch "
                "float64| per case and output (the 10,000-step stream is one case)"
            ),
            "providers": [p.to_dict() for p in self.providers],
            "summary": self.summary(),
            "diagnosis": self.diagnosis(),
            "cases": [c.to_dict() for c in self.cases],
            "drift": [d.to_dict() for d in self.drift],
            "wall_s": round(self.wall_s, 3),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)

    def summary(self) -> list[dict]:
        """Per provider, family and output: the worst errors over the family's cases."""
        rows: dict[tuple, dict] = {}
        for case in self.cases:
            key = (case.provider, case.family)
            row = rows.setdefault(
                key,
                {"provider": case.provider, "family": case.family, "cases": 0, "failed": 0},
            )
            row["cases"] += 1
            row["failed"] += not case.passed
            for o in case.outputs:
                stats = ("max_abs", "max_rel", "min_atol", "noise", "eff_atol", "onnx_vs_f64")
                for stat in stats:
                    k = f"{o.output}_{stat}"
                    value = o.effective_atol if stat == "eff_atol" else getattr(o, stat)
                    row[k] = max(row.get(k, 0.0), value or 0.0)
        return [
            {k: _num(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows.values()
        ]

    def format_table(self) -> str:
        """The report as a plain-text table for people."""
        info = self.model_info
        lines = [
            f"model       {self.model}",
            f"checkpoint  {self.checkpoint} (sha256 {self.checkpoint_sha256[:12]}...)",
            f"arch        {info['arch']}, H={info['hidden_size']}, L={info['num_layers']}, "
            f"{info['nonlinearity']}, opset {info['opset']}",
            f"tolerance   {self.rule()}",
        ]
        for p in self.providers:
            why = f": {p.reason}" if p.reason else ""
            lines.append(f"provider    {p.name} ({p.execution_provider}) {p.status.upper()}{why}")
            for ep, ops in (p.placement or {}).items():
                lines.append(f"            kernels on {ep}: {', '.join(ops)}")
        lines.append("")
        header = (
            f"{'prov':<5} {'family':<13} {'case':<26} {'B':>4} {'T':>9}  {'output':<9} "
            f"{'max abs':>9} {'max rel':>9} {'min atol':>9} {'eff atol':>9}  result  "
            f"{'noise':>9} {'onnx~f64':>9}"
        )
        lines += [header, "-" * len(header)]
        for c in self.cases:
            head = f"{c.provider:<5} {c.family:<13} {c.name:<26} {c.batch_size:>4} {c.length!s:>9}"
            if c.error is not None:
                error = c.error if len(c.error) <= 160 else c.error[:157] + "..."
                lines.append(f"{head}  ERROR: {error}")
                continue
            for i, o in enumerate(c.outputs):
                prefix = head if i == 0 else " " * len(head)
                verdict = "ok" if o.passed else "FAIL"
                lines.append(
                    f"{prefix}  {o.output:<9} {_fmt(o.max_abs)} {_fmt(o.max_rel)} "
                    f"{_fmt(o.min_atol)} {_fmt(o.effective_atol)}  {verdict:<6}  "
                    f"{_fmt(o.noise)} {_fmt(o.onnx_vs_f64)}"
                )
            if c.agreement is not None:
                lines.append(f"{'':<{len(head)}}  decision agreement {c.agreement:.2%}")
        for d in self.drift:
            lines += [
                "",
                f"drift ({d.provider}): per window of {d.window} steps, max |onnx - torch|, "
                "the window's noise (PyTorch float32's own error against float64) and "
                "max(atol, 2 * that noise); * marks a window over it (a diagnostic: the "
                "stream passes or fails as one case)",
                f"  {'steps':<13} "
                + " ".join(
                    f"{o:>10} {'noise':>9} {'eff atol':>9}  {'onnx~f64':>9}" for o in d.max_abs
                ),
            ]
            within = {o: d.within_window(o) for o in d.max_abs}
            for i in range(len(d.max_abs[OUTPUTS[0]])):
                cells = [
                    f"{_fmt(d.max_abs[o][i]):>10} {_fmt(d.torch_vs_f64[o][i])} "
                    f"{_fmt(d.eff_atol[o][i])}{' ' if within[o][i] else '*'} "
                    f"{_fmt(d.onnx_vs_f64[o][i])}"
                    for o in d.max_abs
                ]
                lines.append(f"  {_span(d, i):<13} " + " ".join(cells))
        failed = self.failures()
        lines += [
            "",
            "min atol: the smallest atol that passes at this rtol. noise: max |PyTorch "
            "float32 - PyTorch float64| (torch~f64); onnx~f64: max |onnx - float64|.",
            "eff atol: "
            + (
                "atol (--strict: no allowance for PyTorch's own rounding)."
                if self.strict
                else "max(atol, 2 * noise): an export no less accurate than PyTorch float32 "
                "is within 2 * noise of it. An output passes when min atol <= eff atol."
            ),
            "inf: a NaN, or an infinity the other side does not match.",
        ]
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(
            f"{verdict}: {len(self.cases) - len(failed)} of {len(self.cases)} cases within "
            f"tolerance{' (strict)' if self.strict else ''}; wall time {self.wall_s:.1f} s"
        )
        for p in self.providers:
            if p.status == "unavailable":
                lines.append(f"FAILED: provider {p.name} was asked for but is unavailable")
        diagnosis = self.diagnosis()
        if diagnosis is not None:
            lines.append(f"diagnosis: {diagnosis}")
        return "\n".join(lines)

    def plot_drift(self, path: str | Path) -> Path:
        """Draw the drift curves (error against step index) to a PNG file."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        fig, axes = plt.subplots(len(OUTPUTS), 1, figsize=(9, 6), sharex=True)
        for ax, output in zip(axes, OUTPUTS, strict=True):
            for d in self.drift:
                if output in d.per_step:
                    ax.plot(d.per_step[output], lw=0.4, alpha=0.5, label=f"{d.provider} per step")
                    floor = d.per_step_torch_vs_f64[output]
                    label = f"|torch f32 - f64| ({d.provider} run)"
                    ax.plot(floor, lw=0.4, alpha=0.4, color="gray", label=label)
                # the last window's value repeated at the end, so that it is drawn too
                edges = [*range(0, d.steps, d.window), d.steps]
                values = [*d.max_abs[output], d.max_abs[output][-1]]
                label = f"{d.provider} window max"
                ax.step(edges, values, where="post", lw=1.5, label=label)
                if not self.strict and output in d.eff_atol:
                    eff = [*d.eff_atol[output], d.eff_atol[output][-1]]
                    label = f"{d.provider} window's max(atol, 2 noise) (diagnostic)"
                    ax.step(edges, eff, where="post", lw=1, ls=":", color="darkred", label=label)
                for case in self.cases:
                    if _stream_of(case, d) and case.outputs:
                        (o,) = [o for o in case.outputs if o.output == output]
                        label = f"{d.provider} stream eff atol {o.effective_atol:.2g} (pass/fail)"
                        ax.axhline(o.effective_atol, color="black", ls="-.", lw=1, label=label)
            ax.axhline(self.atol, color="red", ls="--", lw=1, label=f"atol {self.atol:g}")
            ax.set_yscale("log")
            ax.set_ylabel(f"{output}\nmax |onnx - torch|")
            ax.legend(fontsize=7, loc="upper left")
        if not self.drift:
            axes[0].set_title("no drift stream was run (no provider available)")
        else:
            axes[0].set_title(f"drift over a {self.drift[0].steps}-step stream, one token per call")
        axes[-1].set_xlabel("step")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def _stream_of(case: CaseResult, curve: DriftCurve) -> bool:
    """Whether case is the long-stream case that curve was drawn from."""
    if case.batch_size != 1 or case.length != curve.steps or "token/call" not in case.name:
        return False
    if case.family == "stream":
        return curve.provider == case.provider
    return case.family == "step model" and curve.provider == f"{case.provider}, step model"


def parse_providers(spec: str | Sequence[str]) -> list[tuple[str, bool]]:
    """Provider names from "cpu", "cuda", "all" or "cpu,cuda" (or a sequence of names).

    Returns:
        [(name, explicit)]: explicit is False under "all", where an unavailable provider
        is skipped instead of failing.

    Raises:
        ParityUsageError: an unknown name, or "all" mixed with other names.
    """
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip().lower() for n in names if n.strip()]
    if not names:
        raise ParityUsageError(
            f"expected a provider list such as 'cpu' or 'cpu,cuda'; got {spec!r}"
        )
    if "all" in names:
        if names != ["all"]:
            raise ParityUsageError(f"'all' cannot be combined with other providers; got {spec!r}")
        return [(name, False) for name in PROVIDERS]
    unknown = [n for n in names if n not in PROVIDERS]
    if unknown:
        raise ParityUsageError(
            f"unknown provider {unknown[0]!r}; expected one of {', '.join(PROVIDERS)} or 'all'"
        )
    return [(n, True) for n in dict.fromkeys(names)]


def compare(
    got, want, atol: float, rtol: float, output: str, exact=None, *, strict: bool = False
) -> OutputError:
    """The errors of `got` (onnxruntime) against `want` (PyTorch float32), same shape.

    Args:
        got, want: the two float32 results.
        atol, rtol: the tolerance.
        output: the output's name, for the report.
        exact: the same output of the PyTorch model run in float64, or None. Given, it
            sets noise = max |want - exact| and eff_atol = max(atol, 2 * noise).
        strict: eff_atol = atol whatever the noise.

    An element where got and want are the same infinity counts as equal; a NaN in either,
    or an infinity not matched by the same infinity, is an infinite error (it fails).
    """
    a = np.asarray(got, dtype=np.float64)
    b = np.asarray(want, dtype=np.float64)
    if a.shape != b.shape:
        raise CaseFailure(f"{output} has shape {a.shape}; PyTorch gives {b.shape}")
    diff = _abs_diff(a, b)
    noise = onnx_vs_f64 = None
    eff_atol = atol
    if exact is not None:
        x = np.asarray(exact, dtype=np.float64)
        noise, onnx_vs_f64 = _max(_abs_diff(b, x)), _max(_abs_diff(a, x))
        eff_atol = effective_atol(atol, noise, strict)
    if diff.size == 0:
        return OutputError(output, 0.0, 0.0, 0.0, atol, rtol, noise, onnx_vs_f64, eff_atol)
    scale = np.abs(b)
    nonzero = scale > 0
    with np.errstate(invalid="ignore"):
        rel = diff[nonzero] / scale[nonzero]
    excess = _excess(diff, scale, rtol)
    max_rel = float(rel.max()) if rel.size else (0.0 if diff.max() == 0 else math.inf)
    if math.isinf(diff.max()):
        max_rel = math.inf  # also where the reference is 0
    return OutputError(
        output=output,
        max_abs=float(diff.max()),
        max_rel=max_rel,
        min_atol=max(0.0, float(np.nan_to_num(excess, nan=np.inf, posinf=np.inf).max())),
        atol=atol,
        rtol=rtol,
        torch_vs_f64=noise,
        onnx_vs_f64=onnx_vs_f64,
        eff_atol=eff_atol,
    )


def effective_atol(atol: float, noise: float, strict: bool = False) -> float:
    """max(atol, 2 * noise): what a correct export may be off by, given PyTorch float32's
    own error `noise` against float64. atol when strict, or when noise is not finite (an
    overflow in PyTorch float32 excuses nothing)."""
    if strict or not math.isfinite(noise):
        return atol
    return max(atol, 2.0 * noise)


def _abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| as float64; 0 where both are the same infinity, inf where either is NaN."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a - b)
    diff[a == b] = 0.0  # equal infinities (NaN == NaN is False: stays NaN)
    diff[np.isnan(diff)] = np.inf
    return diff


def _excess(diff: np.ndarray, scale: np.ndarray, rtol: float) -> np.ndarray:
    """diff - rtol * scale elementwise, scale = |want| (an infinite one gives no allowance)."""
    with np.errstate(invalid="ignore"):
        return diff - rtol * np.where(np.isfinite(scale), scale, 0.0)


def _max(x: np.ndarray) -> float:
    return float(x.max()) if x.size else 0.0


def verify_parity(
    onnx_path: str | Path,
    checkpoint,
    providers: str | Sequence[str] = ("cpu",),
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    *,
    strict: bool = False,
    example_length: int = EXAMPLE_LENGTH,
    stream_steps: int = STREAM_STEPS,
    seed: int = 0,
    threads: int = 1,
) -> ParityReport:
    """Run the PyTorch model and the ONNX file side by side over the parity cases.

    Args:
        onnx_path: a file written by `rnn-export convert`.
        checkpoint: its RUN_DIR (str or Path) or a loaded Checkpoint.
        providers: "cpu", "cuda", "all", "cpu,cuda" or a sequence of names.
        atol, rtol: the float32 tolerance: an output passes when
            max(|onnx - torch| - rtol * |torch|) <= eff_atol = max(atol, 2 * noise), where
            noise = max |torch float32 - torch float64| in that case (over all its steps
            on the stream): an export no less accurate than PyTorch float32 is within
            2 * noise of it. See the module docstring.
        strict: eff_atol = atol: no allowance for PyTorch float32's own rounding.
        example_length: the "export example" length: one of the lengths tried, with
            16x it as the "many times longer" one. A file whose T was fixed at export
            passes at its own length and fails at the others.
        stream_steps: length of the drift stream (one token per call).
        seed: seeds every random token, state and length.
        threads: intra-op threads for PyTorch and onnxruntime. The cases are many small
            calls, for which one thread is fastest (spinning thread pools cost more than
            they save, badly so on a busy machine); results do not depend on it.

    Returns:
        The ParityReport (report.passed is True).

    Raises:
        ParityUsageError: unreadable files, a model and checkpoint that do not belong
            together (the checkpoint's sha256 differs from the file's provenance), an
            unknown provider name.
        ParityError: any case out of tolerance, or a provider asked for explicitly that
            is unavailable; `.report` holds everything.
    """
    started = time.perf_counter()
    if atol < 0 or rtol < 0:
        raise ParityUsageError(f"tolerances must be >= 0; got atol {atol}, rtol {rtol}")
    if stream_steps < 1:
        raise ParityUsageError(f"stream_steps must be >= 1; got {stream_steps}")
    if threads < 1:
        raise ParityUsageError(f"threads must be >= 1; got {threads}")
    if example_length < 1:
        raise ParityUsageError(f"example_length must be >= 1; got {example_length}")
    wanted = parse_providers(providers)
    ckpt = _load_checkpoint(checkpoint)
    onnx_path = Path(onnx_path)
    meta, meta_session = _open_model(onnx_path, threads)
    _check_belongs(meta, ckpt, onnx_path)

    reference = _TorchReference(ckpt.model, threads)
    rng = np.random.default_rng(seed)
    cases = _plan_cases(ckpt, example_length, rng)
    stream_tokens = rng.integers(0, ckpt.config.vocab_size, size=(1, stream_steps))
    stream_ref = None

    statuses, results, drift = [], [], []
    for name, explicit in wanted:
        runner, status = _open_runner(onnx_path, meta, name, explicit, meta_session, threads)
        statuses.append(status)
        if runner is None:
            continue
        for case in cases:
            results.append(case.run(runner, reference, atol, rtol, strict))
        if stream_ref is None:
            stream_ref = _stream_reference(reference, stream_tokens)
        result, curve = _run_stream(runner, stream_tokens, stream_ref, atol, rtol, strict)
        results.append(result)
        if curve is not None:
            drift.append(curve)
        if name == "cpu" and meta.step is not None:
            step_runner = _open_step_runner(meta, name, threads)
            if isinstance(step_runner, CaseResult):
                results.append(step_runner)  # the step model would not load
                continue
            for case in cases:
                if case.family == "step-by-step":
                    results.append(case.run(step_runner, reference, atol, rtol, strict))
            result, curve = _run_stream(step_runner, stream_tokens, stream_ref, atol, rtol, strict)
            results.append(result)
            if curve is not None:
                drift.append(curve)

    report = ParityReport(
        model=str(onnx_path),
        checkpoint=str(ckpt.run_dir),
        checkpoint_sha256=ckpt.sha256,
        model_info={
            "arch": meta.arch,
            "hidden_size": meta.hidden_size,
            "num_layers": meta.num_layers,
            "nonlinearity": meta.nonlinearity,
            "vocab_size": meta.vocab_size,
            "num_classes": meta.num_classes,
            "opset": meta.opset,
            "example_length": example_length,
            "stream_steps": stream_steps,
        },
        atol=atol,
        rtol=rtol,
        providers=statuses,
        cases=results,
        drift=drift,
        strict=strict,
    )
    report.wall_s = time.perf_counter() - started
    if not report.passed:
        raise ParityError(report)
    return report


# --- loading and matching -------------------------------------------------------------


def _load_checkpoint(checkpoint):
    if not isinstance(checkpoint, str | Path):
        return checkpoint
    from rnn_export.checkpoint import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(checkpoint)
    except CheckpointError as e:
        raise ParityUsageError(f"cannot load the checkpoint: {e}") from None


def _open_model(path: Path, threads: int):
    """Read and validate the file's metadata and signature through a CPU session."""
    from rnn_runtime.metadata import MetadataError, check_signature, read_metadata

    if not path.is_file():
        raise ParityUsageError(
            f"{path}: expected an .onnx file made by `rnn-export convert`; not found"
        )
    try:
        session = _session(path, PROVIDERS["cpu"], threads)
    except _ort_errors() as e:
        raise ParityUsageError(f"{path}: onnxruntime cannot load it: {e}") from None
    try:
        meta = read_metadata(session.get_modelmeta().custom_metadata_map)
        check_signature(meta, session.get_inputs(), session.get_outputs())
    except MetadataError as e:
        raise ParityUsageError(f"{path}: {e}") from None
    if len(meta.states) != 1:
        raise ParityUsageError(
            f"{path}: expected one state tensor; the metadata lists {len(meta.states)}"
        )
    return meta, session


def _check_belongs(meta, ckpt, path: Path) -> None:
    if meta.checkpoint_sha256 != ckpt.sha256:
        raise ParityUsageError(
            f"{path} was exported from a checkpoint with sha256 {meta.checkpoint_sha256}; "
            f"{ckpt.run_dir} has sha256 {ckpt.sha256}: model and checkpoint do not belong together"
        )
    cfg = ckpt.config
    pairs = {
        "arch": (meta.arch, cfg.arch),
        "hidden_size": (meta.hidden_size, cfg.hidden_size),
        "num_layers": (meta.num_layers, cfg.num_layers),
        "nonlinearity": (meta.nonlinearity, cfg.nonlinearity),
        "labels": (meta.labels, cfg.labels),
        "vocab": (meta.vocab, tuple(ckpt.vocab.tokens)),
    }
    for key, (in_file, in_ckpt) in pairs.items():
        if in_file != in_ckpt:
            raise ParityUsageError(
                f"{path} metadata says {key} {in_file!r:.80}; the checkpoint has {in_ckpt!r:.80}"
            )


def _ort_errors() -> tuple[type[BaseException], ...]:
    """The runtime's onnxruntime errors, plus EPFail: a provider that fails to start."""
    from onnxruntime.capi import onnxruntime_pybind11_state as s

    from rnn_runtime.model import ORT_ERRORS

    return (*ORT_ERRORS, s.EPFail)


def _session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # A failing case raises and is recorded in the report; onnxruntime's own error log
    # would only repeat it on stderr.
    options.log_severity_level = 4
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def _session(path: Path, execution_provider: str, threads: int):
    import onnxruntime as ort

    options = _session_options(threads)
    return ort.InferenceSession(str(path), options, providers=[execution_provider])


def _open_runner(path: Path, meta, name: str, explicit: bool, cpu_session, threads: int):
    """A runner on provider `name`, or None with the reason it is unavailable."""
    import onnxruntime as ort

    ep = PROVIDERS[name]
    status = "unavailable" if explicit else "skipped"
    available = ort.get_available_providers()
    if ep not in available:
        reason = (
            f"{ep} is not available in this onnxruntime build (available: "
            f"{', '.join(available)}); CUDA needs the gpu extra (onnxruntime-gpu) and a CUDA GPU"
        )
        return None, ProviderStatus(name, ep, status, reason)
    if ep == PROVIDERS["cpu"]:
        session = cpu_session
    else:
        try:
            session = _session(path, ep, threads)
        except _ort_errors() as e:
            return None, ProviderStatus(name, ep, status, f"{ep} failed to start: {e}")
    # onnxruntime may fall back to the CPU when a provider fails to initialise: refuse it.
    running = session.get_providers()
    if not running or running[0] != ep:
        reason = f"asked for {ep}, but the session runs on {running}"
        return None, ProviderStatus(name, ep, status, reason)
    placement = _placement(path, ep, threads, meta)
    # Shape bookkeeping may run on the CPU by design; the arithmetic must not.
    on_cpu = set(placement.get(PROVIDERS["cpu"], [])) & _COMPUTE_OPS
    if ep != PROVIDERS["cpu"] and on_cpu:
        reason = f"asked for {ep}, but these kernels ran on the CPU: {', '.join(sorted(on_cpu))}"
        return None, ProviderStatus(name, ep, status, reason, placement)
    return _OrtRunner(session, meta, name), ProviderStatus(name, ep, "ran", None, placement)


# Kernels that do the model's arithmetic: on a non-CPU provider none may run on the CPU.
# (Integer shape arithmetic such as Add or Gather may legitimately stay on the CPU.)
_COMPUTE_OPS = {"RNN", "Scan", "Loop", "Gemm", "FusedGemm", "MatMul", "Tanh", "Relu", "LogSoftmax"}


def _placement(path: Path, ep: str, threads: int, meta) -> dict[str, list[str]]:
    """Execution provider -> op types of the kernels that ran there, read from onnxruntime's
    profile of one call per graph branch (T=1; T>1 at B=1; T>1 at B>1)."""
    import tempfile

    import onnxruntime as ort

    options = _session_options(threads)
    state = meta.states[0]
    with tempfile.TemporaryDirectory(prefix="rnn-export-profile-") as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=[ep])
        for B, T in ((1, 1), (1, 3), (2, 3)):
            feed = {
                meta.tokens.name: np.zeros((B, T), dtype=np.int64),
                state.input: np.zeros(state.concrete_shape(B), dtype=np.float32),
                meta.lengths.name: np.full(B, T, dtype=np.int64),
            }
            try:
                session.run(None, feed)
            except _ort_errors():
                continue  # a broken model: its cases record the error
        events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    placement: dict[str, set[str]] = {}
    for event in events:
        if event.get("cat") == "Node" and "provider" in event.get("args", {}):
            args = event["args"]
            placement.setdefault(args["provider"], set()).add(args.get("op_name", "?"))
    return {k: sorted(v) for k, v in sorted(placement.items())}


@contextmanager
def _torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class CaseFailure(Exception):
    """A case that produced no comparable outputs; the message is recorded in the report."""


class _OrtRunner:
    """Calls one onnxruntime session with the names the metadata gives."""

    def __init__(self, session, meta, provider: str):
        import onnxruntime as ort

        self.session = session
        self.provider = self.label = provider
        self.family = None  # the case's own family
        self.errors = _ort_errors()
        state = meta.states[0]
        self.inputs = (meta.tokens.name, state.input, meta.lengths.name)
        self.outputs = [meta.log_probs.name, state.output]
        self.run_options = ort.RunOptions()
        self.run_options.log_severity_level = 4

    def __call__(self, tokens, state, lengths):
        """(B, T) tokens, state, (B,) lengths -> (log_probs, new state) as numpy arrays."""
        feed = dict(zip(self.inputs, (tokens, state, lengths), strict=True))
        try:
            log_probs, new_state = self.session.run(self.outputs, feed, self.run_options)
        except self.errors as e:
            raise CaseFailure(f"onnxruntime raised {type(e).__name__}: {e}") from None
        return log_probs, new_state


class _OrtStepRunner:
    """The file's embedded step model, called like the main graph with T = 1.

    The step model takes token (B,) and one (B, H) state per layer; the state is split
    into layers and the new layers stacked back, so cases compare it like the main graph.
    """

    family = "step model"

    def __init__(self, session, meta, provider: str):
        import onnxruntime as ort

        from rnn_runtime.model import run_step_model

        self._run = run_step_model
        self.session = session
        self.provider = provider
        self.label = f"{provider}, step model"
        self.errors = _ort_errors()
        self.step = meta.step
        self.run_options = ort.RunOptions()
        self.run_options.log_severity_level = 4

    def __call__(self, tokens, state, lengths):
        if tokens.shape[1] != 1 or not (lengths == 1).all():
            raise CaseFailure(f"the step model takes one token per call; got T={tokens.shape[1]}")
        try:
            return self._run(
                self.session, self.step, np.ascontiguousarray(tokens[:, 0]), state, self.run_options
            )
        except self.errors as e:
            raise CaseFailure(f"onnxruntime raised {type(e).__name__}: {e}") from None


def _open_step_runner(meta, name: str, threads: int):
    """A runner on the embedded step model, or a failed CaseResult saying why it won't load."""
    import onnxruntime as ort

    from rnn_runtime.metadata import MetadataError

    try:
        session = ort.InferenceSession(
            meta.step.model_bytes(), _session_options(threads), providers=[PROVIDERS[name]]
        )
    except (MetadataError, *_ort_errors()) as e:
        return CaseResult(
            provider=name,
            name="load the embedded step model",
            family=_OrtStepRunner.family,
            batch_size=0,
            length=0,
            error=f"{type(e).__name__}: {e}",
        )
    return _OrtStepRunner(session, meta, name)


class _TorchReference:
    """The PyTorch model on numpy inputs; `exact` runs a float64 copy of it."""

    def __init__(self, model, threads: int):
        import copy

        self.model = model
        self.model64 = copy.deepcopy(model).double()
        self.threads = threads

    def __call__(self, tokens, state, lengths):
        return self._run(self.model, tokens, state, lengths)

    def exact(self, tokens, state, lengths):
        """The float64 model from the same (explicit) float32 state."""
        return self._run(self.model64, tokens, state.astype(np.float64), lengths)

    def _run(self, model, tokens, state, lengths):
        import torch

        with torch.inference_mode(), _torch_threads(self.threads):
            log_probs, new_state = model(
                torch.from_numpy(tokens),
                None if state is None else torch.from_numpy(state),
                None if lengths is None else torch.from_numpy(lengths),
            )
        return log_probs.numpy(), new_state.numpy()


# --- the cases ------------------------------------------------------------------------


@dataclass
class _Case:
    """Inputs of one case; the PyTorch result is computed once for every provider.

    torch_state / torch_lengths are what PyTorch gets (None: zeros / all of T), while
    onnxruntime always gets explicit tensors. `chunks` drives onnxruntime in pieces with
    the state fed back; labels give the decision agreement.
    """

    name: str
    family: str
    tokens: np.ndarray
    state: np.ndarray
    lengths: np.ndarray
    torch_state: np.ndarray | None
    torch_lengths: np.ndarray | None
    chunks: list[int] | None = None
    agreement: bool = False
    _want: tuple | None = None

    def reference(self, torch_ref):
        """(float32 outputs, float64 outputs) of PyTorch, computed once for all providers."""
        if self._want is None:
            self._want = (
                torch_ref(self.tokens, self.torch_state, self.torch_lengths),
                torch_ref.exact(self.tokens, self.state, self.torch_lengths),
            )
        return self._want

    @property
    def length(self):
        lo, hi = int(self.lengths.min()), int(self.lengths.max())
        return hi if lo == hi else f"{lo}..{hi}"

    def run(self, runner, torch_ref, atol, rtol, strict=False) -> CaseResult:
        B = self.tokens.shape[0]
        want, exact = self.reference(torch_ref)
        family = getattr(runner, "family", None) or self.family
        base = dict(provider=runner.provider, name=self.name, family=family, batch_size=B)
        try:
            got = self._drive(runner)
            outputs = tuple(
                compare(g, w, atol, rtol, name, x, strict=strict)
                for g, w, x, name in zip(got, want, exact, OUTPUTS, strict=True)
            )
        except CaseFailure as e:
            return CaseResult(**base, length=self.length, error=str(e))
        agreement = None
        if self.agreement:
            agreement = float(np.mean(got[0].argmax(axis=1) == want[0].argmax(axis=1)))
        return CaseResult(**base, length=self.length, outputs=outputs, agreement=agreement)

    def _drive(self, runner):
        if self.chunks is None:
            return runner(self.tokens, self.state, self.lengths)
        state, start = self.state, 0
        B = self.tokens.shape[0]
        for size in self.chunks:
            piece = np.ascontiguousarray(self.tokens[:, start : start + size])
            log_probs, state = runner(piece, state, np.full(B, size, dtype=np.int64))
            start += size
        return log_probs, state


def _plan_cases(ckpt, example_length: int, rng) -> list[_Case]:
    cfg = ckpt.config
    cases = []

    def add(name, family, B, T, *, random_h0=True, lengths=None, **kwargs):
        """A case on random tokens; PyTorch gets state=None for zeros, lengths=None for full."""
        tokens = rng.integers(0, cfg.vocab_size, size=(B, T), dtype=np.int64)
        if random_h0:
            h0 = rng.uniform(-1.0, 1.0, size=cfg.state_shape(B)).astype(np.float32)
        else:
            h0 = np.zeros(cfg.state_shape(B), dtype=np.float32)
        ort_lengths = np.full(B, T, dtype=np.int64) if lengths is None else lengths
        torch_state = h0 if random_h0 else None
        cases.append(_Case(name, family, tokens, h0, ort_lengths, torch_state, lengths, **kwargs))

    for B in BATCH_SIZES:
        for T in sorted({1, 2, example_length, 16 * example_length, LONG_LENGTH}):
            add(f"B={B} T={T} random h0", "shapes", B, T)
    for B, T in [(1, example_length), (17, example_length), (8, LONG_LENGTH)]:
        add(f"B={B} T={T} zero h0", "zero-state", B, T, random_h0=False)
    for B, T, random_h0 in [
        (8, 16 * example_length, True),
        (17, LONG_LENGTH, True),
        (17, 64, False),
    ]:
        lengths = rng.integers(1, T + 1, size=B, dtype=np.int64)
        lengths[0], lengths[-1] = T, 1  # both extremes in every batch
        kind = "random" if random_h0 else "zero"
        add(f"B={B} T<={T} {kind} h0", "mixed-lengths", B, T, random_h0=random_h0, lengths=lengths)
    cases += _validation_cases(ckpt)
    T = 256
    for B in (1, 3):
        add(f"B={B} T={T} 1 token/call", "step-by-step", B, T, chunks=[1] * T)
        # The same tokens and state in random chunks: reuse the last case's inputs.
        last = cases[-1]
        chunks = _random_chunks(T, max(2, 4 * example_length), rng)
        cases.append(
            _Case(
                f"B={B} T={T} {len(chunks)} chunks",
                "chunks",
                last.tokens,
                last.state,
                last.lengths,
                last.torch_state,
                None,
                chunks=chunks,
            )
        )
    return cases


def _random_chunks(T: int, largest: int, rng) -> list[int]:
    chunks = []
    while sum(chunks) < T:
        chunks.append(int(min(rng.integers(1, largest + 1), T - sum(chunks))))
    return chunks


def _validation_cases(ckpt, batch_size: int = 256) -> list[_Case]:
    """The run's own validation split, rebuilt from the checkpoint's data spec."""
    from rnn_export.data import DataError, encode_batch, load_splits

    try:
        _, val = load_splits(ckpt.data)
    except DataError as e:
        raise ParityUsageError(
            f"cannot rebuild the validation split of {ckpt.run_dir}: {e}"
        ) from None
    cases = []
    for start in range(0, len(val), batch_size):
        texts = [text for text, _ in val[start : start + batch_size]]
        tokens, lengths = encode_batch(texts, ckpt.vocab)
        B = len(texts)
        h0 = np.zeros(ckpt.config.state_shape(B), dtype=np.float32)
        name = f"rows {start}-{start + B - 1}"
        lengths = lengths.numpy()
        cases.append(
            _Case(name, "validation", tokens.numpy(), h0, lengths, None, lengths, agreement=True)
        )
    return cases


# --- the long stream ------------------------------------------------------------------


def _stream_reference(torch_ref, tokens):
    """PyTorch stepped one token at a time from zeros, in float32 and in float64.

    Returns:
        (f32, f64): each {"log_probs": (steps, C), "hn": (steps, *state_shape(1))}.
    """
    steps = tokens.shape[1]
    config = torch_ref.model.config
    shapes = {"log_probs": (config.num_classes,), "hn": config.state_shape(1)}
    f32 = {k: np.empty((steps, *v), dtype=np.float32) for k, v in shapes.items()}
    f64 = {k: np.empty((steps, *v), dtype=np.float64) for k, v in shapes.items()}
    state = np.zeros(config.state_shape(1), dtype=np.float32)
    state64 = state.astype(np.float64)
    for t in range(steps):
        token = np.ascontiguousarray(tokens[:, t : t + 1])
        log_probs, state = torch_ref(token, state, None)
        log_probs64, state64 = torch_ref.exact(token, state64, None)
        f32["log_probs"][t], f32["hn"][t] = log_probs[0], state
        f64["log_probs"][t], f64["hn"][t] = log_probs64[0], state64
    return f32, f64


def _run_stream(runner, tokens, ref, atol, rtol, strict=False):
    """onnxruntime stepped one token at a time; errors recorded at every step.

    The stream is judged as one case; per window, its noise and 2 * noise are recorded
    as the drift diagnostic."""
    steps = tokens.shape[1]
    name = f"B=1 {steps} steps 1 token/call"
    family = getattr(runner, "family", None) or "stream"
    base = dict(provider=runner.provider, name=name, family=family, batch_size=1, length=steps)
    want, exact = ref
    got = {k: np.empty_like(v) for k, v in want.items()}
    state = np.zeros_like(want["hn"][0])
    one = np.ones(1, dtype=np.int64)
    expected = ((1, *want["log_probs"].shape[1:]), state.shape)
    try:
        for t in range(steps):
            log_probs, state = runner(np.ascontiguousarray(tokens[:, t : t + 1]), state, one)
            if (log_probs.shape, state.shape) != expected:
                raise CaseFailure(
                    f"step {t}: onnxruntime gives log_probs {log_probs.shape}, state "
                    f"{state.shape}; PyTorch gives {expected[0]}, {expected[1]}"
                )
            got["log_probs"][t], got["hn"][t] = log_probs[0], state
    except CaseFailure as e:
        return CaseResult(**base, error=str(e)), None
    window = max(1, math.ceil(steps / DRIFT_WINDOWS))
    curve = DriftCurve(runner.label, steps, window, {}, {}, {})
    outputs = []
    for output in OUTPUTS:
        g, w, x = got[output], want[output], exact[output]
        per_step = _abs_diff(g, w).reshape(steps, -1)
        excess = _excess(per_step, np.abs(w.astype(np.float64)).reshape(steps, -1), rtol)
        floor = _abs_diff(w, x).reshape(steps, -1)
        curve.per_step[output] = per_step.max(axis=1)
        curve.per_step_torch_vs_f64[output] = floor.max(axis=1)
        starts = range(0, steps, window)
        curve.max_abs[output] = [float(per_step[i : i + window].max()) for i in starts]
        curve.min_atol[output] = [max(0.0, float(excess[i : i + window].max())) for i in starts]
        curve.torch_vs_f64[output] = [float(floor[i : i + window].max()) for i in starts]
        onnx_floor = _abs_diff(g, x).reshape(steps, -1)
        curve.onnx_vs_f64[output] = [float(onnx_floor[i : i + window].max()) for i in starts]
        curve.eff_atol[output] = [
            effective_atol(atol, noise, strict) for noise in curve.torch_vs_f64[output]
        ]
        outputs.append(compare(g, w, atol, rtol, output, x, strict=strict))
    return CaseResult(**base, outputs=tuple(outputs)), curve


def _span(curve: DriftCurve, i: int) -> str:
    """Steps of window i, e.g. "500-999"."""
    return f"{i * curve.window}-{min((i + 1) * curve.window, curve.steps) - 1}"


def _num(x: float):
    """A float for JSON: infinities and NaN become strings."""
    return x if math.isfinite(x) else str(x)


def _opt(x: float | None):
    return None if x is None else _num(x)


def _fmt(x: float | None) -> str:
    if x is None:
        return f"{'-':>9}"
    return f"{x:>9.2e}" if math.isfinite(x) else f"{x!s:>9}"
