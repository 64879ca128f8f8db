"""`rnn-export bench`: the runtime and onnxruntime against PyTorch eager."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("bench")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option(
    "--checkpoint",
    "run_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="The RUN_DIR the model was exported from: PyTorch eager runs this checkpoint.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write every figure as JSON to this file.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Intra-op threads for both onnxruntime and torch (e.g. $(nproc) for all cores).",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=7,
    show_default=True,
    help="Timed blocks per measurement, interleaved between the sides; medians are shown.",
)
@click.option(
    "--quick", is_flag=True, help="A smaller grid and short blocks: rough figures in seconds."
)
def bench_command(model_path, run_dir, json_path, threads, repeats, quick):
    """Time the runtime and onnxruntime against PyTorch eager on the same model.

    Prints figures measured side by side in this one process, each beside its
    goal: streaming latency per step at batch 1 (against PyTorch, the loop users
    write by hand with session.run, and a one-node ONNX model, the floor),
    offline tokens/s over padded batches (B x T grid), aggregate steps/s of the
    runtime's pool at 1, 16, 256 and 1024 streams, one thread against all cores,
    and the cold start and peak RSS of a process that imports only the runtime.
    Throughputs are also shown as a fraction of the roofline: onnxruntime's own
    matrix products at the shapes of one step of this file, timed in the same
    run. Exit 2 when the model and checkpoint cannot be read or do not belong
    together.
    """
    from rnn_export import atomic
    from rnn_export.bench import run_bench

    if json_path is not None:  # before minutes of timing, not after
        atomic.check_file_output(json_path, "the JSON report")
    report = run_bench(model_path, run_dir, threads=threads, repeats=repeats, quick=quick)
    click.echo(report.format_table())
    if json_path is not None:
        atomic.replace_file(json_path, (report.to_json() + "\n").encode("utf-8"))
        click.echo(f"figures written to {json_path}")
