"""Open a model file made by `rnn-export convert`: validated onnxruntime sessions.

A StreamModel holds the session, the metadata and the tokenizer; streams and pools
(stream.py, pool.py) run on it. Only numpy and onnxruntime are needed.

Opening reads the file once and checks it before onnxruntime sees it: the path is a
regular file of at most MAX_MODEL_BYTES (protobuf's 2 GiB limit), its tensors hold no
external data and no NaN or infinity, and its metadata is valid (onnxfile.py,
metadata.py); then onnxruntime loads the checked bytes and the graph's signature is
compared with the metadata.

A file that embeds a step model (metadata key rnn_export.step) gets a second session on
it when the model runs on the CPU: streams and pools take their one-token steps through
it (fewer onnxruntime nodes per step), everything longer goes through the main graph.
At open the step model's checksum, tensors and signature are checked, and every path
of the main graph is run on every token id against one-token steps (crosscheck.py).

A step file (`rnn-export convert --step-only`, metadata step.in_file) is the step model
alone: its one session is both `session` and `step_session`, on the CPU only, and
everything longer than one token runs as a loop of steps (`run`). A file in onnxruntime's
ORT format (`rnn-export quantize --format ort`) is opened as well: onnxruntime checks its
tensors, and its metadata is read through a session.

Thread safety: a StreamModel is immutable after it is opened and onnxruntime allows
concurrent runs on one session, so one model may be shared by any number of streams
and pools on any number of threads.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rnn_runtime.crosscheck import check_graphs
from rnn_runtime.errors import (
    MetadataError,
    ModelFileError,
    StreamError,
)
from rnn_runtime.frames import FrameReader
from rnn_runtime.metadata import ModelMetadata, check_signature, read_metadata
from rnn_runtime.onnxfile import is_ort_format, scan_model
from rnn_runtime.pool import StreamPool
from rnn_runtime.session import (
    DEFAULT_PROVIDERS,
    PROVIDER_DEVICES,
    RUN_ERRORS,
    StateBuffers,
    StepBindings,
    check_threads,
    open_session,
    open_step_session,
    resolve_providers,
    run_failed,
    run_step_model,
)
from rnn_runtime.stream import MAX_CHUNK, Prediction, StreamSession
from rnn_runtime.tokens import Tokenizer

MAX_MODEL_BYTES = (1 << 31) - 1  # protobuf cannot parse a larger message
PREDICT_BATCH_SIZE = 256
EXPECTED = "expected a .onnx file made by `rnn-export convert`"
_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def open_model(
    path: str | Path,
    *,
    providers: str | Sequence[str] = DEFAULT_PROVIDERS,
    threads: int = 1,
    step_model: bool = True,
) -> StreamModel:
    """Open and validate a model file; the one entry point for torch-free readers.

    Args:
        path: a .onnx file made by `rnn-export convert`.
        providers: onnxruntime execution providers in priority order: "cpu,cuda" or a
            list, short names (cpu, cuda, tensorrt, dml) or full names; each must be
            available, or ProviderError is raised (no silent fallback).
        threads: onnxruntime intra-op thread count, 1 to the machine's logical CPUs.
        step_model: step streams and pools through the file's embedded step model
            (CPU only; files without one always use the main graph). False: the main
            graph for everything, and the step model is not read.

    Raises:
        ModelFileError: the path is missing or not a regular file, is not an ONNX
            model, or holds external data or non-finite weights.
        MetadataError: no rnn-export metadata, an unknown schema version, metadata past
            a limit, or metadata that contradicts the graph or the step model.
        ProviderError: a requested provider is unknown or not available.
        ThreadsError: a thread count out of range.
    """
    return StreamModel(path, providers=providers, threads=threads, step_model=step_model)


def load_metadata(path: str | Path) -> ModelMetadata:
    """The validated metadata of a model file (opens it on the CPU provider)."""
    return open_model(path).metadata


def read_file(path: str | Path) -> bytes:
    """The bytes of a model file, checked as open_model checks them before onnxruntime
    sees them (read_model_file, then for an ONNX protobuf onnxfile.scan_model): a reader
    that opens its own session from these bytes judges what the runtime will load.

    Raises:
        ModelFileError: as read_model_file and scan_model (external data, non-finite
            weights, not a protobuf); MetadataError: metadata that is not UTF-8.
    """
    data = read_model_file(Path(path))
    if not is_ort_format(data):
        scan_model(data, str(path))
    return data


def read_model_file(path: Path) -> bytes:
    """The bytes of a model file, refusing anything but a regular file of a sane size.

    Raises:
        ModelFileError: saying what the path is (missing, a folder, a FIFO...) and what
            was expected; a folder that holds model.safetensors is named a RUN_DIR.
    """
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file ({EXPECTED})") from None
    except IsADirectoryError:  # where a folder cannot be opened at all (Windows)
        raise _wrong_kind(path, stat.S_IFDIR) from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot open it: {e.strerror} ({EXPECTED})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _wrong_kind(path, stat.S_IFMT(info.st_mode))
        if info.st_size > MAX_MODEL_BYTES:
            raise ModelFileError(
                f"{path}: is {info.st_size:,} bytes; a model file has at most "
                f"{MAX_MODEL_BYTES:,} (protobuf's limit)"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_MODEL_BYTES + 1)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read it: {e.strerror}") from None
    finally:
        os.close(fd)
    if not data:
        raise ModelFileError(f"{path}: is an empty file; {EXPECTED}")
    return data


def _wrong_kind(path: Path, kind: int) -> ModelFileError:
    hint = ""
    if kind == stat.S_IFDIR and (path / "model.safetensors").is_file():
        hint = (
            "; it looks like a RUN_DIR (it holds model.safetensors): make its model file "
            f"with `rnn-export convert {path} --out model.onnx`"
        )
    return ModelFileError(f"{path}: is {_KINDS.get(kind, 'not a regular file')}; {EXPECTED}{hint}")


def _other_axes(ndim: int, batch_axis: int) -> tuple[int, ...]:
    return tuple(i for i in range(ndim) if i != batch_axis)


class StreamModel:
    """One opened model: onnxruntime session, validated metadata, input reader.

    Attributes:
        path: the model file.
        metadata: its ModelMetadata.
        reader: its input stage's reader: a Tokenizer (characters -> token ids) for a
            model that reads characters, a FrameReader (F float32 values a step) for a
            features model.
        tokenizer: the Tokenizer, or None for a features model.
        session: the onnxruntime InferenceSession on the main graph.
        step_session: the InferenceSession on the embedded step model, or None (no step
            model in the file, a non-CPU provider, or step_model=False).
        providers: the providers the session runs on (full names).
        device: where the state lives ("cpu", "cuda", ...), from the first provider.
        threads: onnxruntime intra-op thread count.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        providers: str | Sequence[str] = DEFAULT_PROVIDERS,
        threads: int = 1,
        step_model: bool = True,
    ):
        self.path = Path(path)
        providers = resolve_providers(providers)
        threads = check_threads(threads)
        where = str(self.path)
        data = read_model_file(self.path)
        if is_ort_format(data):  # onnxruntime's ORT format (`rnn-export quantize --format ort`)
            props = open_session(data, quiet=True, name=where).get_modelmeta().custom_metadata_map
        else:
            props = scan_model(data, where)
        try:
            meta = read_metadata(props)
        except MetadataError as e:
            raise MetadataError(f"{where}: {e}") from None
        if meta.is_step_file and PROVIDER_DEVICES.get(providers[0], "cpu") != "cpu":
            raise MetadataError(
                f"{where}: a step file runs on the CPU provider only; got providers {providers}"
            )
        if meta.is_step_file:
            try:
                session = open_step_session(meta, data, providers, threads, name=where)
            except MetadataError as e:
                raise MetadataError(f"{where}: {e}") from None
        else:
            # quiet: every onnxruntime error reaches the caller as a typed error with its text.
            session = open_session(
                data, providers=providers, threads=threads, quiet=True, name=where
            )
            try:
                check_signature(meta, session.get_inputs(), session.get_outputs())
            except MetadataError as e:
                raise MetadataError(f"{where}: {e}") from None
        if any(s.dtype != "float32" for s in meta.states):
            raise MetadataError(
                f"{where}: this runtime streams float32 states; got "
                f"{[s.dtype for s in meta.states]}"
            )
        self.metadata = meta
        if meta.reads_tokens:
            self.reader = self.tokenizer = Tokenizer(meta.vocab, meta.unk_id, meta.text)
        else:
            self.reader, self.tokenizer = FrameReader(meta.input_size, meta.normalization), None
        self.session = session
        self.providers = providers
        self.device = PROVIDER_DEVICES.get(providers[0], "cpu")
        self.threads = threads
        self.step_session = session if meta.is_step_file else None
        try:
            if meta.is_step_file:
                pass  # one graph: nothing to cross-check
            elif step_model and meta.step is not None and self.device == "cpu":
                step_bytes = meta.step.model_bytes()
                scan_model(step_bytes, "the embedded step model")
                self.step_session = open_step_session(meta, step_bytes, providers, threads)
            if not meta.is_step_file:
                check_graphs(meta, session, self.reader, self.step_session)
        except (MetadataError, ModelFileError) as e:
            raise type(e)(f"{where}: {e}") from None

    def __repr__(self) -> str:
        m = self.metadata
        return (
            f"StreamModel({str(self.path)!r}, arch={m.arch!r}, H={m.hidden_size}, "
            f"L={m.num_layers}, V={m.vocab_size}, C={m.num_classes}, providers={self.providers})"
        )

    @property
    def labels(self) -> tuple[str, ...]:
        return self.metadata.labels

    def _text_reader(self) -> Tokenizer:
        if self.tokenizer is None:
            raise StreamError(
                f"this model reads float frames of F = {self.metadata.input_size} values a "
                "step, not text: feed it float32 arrays"
            )
        return self.tokenizer

    def encode(self, text: str, *, strict: bool = False) -> np.ndarray:
        """int64 (T,) token ids of `text` (see Tokenizer.encode)."""
        return self._text_reader().encode(text, strict=strict)

    def token_ids(self, tokens, *, strict: bool = False) -> np.ndarray:
        """Validated int64 (T,) token ids from text or from ids in [0, V)."""
        return self._text_reader().token_ids(tokens, strict=strict)

    def token_id(self, token: str | int, *, strict: bool = False) -> int:
        """One validated token id from a single character or an int id."""
        return self._text_reader().token_id(token, strict=strict)

    def step_input(self, x, *, strict: bool = False):
        """One step's validated input: a token id (a character or an id), or a features
        model's float32 (F,) frame."""
        return self.reader.one(x, strict=strict)

    def sequence(self, xs, *, strict: bool = False) -> np.ndarray:
        """Validated inputs of several steps: int64 (T,) token ids from text or ids, or a
        features model's float32 (T, F) frames."""
        return self.reader.sequence(xs, strict=strict)

    def state_shapes(self, batch_size: int) -> tuple[tuple[int, ...], ...]:
        """Concrete shape of each state (metadata order) for batch_size streams."""
        return tuple(s.concrete_shape(batch_size) for s in self.metadata.states)

    def initial_state(self, batch_size: int = 1) -> dict[str, np.ndarray]:
        """The initial state of batch_size streams: {state input name: float32 zeros}."""
        return {
            s.input: np.zeros(shape, dtype=np.float32)
            for s, shape in zip(self.metadata.states, self.state_shapes(batch_size), strict=True)
        }

    def state_buffers(self, batch_size: int) -> StateBuffers:
        """New ping-pong state buffers for batch_size streams on this model's device."""
        return StateBuffers(self.metadata, batch_size, self.device)

    def bind_steps(self, buffers: StateBuffers, batch_size: int) -> StepBindings:
        """Prebuilt one-token calls over `buffers`, through the step model when open."""
        return StepBindings(self.metadata, buffers, batch_size, self.session, self.step_session)

    def check_state(self, state: Mapping[str, np.ndarray] | np.ndarray, batch_size: int):
        """Validate a state for batch_size streams; returns {name: float32 C-contiguous array}.

        Raises:
            StreamError: wrong names, type, dtype, shape, or non-finite values.
        """
        specs = self.metadata.states
        if isinstance(state, np.ndarray) and len(specs) == 1:
            state = {specs[0].input: state}
        if not isinstance(state, Mapping):
            raise StreamError(
                f"a state is a dict {{name: array}} with names {[s.input for s in specs]}; "
                f"got {type(state).__name__}"
            )
        want = sorted(s.input for s in specs)
        if not all(isinstance(k, str) for k in state) or sorted(state) != want:
            got = sorted(map(str, state))
            raise StreamError(f"state names are {got}; this model expects {want}")
        out = {}
        for spec, shape in zip(specs, self.state_shapes(batch_size), strict=True):
            value = state[spec.input]
            if not isinstance(value, np.ndarray):
                raise StreamError(
                    f"state {spec.input!r} must be a numpy array; got {type(value).__name__}"
                )
            if value.dtype != np.float32:
                raise StreamError(
                    f"state {spec.input!r} has dtype {value.dtype}; this model expects float32"
                )
            if value.shape != shape:
                raise StreamError(
                    f"state {spec.input!r} has shape {value.shape}; this model expects {shape} "
                    f"(its {tuple(spec.shape)} with B={batch_size})"
                )
            finite = np.isfinite(value)
            if not finite.all():
                raise StreamError(
                    f"state {spec.input!r} has {int(finite.size - finite.sum())} non-finite "
                    f"values (first at {np.unravel_index(int(np.argmin(finite)), shape)}); "
                    "a state must be finite"
                )
            out[spec.input] = np.ascontiguousarray(value)
        return out

    def run(
        self,
        tokens: np.ndarray,
        state: Mapping[str, np.ndarray],
        lengths: np.ndarray | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One plain session.run over a padded batch (no validation: the callers validate).

        Args:
            tokens: int64 (B, T) token ids, or float32 (B, T, F) frames.
            state: {state input name: float32 array of concrete_shape(B)}.
            lengths: int64 (B), 1 <= lengths <= T; None means all T.

        Returns:
            log_probs float32 (B, C) and {state input name: new state}, both new arrays.
        """
        meta = self.metadata
        B, T = tokens.shape[:2]
        if lengths is None:
            lengths = np.full((B,), T, dtype=np.int64)
        if meta.is_step_file:
            return self._run_steps(tokens, state, lengths)
        feeds = {meta.tokens.name: tokens, meta.lengths.name: lengths, **state}
        names = [meta.log_probs.name] + [s.output for s in meta.states]
        log_probs, *states = self.session.run(names, feeds)
        return log_probs, {s.input: v for s, v in zip(meta.states, states, strict=True)}

    def _run_steps(self, tokens, state, lengths):
        """run() for a step file: T steps of the step model; a row past its length keeps
        its state and log-probabilities (Where, exact)."""
        specs = self.metadata.states
        states = [np.asarray(state[s.input]) for s in specs]
        log_probs = np.zeros((tokens.shape[0], self.metadata.num_classes), dtype=np.float32)
        for t in range(tokens.shape[1]):
            lp, new = run_step_model(
                self.session, self.metadata.step, np.ascontiguousarray(tokens[:, t]), states
            )
            running = t < lengths  # (B,)
            log_probs = np.where(running[:, None], lp, log_probs)
            states = [
                np.where(np.expand_dims(running, _other_axes(v.ndim, s.batch_axis)), v, old)
                for s, v, old in zip(specs, new, states, strict=True)
            ]
        return log_probs, {s.input: v for s, v in zip(specs, states, strict=True)}

    def predict(
        self, texts: Sequence, *, strict: bool = False, batch_size: int = PREDICT_BATCH_SIZE
    ) -> list[Prediction | None]:
        """The prediction after the last character of each text (or the last frame of each
        (T, F) array of a features model), from the initial state.

        Texts run in padded batches through the main graph (rows of similar length
        together, each row stopping at its own length), so a text gets the numbers a
        stream fed the same text gets (within float32 rounding: onnxruntime's results
        differ in the last bits between batch sizes). Texts longer than MAX_CHUNK run
        in chunks of it, the state carried between them.

        Args:
            texts: strings; an empty one has no prediction (None).
            strict: raise UnknownCharError for a character outside the vocabulary
                instead of reading it as the unknown token.
            batch_size: texts per onnxruntime call.

        Returns:
            One Prediction (or None for an empty text) per text, in order.

        Raises:
            StreamError: a text that is not a str, a character outside the vocabulary
                (strict, or a model without an unknown token), or a result that is not
                finite; the message names the text's index.
        """
        if isinstance(texts, str):
            raise StreamError("texts must be a sequence of strings; got one str")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise StreamError(f"batch_size must be an integer >= 1; got {batch_size!r:.40}")
        encoded = []
        read = self.encode if self.tokenizer is not None else self.sequence
        for i, text in enumerate(texts):
            try:
                encoded.append(read(text, strict=strict))
            except StreamError as e:
                raise type(e)(f"texts[{i}]: {e}") from None
        results: list[Prediction | None] = [None] * len(encoded)
        order = sorted(
            (i for i, ids in enumerate(encoded) if len(ids)), key=lambda i: len(encoded[i])
        )
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            log_probs = self._run_texts([encoded[i] for i in rows])
            for i, row in zip(rows, log_probs, strict=True):
                if not np.isfinite(row).all():
                    raise StreamError(
                        f"texts[{i}]: the log-probabilities are not finite (NaN or infinity: "
                        "the state blew up)"
                    )
                results[i] = Prediction(row.copy(), self.metadata.labels)
        return results

    def _run_texts(self, encoded: list[np.ndarray]) -> np.ndarray:
        """float32 (B, C) log-probabilities after each non-empty row of token ids, from zeros.

        A batch longer than MAX_CHUNK runs chunk by chunk; each chunk takes only the rows
        still running (lengths must be >= 1), the others keep their state and result.
        """
        B, reader = len(encoded), self.reader
        lengths = np.array([len(ids) for ids in encoded], dtype=np.int64)
        # (B, T) ids or (B, T, F) frames, padded with zeros
        tokens = np.zeros((B, int(lengths.max()), *reader.step_shape), dtype=reader.dtype)
        for row, ids in zip(tokens, encoded, strict=True):
            row[: len(ids)] = ids
        state = self.initial_state(B)
        axes = {s.input: s.batch_axis for s in self.metadata.states}
        log_probs = np.zeros((B, self.metadata.num_classes), dtype=np.float32)
        for t0 in range(0, tokens.shape[1], MAX_CHUNK):
            active = np.flatnonzero(lengths > t0)
            chunk = np.ascontiguousarray(tokens[active, t0 : t0 + MAX_CHUNK])
            sub = {
                k: np.ascontiguousarray(np.take(v, active, axis=axes[k])) for k, v in state.items()
            }
            try:
                lp, new = self.run(chunk, sub, np.minimum(lengths[active] - t0, chunk.shape[1]))
            except RUN_ERRORS as e:
                raise run_failed(e) from e
            log_probs[active] = lp
            for k, v in new.items():
                index = [slice(None)] * v.ndim
                index[axes[k]] = active
                state[k][tuple(index)] = v
        return log_probs

    def stream(self, *, strict: bool = False) -> StreamSession:
        """A new StreamSession at the initial state."""
        return StreamSession(self, strict=strict)

    def pool(self) -> StreamPool:
        """A new, empty StreamPool on this model."""
        return StreamPool(self)
