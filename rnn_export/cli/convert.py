"""`rnn-export convert`: a RUN_DIR to one self-contained .onnx file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rnn_export.cli.inspect import describe_model, tensors_line


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
    import onnx

    from rnn_export.export import DEFAULT_OPSET, ExportError, count_nodes, export_onnx

    opset = DEFAULT_OPSET if opset is None else opset
    try:
        path = export_onnx(run_dir, out_path, opset=opset)
    except ExportError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    info = describe_model(path)
    proto = onnx.load(path)
    click.echo(f"wrote {path}")
    click.echo(f"  size     {info['size_bytes']:,} bytes")
    click.echo(f"  nodes    {count_nodes(proto.graph)} (subgraphs included)")
    click.echo(f"  opset    {info['metadata']['provenance']['opset']}")
    click.echo(f"  inputs   {tensors_line(info['inputs'])}")
    click.echo(f"  outputs  {tensors_line(info['outputs'])}")
    step = info["metadata"]["step"]
    if step is not None:
        from rnn_runtime.metadata import read_metadata

        meta = read_metadata({p.key: p.value for p in proto.metadata_props})
        nodes = count_nodes(onnx.load_from_string(meta.step.model_bytes()).graph)
        click.echo(
            f"  step     embedded step model for the runtime: {nodes} nodes, "
            f"{step['bytes']:,} bytes (inputs {step['token']}, "
            f"{', '.join(x['input'] for x in step['states'])})"
        )
