"""`rnn-export stream`: torch-free, imports only rnn_runtime (numpy, onnxruntime)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("stream")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option("--every-step", is_flag=True, help="Print after each character, not each line.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per output line.")
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="How many (label, probability) pairs to print.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Fail (exit 2) on a character outside the vocabulary instead of "
    "mapping it to the unknown token.",
)
@click.option(
    "--carry",
    is_flag=True,
    help="Keep the state across lines (default: each line is a separate text).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="onnxruntime intra-op threads.",
)
@click.option(
    "--provider",
    "providers",
    multiple=True,
    default=("CPUExecutionProvider",),
    show_default=True,
    help="onnxruntime execution provider, full name or cpu/cuda/tensorrt/dml (repeat for a "
    "priority list); an unavailable one is an error, never a silent fallback.",
)
def stream_command(model_path, every_step, as_json, top_k, strict, carry, threads, providers):
    """Read text from stdin and print the running prediction.

    By default each input line is a separate text and one line is printed per
    input line: the label and probability after its last character (tab
    separated; "-" for an empty line). Works line by line as you type, and from a
    pipe.
    """
    import json

    import rnn_runtime

    try:
        model = rnn_runtime.open_model(model_path, providers=providers, threads=threads)
    except (rnn_runtime.ModelFileError, rnn_runtime.MetadataError, rnn_runtime.ProviderError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    records = rnn_runtime.stream_lines(
        model.stream(strict=strict),
        iter(sys.stdin.readline, ""),
        every_step=every_step,
        carry=carry,
        k=top_k,
    )
    try:
        for record in records:
            if as_json:
                line = json.dumps(record, ensure_ascii=False)
            else:
                pairs = "\t".join(f"{label}\t{p:.4f}" for label, p in record["top_k"]) or "-"
                line = f"{record['char']}\t{pairs}" if every_step else pairs
            click.echo(line)  # click.echo flushes: output follows input line by line
    except rnn_runtime.StreamError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
