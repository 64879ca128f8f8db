"""One stream of text through an exported RNN, one step at a time.

The per-step path does no allocation of tensors, no copy of the state and no
re-validation of the graph: the token goes into a preallocated buffer that an
IOBinding already holds, and the state ping-pongs between two buffers allocated on
the provider's device, with one prebuilt IOBinding per direction (session.StateBuffers,
session.StepBindings). Steps go through the file's step model when the StreamModel
opened one (model.step_session), else through the main graph; longer chunks (`feed`)
always go through the main graph.

A step or feed whose new state or log-probabilities are not finite (a state that blew
up) raises StreamError and keeps the state from before it: the result lands in the
other buffer, which is checked (one dot product with zeros) before it becomes current.

A stream joins a pool through its own `enter_pool` and leaves through `leave_pool`
(StreamPool calls them): the pool never touches a stream's private fields.

Thread safety: a StreamSession must not be used from two threads at once: a call that
finds another thread's call inside raises StreamError (rnn_runtime.ownership) rather than
tearing the state; distinct streams on one shared StreamModel are safe to run
concurrently on any number of threads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import onnxruntime as ort

from rnn_runtime.errors import SnapshotError, StreamError
from rnn_runtime.ownership import Ownership
from rnn_runtime.session import RUN_ERRORS, bind_chunk, run_failed
from rnn_runtime.snapshot import dump_snapshot, load_snapshot

# feed() runs long texts in chunks of this many tokens: bounded memory, one call per chunk.
MAX_CHUNK = 4096


class Prediction:
    """The model's prediction after some step.

    Attributes:
        log_probs: float32 (C,) log-probabilities, index = class id (a private copy).
        labels: class names, index = class id.
    """

    __slots__ = ("log_probs", "labels")

    def __init__(self, log_probs: np.ndarray, labels: tuple[str, ...]):
        self.log_probs = log_probs
        self.labels = labels

    @property
    def label_id(self) -> int:
        return int(np.argmax(self.log_probs))

    @property
    def label(self) -> str:
        return self.labels[self.label_id]

    @property
    def probability(self) -> float:
        """Probability of the top label."""
        return float(np.exp(self.log_probs[self.label_id]))

    @property
    def probabilities(self) -> np.ndarray:
        """float32 (C,) probabilities."""
        return np.exp(self.log_probs)

    def top_k(self, k: int = 3) -> list[tuple[str, float]]:
        """The k most probable (label, probability) pairs, most probable first."""
        order = np.argsort(-self.log_probs, kind="stable")[:k]
        return [(self.labels[i], float(np.exp(self.log_probs[i]))) for i in order]

    def to_dict(self, k: int = 1) -> dict:
        return {
            "label": self.label,
            "probability": self.probability,
            "top_k": [[label, p] for label, p in self.top_k(k)],
        }

    def __repr__(self) -> str:
        return f"Prediction(label={self.label!r}, probability={self.probability:.4f})"


class StreamSession:
    """One stream: a state that text advances one character (or one chunk) at a time.

    Args:
        model: an opened StreamModel (shared freely between streams).
        strict: raise UnknownCharError for characters outside the vocabulary instead
            of mapping them to the unknown id.

    Every method that changes the state validates its input first, and a step whose
    result is not finite is refused: on an error the stream is left exactly as it was.
    """

    def __init__(self, model, *, strict: bool = False):
        self._setup(model, strict)
        self._bind()
        self.reset()

    @classmethod
    def _for_pool(cls, model, *, strict: bool = False) -> StreamSession:
        """A stream at the initial state for StreamPool.join to take in at once: it runs in
        the pool's buffers, so it gets its own (allocated and bound, the cost of a new
        stream) only when it leaves."""
        stream = cls.__new__(cls)
        stream._setup(model, strict)
        stream._buffers = None
        return stream

    def _setup(self, model, strict: bool) -> None:
        self.model = model
        self.strict = strict
        self._labels = model.metadata.labels
        # The fast paths of step(): a character or an id (none for a features model).
        tokenizer = model.tokenizer
        # A text contract changes characters first: then every step goes through it.
        plain = tokenizer is not None and not tokenizer.prepares
        self._char_ids = tokenizer.char_ids if plain else {}
        self._vocab_size = 0 if tokenizer is None else tokenizer.vocab_size
        # A features model's fast path: a float32 (F,) array (None: a model of characters).
        self._frame_shape = None if tokenizer is not None else model.reader.step_shape
        self._pool = None
        self._zeros = model.initial_state(1)
        self._last: np.ndarray | None = None
        self._owner = owner = Ownership("stream")
        self._acquire, self._release = owner.acquire, owner.release

    def _bind(self) -> None:
        model = self.model
        self._buffers = buffers = model.state_buffers(1)
        # CPU OrtValues made from numpy share its memory: writing the array feeds the graph.
        self._steps = model.bind_steps(buffers, 1)
        self._token = self._steps.tokens
        self._rows = (buffers.log_probs[0][0], buffers.log_probs[1][0])  # views: set k's row
        self._nonfinite = buffers.nonfinite
        self._calls = self._steps.calls

    def __repr__(self) -> str:
        where = " (in a pool)" if self._pool is not None else ""
        return f"<StreamSession on {self.model.path.name}{where}: {self.prediction!r}>"

    @property
    def prediction(self) -> Prediction | None:
        """The prediction after the last step, or None if nothing was fed since reset."""
        if self._pool is not None:
            return self._pool.prediction_of(self)
        return None if self._last is None else Prediction(self._last, self._labels)

    def _check_free(self) -> None:
        if self._pool is not None:
            raise StreamError("this stream is in a pool: advance it through the pool, or leave it")

    def step(self, token) -> Prediction:
        """Advance by one character or token id (a features model: one float32 frame of
        F values) and return the new prediction.

        Raises:
            StreamError: a bad token, a result that is not finite (the state is kept), or
                another thread inside a call of this stream.
        """
        # Ownership's `with`, inlined: this is the per-step hot path of a stream.
        if not self._acquire(False):
            raise self._owner.busy()
        try:
            if self._pool is not None:
                self._check_free()
            # Fast paths for the common cases; anything else goes through full validation.
            if type(token) is str and token in self._char_ids:
                self._token[0] = self._char_ids[token]
            elif type(token) is int and 0 <= token < self._vocab_size:
                self._token[0] = token
            elif (
                type(token) is np.ndarray
                and token.dtype == _FLOAT32
                and token.shape == self._frame_shape
                and np.isfinite(token).all()
            ):
                self._token[0] = token  # copied into the bound input; checked in full above
            else:
                self._token[0] = self.model.step_input(token, strict=self.strict)
            # StepBindings.advance, inlined.
            buffers = self._buffers
            k = buffers.current
            try:
                self._calls[k]()
            except RUN_ERRORS as e:
                raise run_failed(e) from e
            k ^= 1
            if self._nonfinite[k]():
                raise _blown_up(f"the step on {token!r:.20}")
            buffers.current = k
            last = self._last = self._rows[k].copy()
            return Prediction(last, self._labels)
        finally:
            self._release()

    def feed(self, tokens: str | Iterable[int] | np.ndarray) -> Prediction | None:
        """Advance by a text or a sequence of token ids (a features model: float32 frames
        (T, F)), one onnxruntime call per chunk.

        Returns:
            The prediction after the last token; for empty input, the current
            prediction (None if nothing was fed since reset).

        Raises:
            StreamError: bad tokens, or a result that is not finite; the stream is then
                as it was before the call, however many chunks had run.
        """
        with self._owner:
            return self._feed(tokens)

    def _feed(self, tokens) -> Prediction | None:
        self._check_free()
        ids = self.model.sequence(tokens, strict=self.strict)
        # Only a text longer than one chunk needs a copy to undo the chunks before a failure.
        before = (self._buffers.read(), self._last) if len(ids) > MAX_CHUNK else None
        try:
            for start in range(0, len(ids), MAX_CHUNK):
                self._run_chunk(ids[start : start + MAX_CHUNK])
        except StreamError:
            if before is not None:
                self._buffers.write(before[0])
                self._last = before[1]
            raise
        return self.prediction

    def _run_chunk(self, ids: np.ndarray) -> None:
        if self.model.metadata.is_step_file:  # no main graph: the model loops its steps
            try:
                log_probs, new = self.model.run(ids[None], self._buffers.read())
            except RUN_ERRORS as e:
                raise run_failed(e) from e
            if not (
                np.isfinite(log_probs).all() and all(np.isfinite(v).all() for v in new.values())
            ):
                raise _blown_up(f"a chunk of {len(ids)} steps")
            self._buffers.write(new)
            self._last = log_probs[0].copy()
            return
        tokens = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(ids[None]))
        length = ort.OrtValue.ortvalue_from_numpy(np.array([len(ids)], dtype=np.int64))
        buffers = self._buffers
        k = buffers.current
        binding = bind_chunk(self.model.session, self.model.metadata, tokens, length, buffers, k)
        try:
            self.model.session.run_with_iobinding(binding)
        except RUN_ERRORS as e:
            raise run_failed(e) from e
        if buffers.nonfinite[k ^ 1]():
            raise _blown_up(f"a chunk of {len(ids)} steps")
        buffers.current = k ^ 1
        self._last = self._rows[k ^ 1].copy()

    def reset(self) -> None:
        """Return to the initial state, bit for bit, and forget the prediction."""
        with self._owner:
            self._check_free()
            self._buffers.write(self._zeros)
            self._last = None

    def get_state(self) -> dict[str, np.ndarray]:
        """A copy of the state: {state input name: float32 array with B=1}."""
        with self._owner:
            self._check_free()
            return self._buffers.read()

    def set_state(self, state: Mapping[str, np.ndarray] | np.ndarray) -> None:
        """Replace the state (validated: names, dtype float32, shape with B=1, finite).

        A single array is accepted for a model with one state. The prediction is
        forgotten (it belonged to the old state).
        """
        with self._owner:
            self._check_free()
            checked = self.model.check_state(state, 1)
            self._buffers.write(checked)
            self._last = None

    def save(self) -> bytes:
        """The state (and last prediction) as bytes in the format of rnn_runtime.snapshot."""
        with self._owner:
            self._check_free()
            tensors = self._buffers.read()
            if self._last is not None:
                tensors["log_probs"] = self._last
            return dump_snapshot(self.model.metadata, tensors)

    def restore(self, data: bytes) -> None:
        """Restore a state saved by `save`, possibly in another process.

        Raises:
            SnapshotError: not a saved stream, corrupt, past a limit of the format, or
                saved from another model (its checkpoint sha256 differs); StreamError: a
                saved state that does not fit this model. The stream is unchanged on error.
        """
        with self._owner:
            self._restore(data)

    def _restore(self, data: bytes) -> None:
        self._check_free()
        tensors = load_snapshot(self.model.metadata, data)
        last = tensors.pop("log_probs", None)
        C = self.model.metadata.num_classes
        if last is not None and last.shape != (C,):
            raise SnapshotError(
                f"saved log_probs has shape {last.shape}; this model expects ({C},)"
            )
        if last is not None and not np.isfinite(last).all():
            raise SnapshotError(
                f"saved log_probs has {int((~np.isfinite(last)).sum())} non-finite values; "
                "expected finite log-probabilities"
            )
        checked = self.model.check_state(tensors, 1)
        self._buffers.write(checked)
        self._last = last

    def enter_pool(self, pool) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Hand this stream over to `pool` (StreamPool.join calls it).

        Returns:
            A copy of its state and its last log_probs (None: no prediction yet). Until
            `leave_pool`, the stream advances only through the pool.
        """
        with self._owner:
            if self._pool is not None:
                raise StreamError("this stream is already in a pool")
            if self._buffers is None:  # made by _for_pool: at the initial state
                state = {k: v.copy() for k, v in self._zeros.items()}
            else:
                state = self._buffers.read()
            self._pool = pool
            return state, self._last

    def leave_pool(self, pool, state: Mapping[str, np.ndarray], last: np.ndarray | None):
        """Take this stream back from `pool` with the state and last log_probs (or None)
        it has there (StreamPool.leave calls it); it runs alone again."""
        with self._owner:
            if self._pool is not pool:
                raise StreamError("this stream is not a member of that pool")
            if self._buffers is None:
                self._bind()
            self._buffers.write(state)
            self._last = last
            self._pool = None


_FLOAT32 = np.dtype(np.float32)


def _blown_up(what: str) -> StreamError:
    return StreamError(
        f"{what} gives a state or log-probabilities that are not finite (NaN or infinity: "
        "the state blew up); the stream is left as it was before it"
    )


def line_text(line: str) -> str:
    """A line without its end: one "\n", then one "\r" before it (a line ends at "\n" or
    "\r\n", as score and predict read files); any other "\r" is the text's."""
    if line.endswith("\n"):
        line = line[:-1]
    return line[:-1] if line.endswith("\r") else line


def stream_lines(
    stream: StreamSession,
    lines: Iterable[str],
    *,
    every_step: bool = False,
    carry: bool = False,
    k: int = 1,
) -> Iterator[dict]:
    """Run a stream over lines of text as they come, yielding JSON-ready records.

    Args:
        stream: the stream to advance.
        lines: any iterable of lines (a file read lazily, e.g. stdin as a person types).
        every_step: one record per character instead of one per line.
        carry: keep the state across lines; by default each line is a separate text
            and the stream is reset before it.
        k: how many (label, probability) pairs "top_k" lists.

    Yields:
        {"line": n, "text": the line, "label", "probability", "top_k"} after each line
        (label and probability None, top_k [], for an empty line with no prediction), or
        with every_step {"line": n, "step": i, "char": c, "label", "probability",
        "top_k"} per character, and for an empty line one record with step 0, char ""
        and the current prediction (none unless carry).
    """
    for n, line in enumerate(lines, 1):
        text = line_text(line)
        if not carry:
            stream.reset()
        if every_step:
            for i, char in enumerate(text, 1):
                yield {"line": n, "step": i, "char": char, **stream.step(char).to_dict(k)}
            if not text:  # one record for an empty line too: every line shows
                yield {"line": n, "step": 0, "char": "", **_record(stream.prediction, k)}
            continue
        yield {"line": n, "text": text, **_record(stream.feed(text), k)}


def _record(prediction: Prediction | None, k: int) -> dict:
    if prediction is None:
        return {"label": None, "probability": None, "top_k": []}
    return prediction.to_dict(k)
