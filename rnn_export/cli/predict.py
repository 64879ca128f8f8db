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
    "TEXT arguments. A blank line has no prediction and prints '-'. A features model "
    "reads sequences of frames: an .npz (x, lengths) or a Parquet list column.",
)
@click.option(
    "--column",
    default=None,
    help="A features model's Parquet --file: the list column of frames [default: frames].",
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
def predict_command(
    model_path, texts, text_file, column, top_k, as_json, strict, threads, providers
):
    """Print the model's prediction for each TEXT (or each line of --file).

    One output line per text, in order: the top labels and their probabilities, tab
    separated ("-" for an empty text); with --json one object per text with its
    "index" (or "line" with --file), "text", "label", "probability" and "top_k".
    The texts run in padded batches through the file's main graph: the numbers a
    stream fed the same text gives. --file is read and printed a block of lines at
    a time, so memory stays bounded for any file (a line ends at "\n" or "\r\n";
    a text holds at most 16,777,216 characters).
    A text with characters outside the vocabulary gets a warning on stderr with
    their count; --strict makes them an error (exit 2).

    A features model predicts sequences of float frames from --file: an .npz
    with x (N, T, F) zero-padded, lengths (N,) and optional ids (N,), or a
    Parquet list column (rnn-export score's inputs), a chunk of rows at a time;
    --json records carry the "row" (or the ids) instead of "text".
    """
    import rnn_runtime
    from rnn_export.corpus import check_text_size
    from rnn_export.frame_corpus import DEFAULT_FRAMES
    from rnn_export.scoring import predict_texts

    if texts and text_file is not None:
        raise click.UsageError("give TEXT arguments or --file, not both")
    if not texts and text_file is None:
        raise click.UsageError("expected TEXT arguments or --file FILE; got neither")
    where, key = "text", "index"  # messages say "text 2"; JSON records {"index": 2, ...}
    blocks = [(1, list(texts))]
    if text_file is not None:
        blocks, where, key = read_blocks(text_file), "line", "line"
    model = rnn_runtime.open_model(model_path, providers=providers, threads=threads)
    if model.tokenizer is None or _frames_suffix(text_file):
        for head, prediction in predict_frame_file(
            model, texts, text_file, column or DEFAULT_FRAMES
        ):
            echo_prediction(prediction, top_k, head if as_json else None)
        return
    refuse = strict or model.tokenizer.unk_id is None
    why = "--strict refuses them" if strict else "this model has no unknown token"
    for first, block in blocks:
        for n, text in enumerate(block, first):
            check_text_size(text, f"{where} {n}")
            unknown = warn_unknown(f"{where} {n}", text, model.tokenizer)
            if refuse and unknown:
                raise rnn_runtime.UnknownCharError(
                    f"{where} {n}: {unknown} of {len(text)} characters are not in the model's "
                    f"vocabulary; {why}"
                )
        predictions = predict_texts(model, block)
        for n, (text, prediction) in enumerate(zip(block, predictions, strict=True), first):
            echo_prediction(prediction, top_k, {key: n, "text": text} if as_json else None)


def echo_prediction(prediction, top_k: int, head: dict | None) -> None:
    """Print one prediction: its top pairs tab separated ("-" for none) or, given the
    record's head (its key, its text), one JSON object."""
    import json

    if head is not None:
        record = {"label": None, "probability": None, "top_k": []}
        if prediction is not None:
            record = prediction.to_dict(top_k)
        click.echo(json.dumps({**head, **record}, ensure_ascii=False))
    elif prediction is None:
        click.echo("-")
    else:
        pairs = prediction.top_k(top_k)
        click.echo("\t".join(f"{label}\t{p:.4f}" for label, p in pairs))


def _frames_suffix(path) -> bool:
    return path is not None and Path(path).suffix.lower() in (".npz", ".parquet", ".pq")


def predict_frame_file(model, texts, path, column: str):
    """({key name: key}, Prediction or None) of each sequence of a frames --file, a
    chunk at a time; frames for a text model, or text for a features model, refused.

    Raises:
        CorpusError: the input of the other kind, or a bad frames file (naming the row).
    """
    from rnn_export.corpus import CorpusError, format_of
    from rnn_export.frame_corpus import FrameCorpusReader, check_input_kind
    from rnn_export.scoring import predict_frames

    F = model.metadata.input_size
    if path is None or str(path) == "-":
        got = "TEXT arguments" if texts else "stdin"
        raise CorpusError(
            f"this model reads float frames of F = {F} values a step, not text; got {got}: "
            "give --file FRAMES.npz (x, lengths) or a Parquet file with a list column of frames"
        )
    fmt = format_of(Path(path))
    check_input_kind(model, Path(path), fmt, column)
    if model.tokenizer is not None:  # a Parquet file without frames, for a text model
        raise CorpusError(
            f"{path}: predict --file reads texts one per line; score a Parquet file of "
            "texts with rnn-export score"
        )
    reader = FrameCorpusReader(Path(path), fmt, F, column)
    for chunk in reader:
        first = chunk.done - len(chunk.keys) + 1  # the chunk's first row

        def where(i, first=first):
            return reader.where(first + i)

        predictions = predict_frames(model, chunk.texts, where)
        for key, prediction in zip(chunk.keys, predictions, strict=True):
            yield {reader.key_name: key}, prediction


def read_blocks(path: Path):
    """(first line number, lines) of a UTF-8 text file ('-': stdin), a block at a time,
    without their line ends (rnn_export.corpus.read_line_blocks).

    Raises:
        InputError: the file is not UTF-8, or a line is too long (naming the line).
        OSError: it cannot be read (the CLI names the path).
    """
    from rnn_export.corpus import read_line_blocks

    if str(path) == "-":
        yield from read_line_blocks(sys.stdin.buffer, "stdin")
        return
    with open(path, "rb") as f:
        yield from read_line_blocks(f, path)
