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
@click.option(
    "--step-only",
    is_flag=True,
    help="Write the step model alone (token (B,) and per-layer states in, one step out) "
    "with the full metadata: a small loop-free file for runtimes that run nothing else.",
)
@click.option(
    "--portable",
    is_flag=True,
    help="Write a main graph of constructs that OpenVINO, tract and the ONNX reference "
    "compute correctly (one Scan, no RNN operator, If or ScatterElements); the default "
    "graph is the fastest for onnxruntime.",
)
def convert_command(run_dir, out_path, opset, step_only, portable):
    """Export a trained RUN_DIR to one self-contained ONNX file.

    The file takes tokens (B, T), the hidden state h0 and per-row lengths, and
    returns log_probs (B, C) and the new state hn; B and T are dynamic. Its
    metadata carries the vocabulary, labels and state layout (see `inspect`).
    With --step-only it is the one-step model instead: token (B,) and one (B, H)
    state per layer in, log_probs and the new states out.
    """
    from rnn_export.checkpoint import load_checkpoint
    from rnn_export.export import DEFAULT_OPSET, export_model

    if step_only and portable:
        raise click.UsageError(
            "--step-only and --portable exclude each other (a step file has no main graph)"
        )
    graph = "step" if step_only else "portable" if portable else "default"
    ckpt = load_checkpoint(run_dir)
    opset = DEFAULT_OPSET if opset is None else opset
    exported = export_model(ckpt.model, ckpt.vocab, ckpt.sha256, out_path, opset=opset, graph=graph)
    step = exported.step
    click.echo(f"wrote {exported.path}")
    click.echo(f"  size     {exported.size_bytes:,} bytes")
    click.echo(f"  nodes    {exported.nodes} (subgraphs included)")
    click.echo(f"  opset    {exported.opset}")
    click.echo(f"  inputs   {tensors_line(exported.inputs)}")
    click.echo(f"  outputs  {tensors_line(exported.outputs)}")
    if step_only:
        click.echo("  step     this file is the step model (no main graph)")
        return
    click.echo(
        f"  step     embedded step model for the runtime: {step['nodes']} nodes, "
        f"{step['bytes']:,} bytes (inputs {step['token']}, {', '.join(step['states'])})"
    )
