"""`rnn-export predict`: the label of whole texts, torch-free (rnn_runtime only)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rnn_export.cli.stream import providers_option, threads_option, warn_unknown


@click.command("predict")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.argument("texts", metavar="[TEXT]...", nargs=-1)
@click.option(
    "--file",
    "text_file",
    type=click.Path(path_type=Path, allow_dash=True),
    help="Read the texts from this UTF-8 file, one per line ('-': stdin), instead of "
    "TEXT arguments. A blank line has no prediction and prints '-'.",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="How many (label, probability) pairs to print per text, most probable first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per text.")
@click.option(
    "--strict",
    is_flag=True,
    help="Fail (exit 2) on a character outside the vocabulary instead of reading it as "
    "the unknown token (with a warning on stderr).",
)
@threads_option
@providers_option
def predict_command(model_path, texts, text_file, top_k, as_json, strict, threads, providers):
    """Print the model's prediction for each TEXT (or each line of --file).

    One output line per text, in order: the top labels and their probabilities, tab
    separated ("-" for an empty text); with --json one object per text with its
    "index" (or "line" with --file), "text", "label", "probability" and "top_k".
    The texts run in padded batches through the file's main graph: the numbers a
    stream fed the same text gives.
    A text with characters outside the vocabulary gets a warning on stderr with
    their count; --strict makes them an error (exit 2).
    """
    import json

    import rnn_runtime

    if texts and text_file is not None:
        raise click.UsageError("give TEXT arguments or --file, not both")
    if not texts and text_file is None:
        raise click.UsageError("expected TEXT arguments or --file FILE; got neither")
    where, key = "text", "index"  # messages say "text 2"; JSON records {"index": 2, ...}
    if text_file is not None:
        texts, where, key = read_lines(text_file), "line", "line"
    model = rnn_runtime.open_model(model_path, providers=providers, threads=threads)
    refuse = strict or model.tokenizer.unk_id is None
    why = "--strict refuses them" if strict else "this model has no unknown token"
    for n, text in enumerate(texts, 1):
        unknown = warn_unknown(f"{where} {n}", text, model.tokenizer)
        if refuse and unknown:
            raise rnn_runtime.UnknownCharError(
                f"{where} {n}: {unknown} of {len(text)} characters are not in the model's "
                f"vocabulary; {why}"
            )
    for n, (text, prediction) in enumerate(zip(texts, model.predict(texts), strict=True), 1):
        if as_json:
            record = {"label": None, "probability": None, "top_k": []}
            if prediction is not None:
                record = prediction.to_dict(top_k)
            click.echo(json.dumps({key: n, "text": text, **record}, ensure_ascii=False))
        elif prediction is None:
            click.echo("-")
        else:
            click.echo("\t".join(f"{label}\t{p:.4f}" for label, p in prediction.top_k(top_k)))


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file ('-': stdin), without their line ends.

    Raises:
        InputError: the file is not UTF-8 (naming the line and byte).
        OSError: it cannot be read (the CLI names the path).
    """
    from rnn_export.errors import decode_utf8

    if str(path) == "-":
        return decode_utf8(sys.stdin.buffer.read(), "stdin").splitlines()
    return decode_utf8(path.read_bytes(), path).splitlines()
