"""`rnn-export stream`: torch-free, imports only rnn_runtime (numpy, onnxruntime)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

HINT = (
    "stream: type a line and press Enter for its prediction (label, probability); "
    "Ctrl-D ends the input."
)


# Shared with `predict`: the runtime's session options.
threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="onnxruntime intra-op threads, at most the machine's logical CPUs.",
)
providers_option = click.option(
    "--providers",
    default="cpu",
    show_default=True,
    help="onnxruntime execution providers in priority order, comma separated: short "
    "names (cpu, cuda, tensorrt, dml) or full ones; an unavailable one is an error, "
    "never a silent fallback.",
)


@click.command("stream")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option(
    "--every-step",
    is_flag=True,
    help='Print after each character, not each line (an empty line prints "-").',
)
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
    "mapping it to the unknown token (and warning on stderr).",
)
@click.option(
    "--carry",
    is_flag=True,
    help="Keep the state across lines (default: each line is a separate text).",
)
@threads_option
@providers_option
def stream_command(model_path, every_step, as_json, top_k, strict, carry, threads, providers):
    """Read text from stdin and print the running prediction.

    By default each input line is a separate text and one line is printed per
    input line: the label and probability after its last character (tab
    separated; "-" for an empty line). With --every-step one line per character
    (the character, then the pairs), and "-" for an empty line, so every input
    line shows in the output. Works line by line as you type, and from a pipe;
    input that is not UTF-8 is read with U+FFFD for the bad bytes.

    A line with characters outside the model's vocabulary gets a warning on
    stderr with their count (they are read as the unknown token); --strict
    makes them an error. A features model (float frames) reads no text: it is
    refused (exit 2); predict its frames with predict --file.
    """
    import json

    import rnn_runtime

    # A bad file, provider or thread count, or a bad character under --strict: exit 2
    # with one line (the group maps the runtime's errors).
    model = rnn_runtime.open_model(model_path, providers=providers, threads=threads)
    if model.tokenizer is None:
        raise rnn_runtime.StreamError(
            f"{model_path}: reads float frames of F = {model.metadata.input_size} values a "
            "step, and stream reads text lines: predict its frames with predict --file "
            "FRAMES.npz, or stream them from Python (stream.step(frame), stream.feed(frames))"
        )
    stdin = sys.stdin.buffer
    if stdin.isatty():
        click.echo(HINT, err=True)
    lines = (raw.decode("utf-8", "replace") for raw in iter(stdin.readline, b""))
    if not strict:
        lines = _warn_unknown(lines, model.tokenizer)
    records = rnn_runtime.stream_lines(
        model.stream(strict=strict), lines, every_step=every_step, carry=carry, k=top_k
    )
    for record in records:
        if as_json:
            line = json.dumps(record, ensure_ascii=False)
        else:
            pairs = "\t".join(f"{label}\t{p:.4f}" for label, p in record["top_k"]) or "-"
            line = f"{record['char']}\t{pairs}" if record.get("step") else pairs
        click.echo(line)  # click.echo flushes: output follows input line by line


def _warn_unknown(lines, tokenizer):
    """The lines unchanged, with a warning on stderr before each one that holds
    characters outside the vocabulary."""
    from rnn_runtime.stream import line_text

    for n, line in enumerate(lines, 1):
        warn_unknown(f"line {n}", line_text(line), tokenizer)
        yield line


def warn_unknown(where: str, text: str, tokenizer) -> int:
    """Warn on stderr when text holds characters outside the vocabulary; their count.

    A model without an unknown token refuses such text instead: no warning then."""
    unknown = tokenizer.count_unknown(text)
    if unknown and tokenizer.unk_id is not None:
        click.echo(
            f"warning: {where}: {unknown} of {len(text)} characters are not in the "
            "model's vocabulary (read as the unknown token)",
            err=True,
        )
    return unknown
