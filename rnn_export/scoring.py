"""Score a corpus file with a model file: predictions for every text, in bounded memory.

The local engine (the default; torch-free, rnn_runtime only) reads the input chunk by
chunk (rnn_export.corpus), runs each chunk through StreamModel.predict (texts sorted by
length and run in padded batches through the main graph: the numbers `rnn-export
predict` gives), and writes the predictions chunk by chunk into a temporary file that
replaces the output only when every text is scored (rnn_export.atomic.replacing). The
Ray engine (rnn_export.scoring_ray) runs the same steps on a Ray cluster.

Memory stays bounded for any input (predict_texts): a batch holds at most MAX_PADDED
tokens once padded (rows x its longest text), and a text longer than that runs alone, a
chunk at a time, through a stream on the same main graph (the reader refuses texts of
more than rnn_export.corpus.MAX_TEXT_CHARS characters).

A features model scores sequences of float frames (rnn_export.frame_corpus: .npz or a
Parquet list column) the same way: a batch holds at most MAX_PADDED steps and at most
MAX_PADDED_VALUES float32 values once padded (rows x its longest x F), and a longer
sequence runs alone through a stream, a bounded piece at a time.

A character outside the model's vocabulary is read as the unknown token and counted
(the summary says how many texts had one); with strict, or for a model without an
unknown token, it is an error that names the line or row.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rnn_export import atomic
from rnn_export.corpus import (
    DEFAULT_TEXT,
    CorpusReader,
    CorpusWriter,
    check_output_format,
    flat_columns,
    format_of,
)
from rnn_export.errors import InputError
from rnn_export.frame_corpus import (
    DEFAULT_FRAMES,
    FrameCorpusReader,
    check_input_kind,
    output_format,
)

MAX_PADDED = 1 << 16  # tokens of one padded batch (rows x longest): 512 KiB of int64 ids
MAX_PADDED_VALUES = 1 << 17  # float32 frame values of one padded batch: the same 512 KiB


class ScoreError(InputError):
    """A corpus that cannot be scored with this model (a character it cannot read...)."""


@dataclass(frozen=True)
class ScoreJob:
    """What to score and how to write it.

    Args:
        model: the .onnx file.
        input, output: the corpus and the predictions file (same format family).
        fmt: the input's format (rnn_export.corpus.FORMATS), None: from its suffix.
        text_field: the JSONL field or CSV/Parquet column of the text.
        id_field: the field or column kept as each record's key; None: `id` where the
            input has one, else the line or row number.
        top_k: (label, probability) pairs per record.
        strict: a character outside the vocabulary is an error, not the unknown token.
        frames_field: a features model's Parquet list column of frames.
    """

    model: Path
    input: Path
    output: Path
    fmt: str | None = None
    text_field: str = DEFAULT_TEXT
    id_field: str | None = None
    top_k: int = 1
    strict: bool = False
    frames_field: str = DEFAULT_FRAMES

    def checked(self) -> ScoreJob:
        """This job with its format resolved, once the paths are checked.

        Raises:
            CorpusError: an unknown format, an output named for another format.
            WriteError: an output that cannot be written (before any work).
            OSError: the input cannot be read.
        """
        from dataclasses import replace

        fmt = format_of(Path(self.input), self.fmt)
        if not Path(self.input).is_file():
            kind = atomic.path_kind(Path(self.input))
            raise ScoreError(
                f"{self.input}: expected the {fmt} file to score; "
                + ("it does not exist" if kind is None else f"it is {kind}")
            )
        check_output_format(Path(self.output), output_format(Path(self.output), fmt))
        atomic.check_file_output(self.output, "the predictions file")
        for what, path in (("the input", self.input), ("the model file", self.model)):
            if atomic.same_file(self.output, path):
                raise ScoreError(f"{self.output}: is {what}; write the predictions elsewhere")
        return replace(self, fmt=fmt)


@dataclass
class ScoreSummary:
    """The figures of one scoring run."""

    output: Path
    engine: str
    texts: int = 0  # texts, or sequences of frames (what)
    what: str = "texts"
    empty: int = 0  # texts without a prediction (empty)
    unknown: int = 0  # texts with characters outside the vocabulary
    seconds: float = 0.0
    workers: int = 1
    labels: dict[str, int] = field(default_factory=dict)  # predicted label -> texts

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.seconds if self.seconds > 0 else float("inf")

    def add(self, columns: dict[str, list], unknown: int) -> None:
        """Count one written chunk."""
        self.texts += len(columns["label"])
        self.unknown += unknown
        for label in columns["label"]:
            if label is None:
                self.empty += 1
            else:
                self.labels[label] = self.labels.get(label, 0) + 1

    def format_line(self) -> str:
        """One line: texts, time, throughput, output (and empty and unknown counts)."""
        notes = []
        if self.empty:
            notes.append(f"{self.empty:,} empty, no prediction")
        if self.unknown:
            notes.append(f"{self.unknown:,} with characters read as the unknown token")
        engine = self.engine
        if engine != "local":
            engine += f", {self.workers} worker" + ("s" if self.workers > 1 else "")
        return (
            f"scored {self.texts:,} {self.what} in {self.seconds:.1f} s "
            f"({self.texts_per_s:,.0f} {self.what}/s, {engine}) -> {self.output}"
            + (f" ({'; '.join(notes)})" if notes else "")
        )


def prediction_columns(predictions, top_k: int) -> dict[str, list]:
    """The flat prediction columns (corpus.flat_columns) of StreamModel.predict's results.

    A None prediction (an empty text) has None in every column.
    """
    names = flat_columns(top_k)
    columns: dict[str, list] = {n: [] for n in names}
    for prediction in predictions:
        pairs = [] if prediction is None else prediction.top_k(top_k)
        pairs += [(None, None)] * (top_k - len(pairs))
        for k, (label, p) in enumerate(pairs):
            columns[names[2 * k]].append(label)
            columns[names[2 * k + 1]].append(p)
    return columns


def predict_texts(model, texts: list, *, strict: bool = False) -> list:
    """model.predict(texts), in batches whose padded size is bounded, not their count.

    Texts (or a features model's (T, F) frame arrays) are sorted by length; a batch takes
    the next ones while rows x longest stays within padded_steps(model) (and rows within
    the model's PREDICT_BATCH_SIZE). A longer one runs alone through a stream fed a
    bounded piece at a time: the main graph's chunks, as predict runs a lone text, without
    its ids held whole.

    Returns:
        One Prediction (None for an empty text) per text, in order.

    Raises:
        StreamError: as model.predict, naming the text's index in texts.
    """
    from rnn_runtime import StreamError
    from rnn_runtime.model import PREDICT_BATCH_SIZE
    from rnn_runtime.stream import MAX_CHUNK

    results: list = [None] * len(texts)
    order = sorted((i for i, text in enumerate(texts) if len(text)), key=lambda i: len(texts[i]))
    batch: list[int] = []
    budget = padded_steps(model)
    piece = min(MAX_CHUNK, budget)

    def run(rows: list[int]) -> None:
        try:
            predictions = model.predict(
                [texts[i] for i in rows], strict=strict, batch_size=len(rows)
            )
        except StreamError as e:  # "texts[k]: ..." names k of the batch: name it in texts
            k, why = text_index(e)
            if k is None:
                raise
            raise type(e)(f"texts[{rows[k]}]: {why}") from None
        for i, prediction in zip(rows, predictions, strict=True):
            results[i] = prediction

    for i in order:
        n = len(texts[i])
        if n > budget:
            stream = model.stream(strict=strict)
            try:
                for start in range(0, n, piece):
                    stream.feed(texts[i][start : start + piece])
            except StreamError as e:
                raise type(e)(f"texts[{i}]: {e}") from None
            results[i] = stream.prediction
            continue
        if batch and ((len(batch) + 1) * n > budget or len(batch) == PREDICT_BATCH_SIZE):
            run(batch)
            batch = []
        batch.append(i)
    if batch:
        run(batch)
    return results


def text_index(error: Exception) -> tuple[int | None, str]:
    """(k, the rest) of model.predict's message "texts[k]: ..."; (None, message) else."""
    import re

    found = re.match(r"texts\[(\d+)\]: ", str(error))
    if found is None:
        return None, str(error)
    return int(found[1]), str(error)[found.end() :]


def padded_steps(model) -> int:
    """The steps (rows x longest) one padded batch of model.predict may hold: MAX_PADDED
    token ids, or for a features model as many frames as MAX_PADDED_VALUES values hold
    (at least one)."""
    if model.tokenizer is not None:
        return MAX_PADDED
    return max(1, min(MAX_PADDED, MAX_PADDED_VALUES // model.metadata.input_size))


def score_texts(model, texts: list[str], where, top_k: int, strict: bool):
    """Predict a chunk of texts: (flat prediction columns, texts with unknown characters).

    Args:
        model: an opened StreamModel.
        texts: the chunk's texts.
        where: position -> the text's place for messages ("in.txt:7").
        strict: refuse a character outside the vocabulary.

    Raises:
        ScoreError: a character outside the vocabulary under strict or in a model
            without an unknown token (naming the text's place).
    """
    tokenizer = model.tokenizer
    if tokenizer is None:
        return prediction_columns(predict_frames(model, texts, where), top_k), 0
    refuse = strict or tokenizer.unk_id is None
    unknown = 0
    for i, text in enumerate(texts):
        n = tokenizer.count_unknown(text)
        if n:
            unknown += 1
            if refuse:
                why = "--strict refuses them" if strict else "this model has no unknown token"
                raise ScoreError(
                    f"{where(i)}: {n} of {len(text)} characters are not in the model's "
                    f"vocabulary; {why}"
                )
    return prediction_columns(predict_texts(model, texts), top_k), unknown


def predict_frames(model, sequences: list, where) -> list:
    """predict_texts of a features model's (T, F) frame arrays, a refused one named by
    its place.

    Args:
        where: position -> the sequence's place for messages ("in.npz row 7").

    Raises:
        ScoreError: frames the model's FrameReader refuses (not finite...).
    """
    from rnn_runtime import StreamError

    try:
        return predict_texts(model, sequences)
    except StreamError as e:
        k, why = text_index(e)
        if k is None:
            raise
        raise ScoreError(f"{where(k)}: {why}") from None


def score_file(
    job: ScoreJob,
    *,
    threads: int = 1,
    providers: str = "cpu",
    progress: bool | None = None,
) -> ScoreSummary:
    """Score job.input with job.model on this machine; the output appears whole or not at all.

    Args:
        job: what to score.
        threads: onnxruntime intra-op threads.
        providers: onnxruntime execution providers (rnn_runtime.open_model).
        progress: a progress bar on stderr; None: only when stderr is a terminal.

    Raises:
        CorpusError, ScoreError, WriteError: bad input or output (the output is untouched).
    """
    from tqdm import tqdm

    import rnn_runtime

    job = job.checked()
    model = rnn_runtime.open_model(job.model, providers=providers, threads=threads)
    reader = open_reader(job, model)
    summary = ScoreSummary(Path(job.output), "local")
    if model.tokenizer is None:
        summary.what = "sequences"
    started = time.perf_counter()
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=reader.total, unit=reader.unit, unit_scale=True, disable=not show, leave=False)
    with bar, atomic.replacing(job.output) as f:
        out_fmt = output_format(job.output, job.fmt)
        writer = CorpusWriter(f, out_fmt, reader.key_name, job.top_k, reader.key_type)
        for chunk in reader:
            keys = chunk.keys

            def where(i, keys=keys):
                return (
                    reader.where(keys[i])
                    if reader.id_field is None
                    else (f"{reader.path}: record {reader.id_field}={keys[i]!r}")
                )

            columns, unknown = score_texts(model, chunk.texts, where, job.top_k, job.strict)
            writer.write(chunk.keys, columns)
            summary.add(columns, unknown)
            bar.update(chunk.done - bar.n)
        writer.close()
    summary.seconds = time.perf_counter() - started
    return summary


def open_reader(job: ScoreJob, model):
    """The reader of job.input for this model: texts (CorpusReader) or, for a features
    model, sequences of frames (FrameCorpusReader).

    Raises:
        CorpusError: an input of the other kind than the model reads, or a bad one.
    """
    column = job.text_field if model.tokenizer is not None else job.frames_field
    check_input_kind(model, job.input, job.fmt, column)
    if model.tokenizer is None:
        size = model.metadata.input_size
        return FrameCorpusReader(job.input, job.fmt, size, job.frames_field, job.id_field)
    return CorpusReader(job.input, job.fmt, job.text_field, job.id_field)
