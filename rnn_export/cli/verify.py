"""`rnn-export verify`: the file against the checkpoint's model, per execution provider."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from rnn_export.cli.module_options import module_options, module_spec
from rnn_export.runtimes import RUNTIME_NAMES


def _tolerance_value(ctx, param, value):
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"expected a finite number >= 0; got {value}")
    return value


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
    default=None,
    callback=_tolerance_value,
    help="Also require |file - PyTorch float32| <= atol + rtol * |PyTorch| in every case "
    "(off by default: the float32 allowance alone decides). Trained recurrences amplify "
    "rounding, so a correct file of a trained model may exceed a fixed atol on long runs.",
)
@click.option(
    "--rtol",
    type=click.FloatRange(min=0),
    default=None,
    callback=_tolerance_value,
    help="Relative part of the plain tolerance (with --atol; default 1e-4).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path),
    help="Write the full report as JSON here (also when a check fails).",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path),
    help="Draw the long stream's errors against the step index, and every family's worst "
    "error / allowance, to this PNG.",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="A folder dataset whose validation split gives the real texts [default: the run's "
    "own; an imported model has none and is checked on generated tokens only].",
)
@click.option(
    "--runtime",
    type=click.Choice(RUNTIME_NAMES),
    default="onnxruntime",
    show_default=True,
    help="The runtime that executes the file (openvino, tract and tflite are extras of the "
    "package: pip install 'rnn-export[openvino]'). Others than onnxruntime run on the CPU. "
    "tflite converts the file with onnx2tf in a Python 3.12 of its own (python "
    "scripts/onnx2tf_env.py makes it) and runs it in LiteRT's interpreter; "
    "onnxruntime-node and onnxruntime-web run it through the JavaScript runtime (python "
    "scripts/js_env.py installs its packages and Chromium).",
)
@click.option(
    "--onnx2tf-python",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="With --runtime tflite: the Python whose onnx2tf converts the file [default: "
    "$RNN_EXPORT_ONNX2TF_PYTHON, this Python, or the one scripts/onnx2tf_env.py made].",
)
@click.option(
    "--tflite-model",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="With --runtime tflite: a .tflite you converted from this file's step model, "
    "verified as its step model (nothing is converted).",
)
@click.option(
    "--openvino-precision",
    "precision",
    type=click.Choice(["f32", "bf16", "f16"]),
    default="f32",
    show_default=True,
    help="OpenVINO's inference precision (its default on a CPU with AMX is bf16, which "
    "cannot meet the float32 allowance).",
)
@module_options
@click.option("--quiet", "-q", is_flag=True, help="Print only the one-line summary.")
def verify_command(
    model_path,
    run_dir,
    providers,
    atol,
    rtol,
    report_path,
    plot_path,
    data_dir,
    runtime,
    onnx2tf_python,
    tflite_model,
    precision,
    quiet,
    **module,
):
    """Check that MODEL.onnx computes what the checkpoint's PyTorch model computes.

    Every output is held to a float32 allowance: |file - float64| may not exceed the
    rounding a correct float32 implementation can make (a few ulp per operation,
    carried through the model from the same inputs). Local checks run the file for 1
    to 4 steps from many states (inside validation texts, along a 10,000-step stream,
    random and sparse states) through every path of its graph and its step model; whole
    runs (B up to 17, T up to 1000, mixed lengths, the validation split, chunks, the
    stream) report the drift from PyTorch float32 and float64. With --module, your own
    class and weights (your code runs) are the reference too: an import that mapped a
    tensor wrongly fails here. With --data, the file's label order is checked against
    the data's labels. Prints one summary line
    (PASS/FAIL, the deciding check, its error / allowance), then the table. Exit 0 when
    every check passes, 1 when any fails, 2 for usage errors (e.g. a model and
    checkpoint that do not belong together).
    """
    from rnn_export.atomic import check_file_output, replace_file
    from rnn_export.data import folder_spec
    from rnn_export.parity import ParityError, Tolerance, verify_parity

    data = None if data_dir is None else folder_spec(data_dir)
    module = module_spec(**module)

    # Bad output paths fail before the minutes of work that fill them.
    if report_path is not None:
        check_file_output(report_path, "the report")
    if plot_path is not None:
        check_file_output(plot_path, "the drift plot")
    tolerance = None
    if atol is not None or rtol is not None:
        tolerance = Tolerance(1e-5 if atol is None else atol, 1e-4 if rtol is None else rtol)
    from rnn_export.quantize import is_quantized, verify_quantized

    try:
        if is_quantized(model_path):  # int8: its own rule (rnn_export.quantize)
            if runtime != "onnxruntime":
                raise click.UsageError("an int8 file is verified with --runtime onnxruntime")
            report = verify_quantized(model_path, run_dir, data=data)
            if not report.passed:
                raise ParityError(report)
        else:
            report = verify_parity(
                model_path,
                run_dir,
                providers=providers,
                tolerance=tolerance,
                data=data,
                runtime=runtime,
                precision=precision,
                onnx2tf_python=onnx2tf_python,
                tflite_model=tflite_model,
                module=module,
            )
        failed = False
    except ParityError as e:
        report, failed = e.report, True
    click.echo(report.summary_line() if quiet else report.format_table())
    if report_path is not None:
        replace_file(report_path, (report.to_json() + "\n").encode("utf-8"))
        if not quiet:
            click.echo(f"report written to {report_path}")
    if plot_path is not None:
        report.plot_drift(plot_path)
        if not quiet:
            click.echo(f"drift plot written to {plot_path}")
    sys.exit(1 if failed else 0)
