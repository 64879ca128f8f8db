"""`rnn-export score --engine ray`: the scoring pipeline on Ray Data.

read (Ray Data's own reader of the format) -> map_batches with RayScorer, a callable
class whose actors each open the model once (from its bytes, shipped with the actor, so
no node needs the model file) and score batches as the local engine scores chunks
(rnn_export.scoring.score_texts) -> the driver streams the results, in input order, into
one output file in the input's format family (rnn_export.corpus.CorpusWriter, written
atomically). Line and row numbers are counted by the driver (Ray keeps the order).

On an existing cluster (--address) every node must read the input at the same path (a
shared filesystem); without an address a local cluster is started for the run and
stopped after. Ray is an optional extra: `pip install 'rnn-export[ray]'`.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from rnn_export import atomic
from rnn_export.corpus import CHUNK_TEXTS, CorpusReader, CorpusWriter, flat_columns
from rnn_export.errors import InputError
from rnn_export.scoring import ScoreError, ScoreJob, ScoreSummary, score_texts

UNKNOWN = "_unknown"  # per row: 1 if it has characters outside the vocabulary (not written)
ERROR = "_error"  # per row: the bad input an actor found in its batch, or null (not written)


def import_ray():
    """ray and ray.data, or a ScoreError saying how to install them."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ScoreError(
            "--engine ray needs Ray Data, which is not installed: pip install 'rnn-export[ray]'"
        ) from None
    return ray


class RayScorer:
    """A Ray Data actor: the model opened once, then batch after batch scored with it.

    Args:
        model_bytes: the .onnx file's bytes (written to a private temporary file and
            opened with rnn_runtime.open_model, which checks it as any open does).
        job: the ScoreJob (its text field, id field, top_k and strict).
        threads, providers: onnxruntime's, as for the local engine.
    """

    def __init__(self, model_bytes: bytes, job: ScoreJob, threads: int, providers: str):
        import rnn_runtime

        with tempfile.TemporaryDirectory(prefix="rnn-export-score-") as tmp:
            path = Path(tmp) / Path(job.model).name
            path.write_bytes(model_bytes)
            self.model = rnn_runtime.open_model(path, providers=providers, threads=threads)
        self.job = job

    def __call__(self, batch):
        """pyarrow Table batch -> the key (where the input has an id), the flat prediction
        columns, UNKNOWN and ERROR.

        Bad input is returned, not raised: Ray Data would hand the driver only its
        traceback's text. The driver raises it (ERROR, the same message in every row).
        """
        import pyarrow as pa

        import rnn_runtime

        job = self.job
        texts = batch.column(job.text_field).to_pylist()
        keys = batch.column(job.id_field).to_pylist() if job.id_field else None
        out = {} if keys is None else {job.id_field: batch.column(job.id_field)}
        try:
            columns, unknown = self._score(keys, texts)
            error = None
        except (InputError, rnn_runtime.StreamError) as e:
            columns = {name: [None] * len(texts) for name in flat_columns(job.top_k)}
            unknown, error = [0] * len(texts), str(e)
        for name in flat_columns(job.top_k):
            kind = pa.float64() if name.startswith("probability") else pa.string()
            out[name] = pa.array(columns[name], type=kind)
        out[UNKNOWN] = pa.array(unknown, type=pa.int8())
        out[ERROR] = pa.array([error] * len(texts), type=pa.string())
        return pa.table(out)

    def _score(self, keys, texts) -> tuple[dict[str, list], list[int]]:
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                got = "null" if text is None else type(text).__name__
                where = self._where(keys, texts, i)
                raise ScoreError(f"{where}: the text must be a string; got {got}")

        def where(i):
            return self._where(keys, texts, i)

        columns, _ = score_texts(self.model, texts, where, self.job.top_k, self.job.strict)
        tokenizer = self.model.tokenizer
        return columns, [int(tokenizer.count_unknown(t) > 0) for t in texts]

    def _where(self, keys, texts, i) -> str:
        if keys is not None:
            return f"{self.job.input}: record {self.job.id_field}={keys[i]!r}"
        return f"{self.job.input}: the text {texts[i][:40]!r}"


def read_dataset(job: ScoreJob, reader: CorpusReader):
    """The input as a Ray Dataset with the text column (and the id column) only."""
    ray = import_ray()
    path = str(job.input)
    columns = [job.text_field] + ([reader.id_field] if reader.id_field else [])
    if job.fmt == "text":
        return ray.data.read_text(path, drop_empty_lines=False)
    if job.fmt == "jsonl":
        return ray.data.read_json(path, lines=True).select_columns(columns)
    import pyarrow as pa
    import pyarrow.csv

    if job.fmt == "csv":
        # Every column a string, as the local engine reads CSV; quoted line ends allowed.
        return ray.data.read_csv(
            path,
            parse_options=pyarrow.csv.ParseOptions(newlines_in_values=True),
            convert_options=pyarrow.csv.ConvertOptions(
                column_types={c: pa.string() for c in columns}, include_columns=columns
            ),
        )
    return ray.data.read_parquet(path).select_columns(columns)


def score_file_on_ray(
    job: ScoreJob,
    *,
    address: str | None = None,
    workers: int | None = None,
    threads: int = 1,
    providers: str = "cpu",
) -> ScoreSummary:
    """Score job.input with job.model on Ray Data; the output appears whole or not at all.

    Args:
        job: what to score.
        address: a running cluster's address ("auto", "ray://HOST:10001", ...); None:
            start a local cluster for this run (workers + 1 CPUs, or this machine's
            CPUs) and stop it after.
        workers: scoring actors, one CPU each; None: one per CPU of the cluster but one
            (which Ray Data's read tasks need).
        threads, providers: onnxruntime's, in every actor.

    Raises:
        CorpusError, ScoreError, WriteError: bad input or output, also when an actor
            found it (the output is untouched).
    """
    import rnn_runtime

    ray = import_ray()
    job = job.checked()
    model = rnn_runtime.open_model(job.model, providers=providers, threads=threads)
    if model.tokenizer is None:  # fail here first
        raise ScoreError(
            f"{job.model}: a features model (float frames of F = {model.metadata.input_size}); "
            "--engine ray scores texts: score its frames with --engine local"
        )
    # The reader checks the fields (header, first record) before any cluster starts.
    reader = CorpusReader(job.input, job.fmt, job.text_field, job.id_field)
    job = _with_fields(job, reader)
    started_here = not ray.is_initialized()
    if started_here:
        if address is None:
            # One CPU per worker and one for Ray Data's read tasks.
            cpus = os.cpu_count() if workers is None else workers + 1
            ray.init(
                num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="warning"
            )
        else:
            ray.init(address=address, log_to_driver=False, logging_level="warning")
    try:
        return _run(ray, job, reader, workers, threads, providers)
    finally:
        if started_here:
            ray.shutdown()


def _with_fields(job: ScoreJob, reader: CorpusReader) -> ScoreJob:
    from dataclasses import replace

    text_field = "text" if job.fmt == "text" else job.text_field
    return replace(job, text_field=text_field, id_field=reader.id_field)


def _run(ray, job, reader, workers, threads, providers) -> ScoreSummary:
    import logging

    # Ray Data logs each dataset's start and end at INFO: the summary line says it all.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the driver numbers lines and rows
    context.enable_progress_bars = False
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if workers is None:
        workers = max(1, cpus - 1)
    if workers + 1 > cpus:
        # Each actor holds a CPU for the whole run: with none left, the read tasks that
        # feed the actors would wait forever.
        raise ScoreError(
            f"--workers {workers} needs {workers + 1} CPUs of the Ray cluster (one per "
            f"worker, one for reading the input); it has {cpus}"
        )
    summary = ScoreSummary(Path(job.output), "ray", workers=workers)
    started = time.perf_counter()
    scored = read_dataset(job, reader).map_batches(
        RayScorer,
        fn_constructor_kwargs={
            "model_bytes": Path(job.model).read_bytes(),
            "job": job,
            "threads": threads,
            "providers": providers,
        },
        batch_format="pyarrow",
        batch_size=CHUNK_TEXTS,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
    )
    names = flat_columns(job.top_k)
    try:
        with atomic.replacing(job.output) as f:
            writer = CorpusWriter(f, job.fmt, reader.key_name, job.top_k, reader.key_type)
            position = 0
            for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
                n = batch.num_rows
                errors = batch.column(ERROR).drop_null()
                if len(errors):
                    raise ScoreError(errors[0].as_py())
                if job.id_field:
                    keys = batch.column(job.id_field).to_pylist()
                else:
                    keys = list(range(position + 1, position + n + 1))
                position += n
                columns = {name: batch.column(name).to_pylist() for name in names}
                writer.write(keys, columns)
                summary.add(columns, int(sum(batch.column(UNKNOWN).to_pylist())))
            writer.close()
    except Exception as e:
        found = _input_error(e)
        if found is None:
            raise
        raise found from None
    summary.seconds = time.perf_counter() - started
    return summary


def _input_error(error: BaseException) -> BaseException | None:
    """The bad-input error an actor or a reader raised, as the CLI maps it; None: a bug."""
    import pyarrow

    import rnn_runtime

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (InputError, rnn_runtime.StreamError)):
            return error
        if isinstance(error, pyarrow.ArrowInvalid):  # a reader's: the input is not valid
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
            return ScoreError(f"Ray Data cannot read the input: {first}")
        cause = getattr(error, "cause", None)
        error = cause if isinstance(cause, BaseException) else error.__cause__
    return None
