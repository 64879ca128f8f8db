"""`rnn-export convert`: a RUN_DIR to one self-contained .onnx file."""

from __future__ import annotations

from pathlib import Path

import click

from rnn_export.cli.inspect import tensors_line


@click.command("convert")
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The .onnx file to write (replaced atomically, only on success).",
)
@click.option(
    "--opset",
    type=int,
    default=None,
    help="ONNX opset to write, 14 or newer [default: 18].",
)
def convert_command(run_dir, out_path, opset):
    """Export a trained RUN_DIR to one self-contained ONNX file.

    The file takes tokens (B, T), the hidden state h0 and per-row lengths, and
    returns log_probs (B, C) and the new state hn; B and T are dynamic. Its
    metadata carries the vocabulary, labels and state layout (see `inspect`).
    """
    from rnn_export.checkpoint import load_checkpoint
    from rnn_export.export import DEFAULT_OPSET, export_model

    ckpt = load_checkpoint(run_dir)
    opset = DEFAULT_OPSET if opset is None else opset
    exported = export_model(ckpt.model, ckpt.vocab, ckpt.sha256, out_path, opset=opset)
    step = exported.step
    click.echo(f"wrote {exported.path}")
    click.echo(f"  size     {exported.size_bytes:,} bytes")
    click.echo(f"  nodes    {exported.nodes} (subgraphs included)")
    click.echo(f"  opset    {exported.opset}")
    click.echo(f"  inputs   {tensors_line(exported.inputs)}")
    click.echo(f"  outputs  {tensors_line(exported.outputs)}")
    click.echo(
        f"  step     embedded step model for the runtime: {step['nodes']} nodes, "
        f"{step['bytes']:,} bytes (inputs {step['token']}, {', '.join(step['states'])})"
    )
