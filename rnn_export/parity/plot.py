"""The drift plot: every stream's errors against the step index, and every family's worst ratio."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_report(report, path: Path) -> Path:
    """Draw report's drift curves and per-family ratios into a PNG at path, atomically.

    Raises:
        rnn_export.atomic.WriteError: path cannot be written (it is as it was).
    """
    import io

    import matplotlib

    from rnn_export.atomic import replace_file

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outputs = list(report.drift[0].windows) if report.drift else []
    rows = len(outputs) + 1
    fig, axes = plt.subplots(rows, 1, figsize=(11, 2.6 * rows), squeeze=False)
    axes = axes[:, 0]
    for ax, output in zip(axes, outputs, strict=False):
        for d in report.drift:
            steps = np.arange(d.steps)
            figures = d.per_step[output]
            ax.plot(steps, figures["vs_f64"], lw=0.5, label=f"{d.runner}: |file - float64|")
            ax.plot(
                steps,
                figures["vs_torch"],
                lw=0.5,
                alpha=0.6,
                label=f"{d.runner}: |file - torch f32|",
            )
        if report.drift:
            own = report.drift[0].per_step[output]["torch_vs_f64"]
            ax.plot(np.arange(len(own)), own, lw=0.5, color="gray", label="|torch f32 - float64|")
        ax.set_yscale("log")
        ax.set_ylabel(f"{output}\nmax abs error")
        ax.set_xlabel("step of the stream (one token per call)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax = axes[-1]
    families = report.families()
    labels = [f"{r['provider']}: {r['family']}" for r in families]
    ratios = [_finite(r["ratio"]) for r in families]
    torch_ratios = [_finite(r["torch_ratio"]) for r in families]
    y = np.arange(len(families))
    ax.barh(y - 0.2, ratios, height=0.4, label="the file", color="tab:blue")
    ax.barh(y + 0.2, torch_ratios, height=0.4, label="PyTorch float32", color="tab:gray")
    ax.axvline(1.0, color="darkred", ls="--", lw=1, label="allowance (fails past 1)")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("worst error / allowance in the family")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    verdict = "PASS" if report.passed else "FAIL"
    info = report.model_info
    fig.suptitle(
        f"{verdict}: {Path(report.model).name} ({info['arch']}, H={info['hidden_size']}, "
        f"L={info['num_layers']}, {info['nonlinearity']}) against its checkpoint",
        fontsize=10,
    )
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    replace_file(path, png.getvalue())
    return path


def _finite(x) -> float:
    """A ratio for a bar: infinite ("inf" in the report) drawn at 1e6; 0 at 1e-3."""
    x = float(x)
    return min(max(x, 1e-3), 1e6) if np.isfinite(x) else 1e6
