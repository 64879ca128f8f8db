"""`rnn-export verify`: PyTorch against onnxruntime, per execution provider."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("verify")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option(
    "--checkpoint",
    "run_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="The RUN_DIR the model was exported from (its sha256 must match the file's).",
)
@click.option(
    "--providers",
    default="cpu",
    show_default=True,
    help="cpu, cuda, cpu,cuda or all. One asked for by name that is unavailable fails; "
    "under 'all' it is skipped with the reason.",
)
@click.option(
    "--atol",
    type=click.FloatRange(min=0),
    default=1e-5,
    show_default=True,
    help="Absolute tolerance. An output passes when |onnx - torch| <= eff_atol + rtol * "
    "|torch| everywhere, with eff_atol = max(atol, 2 * noise) and noise = max |PyTorch "
    "float32 - PyTorch float64| in that case: the error an export as accurate as PyTorch "
    "float32 may have. See --strict.",
)
@click.option(
    "--rtol",
    type=click.FloatRange(min=0),
    default=1e-4,
    show_default=True,
    help="Relative tolerance (see --atol).",
)
@click.option(
    "--strict",
    is_flag=True,
    help="No allowance for PyTorch float32's own rounding: eff_atol = atol. Trained "
    "recurrences amplify rounding, so correct exports of trained models often fail this.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the full report as JSON here (also when a case fails).",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Draw the long stream's error against step index (drift) to this PNG.",
)
def verify_command(model_path, run_dir, providers, atol, rtol, strict, report_path, plot_path):
    """Check that MODEL.onnx computes what the checkpoint's PyTorch model computes.

    Runs both over batch sizes, lengths (1 to 1000), zero and random initial
    states, mixed lengths in one padded batch, the run's validation split, the
    model driven one token at a time and in random chunks, and a 10,000-step
    stream (drift). Prints a table of errors. The reference error is PyTorch
    float32's own error against the same model in float64 (noise): an output passes
    within max(atol, 2 * noise) + rtol * |torch| (atol alone with --strict). Exit 0
    when every case passes, 1 when any fails, 2 for usage errors (e.g. a model and
    checkpoint that do not belong together).
    """
    from rnn_export.parity import ParityError, ParityUsageError, verify_parity

    try:
        report = verify_parity(
            model_path, run_dir, providers=providers, atol=atol, rtol=rtol, strict=strict
        )
        failed = False
    except ParityUsageError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except ParityError as e:
        report, failed = e.report, True
    click.echo(report.format_table())
    try:
        if report_path is not None:
            report_path.write_text(report.to_json() + "\n", encoding="utf-8")
            click.echo(f"report written to {report_path}")
        if plot_path is not None:
            report.plot_drift(plot_path)
            click.echo(f"drift plot written to {plot_path}")
    except OSError as e:
        click.echo(f"error: cannot write {e.filename}: {e.strerror}", err=True)
        sys.exit(2)
    sys.exit(1 if failed else 0)
