"""What a verify run found: per case and provider, the drift of the long streams, the verdict.

The JSON form (`ParityReport.to_json`, `rnn-export verify --report`) is described in
docs/formats.md; REPORT_SCHEMA is its version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import rnn_export.parity.bounds as bounds
from rnn_export.errors import InputError
from rnn_export.parity.compare import OutputCheck, Tolerance, number

REPORT_SCHEMA = 2
# Families of cases: the local-error checks and the whole runs.
LOCAL = "local error"
FAMILY_ORDER = (
    LOCAL,
    "shapes",
    "zero-state",
    "mixed-lengths",
    "validation",
    "step-by-step",
    "chunks",
    "stream",
    "step model",
    "user module",
    "labels",
)


@dataclass(frozen=True)
class CaseResult:
    """One case under one provider.

    Args:
        provider: "cpu" or "cuda".
        name: unique within a provider and family, e.g. "B=17 T=1000 random h0".
        family: one of FAMILY_ORDER.
        batch_size: B (for local-error cases: the number of start states).
        length: T, or "min..max" for cases whose rows have different lengths.
        outputs: one OutputCheck per output (empty when `error` is set).
        agreement: on real inputs, the fraction of rows (or steps) whose top label is
            float64's.
        clear_disagreements: rows (or steps) whose top label differs from float64's
            while float64's margin between the two labels is wider than their
            allowances: float32 rounding cannot flip those.
        detail: where the worst element is, for cases over many start states.
        error: why the case produced no comparable outputs (onnxruntime raised, shapes).
    """

    provider: str
    name: str
    family: str
    batch_size: int
    length: int | str
    outputs: tuple[OutputCheck, ...] = ()
    agreement: float | None = None
    clear_disagreements: int | None = None
    detail: str | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(o.passed for o in self.outputs)

    @property
    def ratio(self) -> float:
        """The worst output's error / allowance (inf for a case that raised)."""
        if self.error is not None:
            return float("inf")
        return max((o.ratio for o in self.outputs), default=0.0)

    @property
    def worst(self) -> OutputCheck | None:
        return max(self.outputs, key=lambda o: o.ratio, default=None)

    def to_dict(self) -> dict:
        return {
            "provider": self.provider,
            "name": self.name,
            "family": self.family,
            "batch_size": self.batch_size,
            "length": self.length,
            "passed": self.passed,
            "ratio": number(self.ratio),
            "error": self.error,
            "detail": self.detail,
            "agreement": self.agreement,
            "clear_disagreements": self.clear_disagreements,
            "outputs": [o.to_dict() for o in self.outputs],
        }


@dataclass(frozen=True)
class ProviderStatus:
    """Whether a provider was run, skipped (under "all") or unavailable (asked for by name).

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
    """Errors against the step index over one long stream through one runner.

    Args:
        runner: "cpu", "cpu, step model", "cuda".
        steps: single-token steps.
        window: steps per window; window i covers steps [i * window, (i + 1) * window).
        windows: output -> figure -> one value per window, figures "vs_torch",
            "vs_f64", "torch_vs_f64" (max absolute errors) and "ratio" (max error /
            allowance).
        agreement: fraction of steps whose top label is float64's; torch_agreement:
            the same for PyTorch float32.
        per_step: output -> figure -> (steps,) array, the same figures per step (plots).
    """

    runner: str
    steps: int
    window: int
    windows: dict[str, dict[str, list[float]]]
    agreement: float
    torch_agreement: float
    per_step: dict[str, dict[str, np.ndarray]] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "runner": self.runner,
            "steps": self.steps,
            "window": self.window,
            "window_starts": list(range(0, self.steps, self.window)),
            "windows": {
                output: {k: [number(x) for x in v] for k, v in figures.items()}
                for output, figures in self.windows.items()
            },
            "agreement": self.agreement,
            "torch_agreement": self.torch_agreement,
        }


@dataclass
class ParityReport:
    """Every figure of one verify run; `passed` is the verdict."""

    model: str
    checkpoint: str
    checkpoint_sha256: str
    model_info: dict
    providers: list[ProviderStatus]
    cases: list[CaseResult]
    drift: list[DriftCurve]
    tolerance: Tolerance | None = None
    wall_s: float = 0.0

    @property
    def passed(self) -> bool:
        ran = any(p.status == "ran" for p in self.providers)
        unavailable = any(p.status == "unavailable" for p in self.providers)
        return ran and not unavailable and all(c.passed for c in self.cases)

    def failures(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.passed]

    def deciding(self) -> CaseResult | None:
        """The case that decided the verdict: the first that raised, else the worst ratio."""
        raised = [c for c in self.cases if c.error is not None]
        if raised:
            return raised[0]
        return max(self.cases, key=lambda c: c.ratio, default=None)

    def rule(self) -> str:
        """The acceptance rule in one line."""
        rule = (
            f"|file - float64| <= float32 allowance at every element (dot products "
            f"{bounds.DOT_ROUNDING:g} sqrt(n) u sum|terms|, elementwise "
            f"{bounds.ELEMENTWISE_ROUNDING:g} u |result|, of max(|y|, 1 - |y|) for sigmoid "
            "and tanh, u = 2^-24, carried through the model)"
        )
        if self.tolerance is not None:
            rule += (
                f"; and |file - torch| <= {self.tolerance.atol:g} + {self.tolerance.rtol:g} |torch|"
            )
        return rule

    def summary_line(self) -> str:
        """One line: PASS/FAIL, the check that decided, its error / allowance, the counts."""
        verdict = "PASS" if self.passed else "FAIL"
        failed = self.failures()
        counts = (
            f"{len(failed)} of {len(self.cases)} checks failed"
            if failed
            else f"{len(self.cases)} checks passed"
        )
        missing = [p.name for p in self.providers if p.status == "unavailable"]
        if missing:
            counts += f"; provider {', '.join(missing)} asked for but unavailable"
        case = self.deciding()
        if case is None:
            return f"{verdict}: no check ran ({counts}); {self.wall_s:.1f} s"
        where = f"{case.provider}/{case.family}: {case.name}"
        if case.error is not None:
            return f"{verdict}: {where} raised: {_clip(case.error, 160)} ({counts})"
        o = case.worst
        margin = (
            f"{o.output} error {o.error:.2e} is {o.ratio:.3g} of its allowance {o.allowance:.2e}"
            if o.ratio <= 1
            else f"{o.output} error {o.error:.2e} is {o.ratio:.3g}x its allowance {o.allowance:.2e}"
        )
        if o.within_tolerance is False:
            margin += f"; over the plain tolerance (min atol {o.min_atol:.2e})"
        return f"{verdict}: worst {where}, {margin} ({counts}; {self.wall_s:.1f} s)"

    def to_dict(self) -> dict:
        case = self.deciding()
        return {
            "schema_version": REPORT_SCHEMA,
            "passed": self.passed,
            "summary_line": self.summary_line(),
            "deciding": None if case is None else case.to_dict(),
            "model": self.model,
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
            "model_info": self.model_info,
            "rule": self.rule(),
            "rounding": {
                "unit_roundoff": bounds.U,
                "dot_rounding": bounds.DOT_ROUNDING,
                "elementwise_rounding": bounds.ELEMENTWISE_ROUNDING,
            },
            "tolerance": None if self.tolerance is None else self.tolerance.to_dict(),
            "providers": [p.to_dict() for p in self.providers],
            "families": self.families(),
            "cases": [c.to_dict() for c in self.cases],
            "drift": [d.to_dict() for d in self.drift],
            "wall_s": round(self.wall_s, 3),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)

    def families(self) -> list[dict]:
        """Per provider and family: cases, failures, the worst ratio and PyTorch's own."""
        rows: dict[tuple, dict] = {}
        for case in self.cases:
            row = rows.setdefault(
                (case.provider, case.family),
                {
                    "provider": case.provider,
                    "family": case.family,
                    "cases": 0,
                    "failed": 0,
                    "ratio": 0.0,
                    "torch_ratio": 0.0,
                },
            )
            row["cases"] += 1
            row["failed"] += not case.passed
            row["ratio"] = max(row["ratio"], case.ratio)
            torch = [o.torch_ratio for o in case.outputs if o.torch_ratio is not None]
            row["torch_ratio"] = max([row["torch_ratio"], *torch])
        order = {f: i for i, f in enumerate(FAMILY_ORDER)}
        out = sorted(rows.values(), key=lambda r: (r["provider"], order.get(r["family"], 99)))
        for r in out:
            r["ratio"] = number(r["ratio"])
            r["torch_ratio"] = number(r["torch_ratio"])
        return out

    def format_table(self) -> str:
        """The report as plain text for people: the summary line first, then the table."""
        from rnn_export.parity.table import format_report

        return format_report(self)

    def plot_drift(self, path: str | Path) -> Path:
        """Draw the streams' errors against the step index and every family's worst ratio."""
        from rnn_export.parity.plot import plot_report

        return plot_report(self, Path(path))


class ParityError(Exception):
    """At least one parity check failed; `.report` holds every figure."""

    def __init__(self, report: ParityReport):
        self.report = report
        super().__init__(report.summary_line())


class ParityUsageError(InputError):
    """Bad input to a parity check: unreadable files, a model and checkpoint that do not
    belong together, an unknown provider name."""


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
