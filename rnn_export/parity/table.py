"""A ParityReport as plain text: the summary line first, then per case and the drift."""

from __future__ import annotations

import math

from rnn_export.parity.compare import OutputCheck


def _fmt(x: float | None, width: int = 9) -> str:
    if x is None:
        return f"{'-':>{width}}"
    return f"{x:>{width}.2e}" if math.isfinite(x) else f"{x!s:>{width}}"


def _ratio(x: float | None, width: int = 7) -> str:
    if x is None:
        return f"{'-':>{width}}"
    if not math.isfinite(x):
        return f"{x!s:>{width}}"
    return f"{x:>{width}.3f}" if x < 10 else f"{x:>{width - 1}.0f}x"


def _output_cells(o: OutputCheck) -> str:
    return (
        f"{o.output:<9} {_ratio(o.ratio)} {_fmt(o.error)} {_fmt(o.allowance)} "
        f"{_fmt(o.vs_torch)} {_ratio(o.torch_ratio)}  {'ok' if o.passed else 'FAIL'}"
    )


def format_report(report) -> str:
    """The whole report for people (what `rnn-export verify` prints)."""
    info = report.model_info
    lines = [
        report.summary_line(),
        "",
        f"model       {report.model}",
        f"checkpoint  {report.checkpoint} (sha256 {report.checkpoint_sha256[:12]}...)",
        f"arch        {info['arch']}, H={info['hidden_size']}, L={info['num_layers']}, "
        f"{info['nonlinearity']}, opset {info['opset']}",
        f"rule        {report.rule()}",
    ]
    for p in report.providers:
        why = f": {p.reason}" if p.reason else ""
        lines.append(f"provider    {p.name} ({p.execution_provider}) {p.status.upper()}{why}")
        for ep, ops in (p.placement or {}).items():
            lines.append(f"            kernels on {ep}: {', '.join(ops)}")
    lines.append("")
    header = (
        f"{'prov':<5} {'family':<13} {'case':<42} {'B':>4} {'T':>7}  {'output':<9} "
        f"{'ratio':>7} {'error':>9} {'allowance':>9} {'vs torch':>9} {'torch r':>7}  result"
    )
    lines += [header, "-" * len(header)]
    for c in report.cases:
        head = f"{c.provider:<5} {c.family:<13} {c.name:<42} {c.batch_size:>4} {c.length!s:>7}"
        if c.error is not None:
            error = c.error if len(c.error) <= 160 else c.error[:157] + "..."
            lines.append(f"{head}  ERROR: {error}")
            continue
        for i, o in enumerate(c.outputs):
            prefix = head if i == 0 else " " * len(head)
            lines.append(f"{prefix}  {_output_cells(o)}")
        pad = " " * len(head)
        if c.detail is not None:
            lines.append(f"{pad}  {c.detail}")
        if c.agreement is not None:
            lines.append(
                f"{pad}  decision agreement with float64 {c.agreement:.2%}, "
                f"{c.clear_disagreements} at a clear margin"
            )
    for d in report.drift:
        outputs = list(d.windows)
        lines += [
            "",
            f"drift ({d.runner}): per window of {d.window} steps, max |file - torch f32|, "
            "|file - float64|, |torch f32 - float64| and error / allowance; decisions agree "
            f"with float64 at {d.agreement:.2%} of steps (PyTorch float32: "
            f"{d.torch_agreement:.2%})",
            f"  {'steps':<13} "
            + " ".join(f"{o[:9]:>9} {'~f64':>9} {'torch~f64':>9} {'ratio':>7}" for o in outputs),
        ]
        starts = range(0, d.steps, d.window)
        for i, s in enumerate(starts):
            span = f"{s}-{min(s + d.window, d.steps) - 1}"
            cells = [
                f"{_fmt(w['vs_torch'][i])} {_fmt(w['vs_f64'][i])} {_fmt(w['torch_vs_f64'][i])} "
                f"{_ratio(w['ratio'][i])}"
                for w in (d.windows[o] for o in outputs)
            ]
            lines.append(f"  {span:<13} " + " ".join(cells))
    lines += [
        "",
        "ratio: max |file - float64| / allowance over the case (passes at <= 1); error and "
        "allowance at that element. vs torch: max |file - PyTorch float32|. torch r: "
        "PyTorch float32's own ratio. inf: a NaN, or an infinity the other side lacks.",
        report.summary_line(),
    ]
    return "\n".join(lines)
