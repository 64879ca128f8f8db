"""`rnn-export demo`: the main job, train -> convert -> verify -> stream."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rnn_export.config import INPUT_KINDS


@click.command("demo")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("runs/demo"),
    show_default=True,
    help="Folder for the RUN_DIRs, .onnx files, parity reports, drift plots and summary.json.",
)
@click.option(
    "--arch",
    "archs",
    type=click.Choice(["cell", "stacked"]),
    multiple=True,
    help="Arch to run; repeat for both [default: cell and stacked].",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Training epochs [default: 8; 100 for --input features].",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds data, weights, cases.")
@click.option(
    "--input",
    "input_kind",
    type=click.Choice(INPUT_KINDS),
    default="tokens",
    show_default=True,
    help="The models' input: characters (tokens, onehot) of the embedded text task, or "
    "float frames (features) of the embedded frame task, streamed a frame at a time.",
)
def demo_command(out, archs, epochs, seed, input_kind):
    """Run the whole path on the embedded task, no data or download needed.

    For each arch: train a model, convert it to ONNX, verify the file against
    PyTorch on the CPU provider, and stream the validation texts through the
    torch-free runtime one character at a time. Every arch runs, and the parity
    reports, drift plots and summary.json are written, even when one fails verify.
    Exit 1 when any arch fails verify (at the end), 2 for bad options or an --out that
    is not writable or holds something other than an earlier demo's output.
    """
    from rnn_export.demo import ARCHS, run_demo

    summary = run_demo(
        out,
        archs=archs or ARCHS,
        epochs=epochs,
        seed=seed,
        echo=click.echo,
        input_kind=input_kind,
    )
    failed = [arch for arch, r in summary["archs"].items() if not r["parity_passed"]]
    if failed:
        click.echo(f"FAILED: verify failed for {', '.join(failed)}", err=True)
        sys.exit(1)
