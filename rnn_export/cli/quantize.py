"""`rnn-export quantize`: a step file to an int8 step file (onnxruntime dynamic quantization)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("quantize")
@click.argument("model_path", metavar="MODEL.step.onnx", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The int8 file to write (replaced atomically, only on success).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "ort"]),
    default="onnx",
    show_default=True,
    help="onnx, or ort: onnxruntime's ORT format for its minimal and mobile builds.",
)
def quantize_command(model_path, out_path, fmt):
    """Quantize a step file's matrix products to int8 (weights int8, activations per call).

    Takes a file made by `convert --step-only`; the metadata is kept and its provenance
    says it was quantized. `verify` holds the result to the int8 rule (decision
    agreement and probability error against PyTorch float32 on the validation texts).
    """
    from rnn_export.quantize import quantize_file

    done = quantize_file(model_path, out_path, fmt)
    click.echo(f"wrote {done.path}")
    click.echo(
        f"  size     {done.size_bytes:,} bytes ({done.size_bytes / done.source_bytes:.2f} of "
        f"the float32 file's {done.source_bytes:,})"
    )
    click.echo(f"  format   {done.format}")
    click.echo(f"  int8     {done.quantized_nodes.get('MatMulInteger', 0)} matrix products")
