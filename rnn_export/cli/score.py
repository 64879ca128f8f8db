"""`rnn-export score`: predictions for every text of a corpus file, locally or on Ray."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from rnn_export.cli.stream import providers_option, threads_option


@click.command("score")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The texts: .txt (one per line), .jsonl (a text field), .csv or .parquet (a text "
    "column); for a features model, sequences of frames: .npz (x, lengths) or .parquet (a "
    "list column).",
)
@click.option(
    "--output",
    "output_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Where the predictions go, in the input's format family (an .npz input: the "
    "format its suffix names); written whole or not at all.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "jsonl", "csv", "parquet", "npz"]),
    default=None,
    help="The input's format [default: from its suffix].",
)
@click.option(
    "--text-field",
    default="text",
    show_default=True,
    help="JSONL: the field that holds the text.",
)
@click.option(
    "--column",
    default="text",
    show_default=True,
    help="CSV and Parquet: the column that holds the text (a features model's Parquet "
    "input: the list column of frames, 'frames' unless given).",
)
@click.option(
    "--id",
    "id_field",
    default=None,
    help="The field, column or .npz array copied to the output as each record's key "
    "[default: 'id' ('ids' in an .npz) where the input has it, else the line (text, JSONL) "
    "or row (CSV, Parquet, .npz) number].",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="How many (label, probability) pairs per text, most probable first.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Fail (exit 2) on a character outside the vocabulary instead of reading it as "
    "the unknown token (the summary counts such texts).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this process. ray: Ray Data (read, map_batches, write) on a Ray "
    "cluster (needs the ray extra).",
)
@click.option(
    "--address",
    default=None,
    help="--engine ray: the address of a running Ray cluster ('auto': the one this "
    "machine belongs to) [default: start a local one].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="--engine ray: scoring actors, each with the model opened once and one CPU; "
    "the cluster needs one more CPU for reading [default: its CPUs minus one].",
)
@threads_option
@providers_option
@click.pass_context
def score_command(
    ctx,
    model_path,
    input_path,
    output_path,
    fmt,
    text_field,
    column,
    id_field,
    top_k,
    strict,
    engine,
    address,
    workers,
    threads,
    providers,
):
    """Predict every text of --input with MODEL.onnx and write --output.

    Texts run in length-sorted padded batches through the file's main graph (the
    numbers `rnn-export predict` gives), chunk by chunk: memory stays bounded for
    any input size. Each output record keeps the input's id (or line or row
    number) with the label, its probability and, with --top-k, the next ones;
    an empty text has none. A text output has the lines `predict` prints after
    the line number, tab separated. A progress bar shows on a terminal; the
    summary line gives the throughput. Exit 2 for bad input, naming the line or
    row; the output is then left as it was, as after Ctrl-C, SIGTERM or SIGHUP
    (exit 130).

    A features model scores sequences of float frames instead (--engine local):
    an .npz with x (N, T, F) zero-padded, lengths (N,) and optional ids (N,),
    or a Parquet list column of frames (each a list of F numbers, or one flat
    list of T * F numbers); the predictions of an .npz go in the format the
    output's suffix names. Text for a features model, or frames for a text
    model, is refused (exit 2).
    """
    from rnn_export.scoring import ScoreJob

    if engine == "local" and (address is not None or workers is not None):
        raise click.UsageError("--address and --workers go with --engine ray")
    table = _is_table(input_path, fmt)
    given = {
        p: ctx.get_parameter_source(p) == ParameterSource.COMMANDLINE
        for p in ("column", "text_field")
    }
    if (given["column"] or given["text_field"]) and _format(input_path, fmt) == "npz":
        raise click.UsageError("an .npz holds its frames in the array x; it takes no --column")
    if given["column"] and not table:
        raise click.UsageError("--column names a CSV or Parquet column; JSONL takes --text-field")
    if given["text_field"] and table:
        raise click.UsageError("--text-field names a JSONL field; CSV and Parquet take --column")
    job = ScoreJob(
        model=model_path,
        input=input_path,
        output=output_path,
        fmt=fmt,
        text_field=column if table else text_field,
        id_field=id_field,
        top_k=top_k,
        strict=strict,
        **({"frames_field": column} if given["column"] else {}),
    )
    from rnn_export.atomic import terminations_as_interrupts

    with terminations_as_interrupts():  # a kill half-way leaves what Ctrl-C leaves
        if engine == "local":
            from rnn_export.scoring import score_file

            summary = score_file(job, threads=threads, providers=providers)
        else:
            from rnn_export.scoring_ray import score_file_on_ray

            summary = score_file_on_ray(
                job, address=address, workers=workers, threads=threads, providers=providers
            )
    click.echo(summary.format_line())


def _is_table(path: Path, fmt: str | None) -> bool:
    """CSV or Parquet (a column) rather than JSONL (a field); an unknown suffix is
    reported by the scoring itself."""
    return _format(path, fmt) in ("csv", "parquet")


def _format(path: Path, fmt: str | None) -> str | None:
    """The input's format, None where its suffix names none (the scoring reports it)."""
    from rnn_export.corpus import CorpusError, format_of

    try:
        return format_of(path, fmt)
    except CorpusError:
        return None
