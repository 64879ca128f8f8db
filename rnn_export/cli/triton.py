"""`rnn-export triton`: a Triton Inference Server model repository for stateful serving."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("triton")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="The model repository (created if missing): the model goes to OUT/NAME/.",
)
@click.option("--name", default=None, help="The model's name in Triton [default: MODEL's stem].")
@click.option(
    "--max-batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Requests of different sequences Triton may stack into one run (at most 65,536).",
)
@click.option(
    "--instances",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Model instances (onnxruntime sessions) on the CPU (at most 256).",
)
def triton_command(model_path, out, name, max_batch_size, instances):
    """Write OUT/NAME/config.pbtxt and OUT/NAME/VERSION/model.onnx for tritonserver.

    A new OUT/NAME gets version 1; a model folder this command wrote gets the next
    version beside the others (config.pbtxt serves the newest); any other OUT/NAME
    (a training run...) is refused: nothing this command did not write is replaced.

    The onnxruntime backend with the sequence batcher and implicit state: Triton
    keeps each sequence's state between its requests (zeros at its start). As Triton
    splits a state along axis 0, model.onnx is a batch-first variant of MODEL.onnx's
    main graph with the control inputs START and READY; its contract is in its
    metadata (key rnn_export.triton), and `rnn-export verify` checks it against the
    checkpoint like any file. Not run against a Triton server here (docs/scale.md).
    """
    from rnn_export.triton import write_repository

    version = write_repository(
        model_path, out, name=name, max_batch_size=max_batch_size, instances=instances
    )
    click.echo(f"wrote {version.parent} (version {version.name})")
    click.echo(f"  config   {version.parent / 'config.pbtxt'}")
    click.echo(f"  model    {version / 'model.onnx'} (batch-first, START and READY inputs)")
    click.echo(f"  serve    tritonserver --model-repository={Path(out)}")
