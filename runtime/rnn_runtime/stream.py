"""One stream of text through an exported RNN, one step at a time.

The per-step path does no allocation of tensors, no copy of the state and no
re-validation of the graph: the token goes into a preallocated buffer that an
IOBinding already holds, and the state ping-pongs between two buffers allocated on
the provider's device, with one prebuilt IOBinding per direction. Steps go through the
file's step model when the StreamModel opened one (model.step_session), else through
the main graph; longer chunks (`feed`) always go through the main graph.

Thread safety: a StreamSession is not safe to use from two threads at once (guard it
with a lock if you must); distinct streams on one shared StreamModel are safe to run
concurrently on any number of threads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import onnxruntime as ort

from rnn_runtime.model import StreamError, StreamModel, layer_views
from rnn_runtime.snapshot import SnapshotError, dump_snapshot, load_snapshot

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


class _StateBuffers:
    """Two sets of state buffers on the provider's device; `current` is the live one.

    On the CPU each state is a numpy array that its OrtValue (`sets`) and, for the step
    model, its per-layer OrtValues (`layer_sets`) share: the main graph and the step
    model read and write the same bytes, so either may advance a stream.
    """

    def __init__(self, model: StreamModel, batch_size: int):
        shapes = model.state_shapes(batch_size)
        if model.device == "cpu":
            self.arrays = tuple(
                [np.zeros(shape, dtype=np.float32) for shape in shapes] for _ in range(2)
            )
            self.sets = tuple(
                [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays] for arrays in self.arrays
            )
            self.layer_sets = tuple(
                [ort.OrtValue.ortvalue_from_numpy(view) for a in arrays for view in layer_views(a)]
                for arrays in self.arrays
            )
        else:
            self.arrays = None
            self.sets = tuple(
                [
                    ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, model.device, 0)
                    for shape in shapes
                ]
                for _ in range(2)
            )
            self.layer_sets = None
        self.current = 0

    def read(self, model: StreamModel) -> dict[str, np.ndarray]:
        if self.arrays is not None:
            return {
                s.input: a.copy()
                for s, a in zip(model.metadata.states, self.arrays[self.current], strict=True)
            }
        return {
            s.input: v.numpy().copy()
            for s, v in zip(model.metadata.states, self.sets[self.current], strict=True)
        }

    def write(self, model: StreamModel, state: Mapping[str, np.ndarray]) -> None:
        if self.arrays is not None:
            for s, a in zip(model.metadata.states, self.arrays[self.current], strict=True):
                a[...] = state[s.input]
            return
        for s, v in zip(model.metadata.states, self.sets[self.current], strict=True):
            v.update_inplace(state[s.input])


def _bind(model: StreamModel, tokens, lengths, states_in, states_out, log_probs) -> ort.IOBinding:
    meta = model.metadata
    binding = model.session.io_binding()
    binding.bind_ortvalue_input(meta.tokens.name, tokens)
    binding.bind_ortvalue_input(meta.lengths.name, lengths)
    binding.bind_ortvalue_output(meta.log_probs.name, log_probs)
    for spec, v_in, v_out in zip(meta.states, states_in, states_out, strict=True):
        binding.bind_ortvalue_input(spec.input, v_in)
        binding.bind_ortvalue_output(spec.output, v_out)
    return binding


class _Steps:
    """Prebuilt one-token-per-row calls at batch n over a _StateBuffers.

    Write the ids into `tokens` (n,), call `run(bindings[buffers.current])`, flip
    buffers.current, read `log_probs` (n, C). Through the step model when the model has
    one (per-layer states), else through the main graph (T = 1, lengths 1).
    """

    def __init__(self, model: StreamModel, buffers: _StateBuffers, n: int):
        meta = model.metadata
        self.log_probs = np.zeros((n, meta.num_classes), dtype=np.float32)
        log_probs = ort.OrtValue.ortvalue_from_numpy(self.log_probs)
        if model.step_session is not None:
            step = meta.step
            self.session = model.step_session
            self.tokens = np.zeros((n,), dtype=np.int64)
            tokens = ort.OrtValue.ortvalue_from_numpy(self.tokens)
            self.bindings = []
            for k in (0, 1):
                binding = self.session.io_binding()
                binding.bind_ortvalue_input(step.token, tokens)
                binding.bind_ortvalue_output(step.log_probs, log_probs)
                pairs = zip(
                    step.states, buffers.layer_sets[k], buffers.layer_sets[k ^ 1], strict=True
                )
                for (name_in, name_out), v_in, v_out in pairs:
                    binding.bind_ortvalue_input(name_in, v_in)
                    binding.bind_ortvalue_output(name_out, v_out)
                self.bindings.append(binding)
        else:
            self.session = model.session
            self._tokens = np.zeros((n, 1), dtype=np.int64)
            self.tokens = self._tokens[:, 0]  # a view: writing it feeds the graph
            tokens = ort.OrtValue.ortvalue_from_numpy(self._tokens)
            ones = ort.OrtValue.ortvalue_from_numpy(np.ones((n,), dtype=np.int64))
            a, b = buffers.sets
            self.bindings = [
                _bind(model, tokens, ones, a, b, log_probs),
                _bind(model, tokens, ones, b, a, log_probs),
            ]
        self.bindings = tuple(self.bindings)
        self.run = self.session.run_with_iobinding


class StreamSession:
    """One stream: a state that text advances one character (or one chunk) at a time.

    Args:
        model: an opened StreamModel (shared freely between streams).
        strict: raise UnknownCharError for characters outside the vocabulary instead
            of mapping them to the unknown id.

    Every method that changes the state validates its input first: on an error the
    stream is left exactly as it was.
    """

    def __init__(self, model: StreamModel, *, strict: bool = False):
        self.model = model
        self.strict = strict
        self._labels = model.metadata.labels
        self._char_ids = model._char_ids
        self._vocab_size = model.metadata.vocab_size
        self._pool = None
        self._zeros = model.initial_state(1)
        self._buffers = _StateBuffers(model, 1)
        # CPU OrtValues made from numpy share its memory: writing the array feeds the graph.
        self._steps = _Steps(model, self._buffers, 1)
        self._token = self._steps.tokens
        self._log_probs = self._steps.log_probs
        self._row = self._log_probs[0]  # a view: the step's output row
        self._bindings = self._steps.bindings
        self._run = self._steps.run
        self._last: np.ndarray | None = None
        self.reset()

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

    def step(self, token: str | int) -> Prediction:
        """Advance by one character or token id and return the new prediction."""
        if self._pool is not None:
            self._check_free()
        # Fast paths for the common cases; anything else goes through full validation.
        if type(token) is str and token in self._char_ids:
            self._token[0] = self._char_ids[token]
        elif type(token) is int and 0 <= token < self._vocab_size:
            self._token[0] = token
        else:
            self._token[0] = self.model.token_id(token, strict=self.strict)
        buffers = self._buffers
        self._run(self._bindings[buffers.current])
        buffers.current ^= 1
        last = self._last = self._row.copy()
        return Prediction(last, self._labels)

    def feed(self, tokens: str | Iterable[int] | np.ndarray) -> Prediction | None:
        """Advance by a text or a sequence of token ids (one onnxruntime call per chunk).

        Returns:
            The prediction after the last token; for empty input, the current
            prediction (None if nothing was fed since reset).
        """
        self._check_free()
        ids = self.model.token_ids(tokens, strict=self.strict)
        for start in range(0, ids.size, MAX_CHUNK):
            self._run_chunk(ids[start : start + MAX_CHUNK])
        return self.prediction

    def _run_chunk(self, ids: np.ndarray) -> None:
        tokens = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(ids.reshape(1, -1)))
        length = ort.OrtValue.ortvalue_from_numpy(np.array([ids.size], dtype=np.int64))
        log_probs = ort.OrtValue.ortvalue_from_numpy(self._log_probs)  # shares its memory
        sets = self._buffers.sets
        cur = self._buffers.current
        binding = _bind(self.model, tokens, length, sets[cur], sets[cur ^ 1], log_probs)
        self.model.session.run_with_iobinding(binding)
        self._buffers.current ^= 1
        self._last = self._log_probs[0].copy()

    def reset(self) -> None:
        """Return to the initial state, bit for bit, and forget the prediction."""
        self._check_free()
        self._buffers.write(self.model, self._zeros)
        self._last = None

    def get_state(self) -> dict[str, np.ndarray]:
        """A copy of the state: {state input name: float32 array with B=1}."""
        self._check_free()
        return self._buffers.read(self.model)

    def set_state(self, state: Mapping[str, np.ndarray] | np.ndarray) -> None:
        """Replace the state (validated: names, dtype float32, shape with B=1, finite).

        A single array is accepted for a model with one state. The prediction is
        forgotten (it belonged to the old state).
        """
        self._check_free()
        checked = self.model.check_state(state, 1)
        self._buffers.write(self.model, checked)
        self._last = None

    def save(self) -> bytes:
        """The state (and last prediction) as bytes in the format of rnn_runtime.snapshot."""
        self._check_free()
        tensors = self._buffers.read(self.model)
        if self._last is not None:
            tensors["log_probs"] = self._last
        return dump_snapshot(self.model.metadata, tensors)

    def restore(self, data: bytes) -> None:
        """Restore a state saved by `save`, possibly in another process.

        Raises:
            SnapshotError: not a saved stream, corrupt, or saved from another model
                (its checkpoint sha256 differs); StreamError: a saved state that does
                not fit this model. The stream is unchanged on error.
        """
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
        self._buffers.write(self.model, checked)
        self._last = last


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
        (label and probability None for an empty line with no prediction), or with
        every_step {"line": n, "step": i, "char": c, "label", "probability", "top_k"}.
    """
    for n, line in enumerate(lines, 1):
        text = line.rstrip("\r\n")
        if not carry:
            stream.reset()
        if every_step:
            for i, char in enumerate(text, 1):
                yield {"line": n, "step": i, "char": char, **stream.step(char).to_dict(k)}
            continue
        prediction = stream.feed(text)
        if prediction is None:
            yield {"line": n, "text": text, "label": None, "probability": None, "top_k": []}
        else:
            yield {"line": n, "text": text, **prediction.to_dict(k)}
