"""`rnn-export evaluate`: accuracy, per-class precision and recall, confusion matrix."""

from __future__ import annotations

from pathlib import Path

import click

from rnn_export.cli.stream import threads_option


@click.command("evaluate")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    help="A folder dataset (one .txt file per class, label = file name): every text of it; "
    "for a features model a .npz or .ts file: every sequence of it.",
)
@click.option(
    "--checkpoint",
    "run_dir",
    type=click.Path(path_type=Path),
    help="The RUN_DIR the model was exported from: its own validation split (the one "
    "training reported val_accuracy on); for a features model its test split (the one "
    "training reported test_accuracy on), where it has one.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path),
    help="Write every figure and the confusion matrix as JSON to this file.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path),
    help="Draw the confusion matrix (rows: true class, columns: predicted) to this PNG.",
)
@threads_option
def evaluate_command(model_path, data_dir, run_dir, report_path, plot_path, threads):
    """Evaluate MODEL.onnx on labelled texts or frames: --data or --checkpoint RUN_DIR.

    Runs the file through the torch-free runtime (padded batches, the numbers a
    stream gives) and prints the accuracy, then per class its support, the texts
    predicted as it, precision and recall. Exit 2 for bad input: neither or both
    of --data and --checkpoint, a class the model does not have, an imported
    RUN_DIR (it has no validation split: use --data), a model of another checkpoint.
    """
    from rnn_export import atomic
    from rnn_export.evaluation import evaluate_model

    # Bad output paths fail before the work that fills them.
    if report_path is not None:
        atomic.check_file_output(report_path, "the JSON report")
    if plot_path is not None:
        atomic.check_file_output(plot_path, "the confusion-matrix PNG")
    report = evaluate_model(model_path, data_dir=data_dir, checkpoint=run_dir, threads=threads)
    click.echo(report.format_table())
    if report_path is not None:
        atomic.replace_file(report_path, (report.to_json() + "\n").encode("utf-8"))
        click.echo(f"report written to {report_path}")
    if plot_path is not None:
        atomic.replace_file(plot_path, report.plot_confusion())
        click.echo(f"confusion matrix written to {plot_path}")
