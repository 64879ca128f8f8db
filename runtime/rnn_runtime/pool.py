"""Many independent streams advanced together: one onnxruntime call per step for all.

A stream that joins a pool hands its state to the pool, which keeps the states of all
its members concatenated along each state's batch axis (StateSpec.batch_axis) on the
provider's device. `step` with one token per member runs the batch through prebuilt
IOBindings, ping-ponging two batched state buffers, like a single stream does. Joining
and leaving reallocate the buffers (once per membership change, not per step). Steps
for a subset of the members, and `feed` with chunks of different lengths (padded, with
the `lengths` input), gather the rows concerned and scatter them back.

A call whose result is not finite for some member (its state blew up) raises
StreamError and changes nothing: every member keeps its state and prediction from
before the call; the message names the members, which can leave and run alone.

A stream enters and leaves through its own `enter_pool` and `leave_pool`; which members
have no prediction yet is kept in a set, never encoded in the log-probabilities.

Thread safety: a pool (and its member streams) must not be used from two threads at
once; distinct pools on one shared StreamModel may run concurrently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from rnn_runtime.errors import StreamError
from rnn_runtime.session import RUN_ERRORS, nonfinite_rows, run_failed
from rnn_runtime.stream import Prediction, StreamSession

_INT64 = np.dtype(np.int64)


class BatchPrediction:
    """The predictions of several streams after one pool call, in `streams` order.

    Attributes:
        streams: the streams advanced, row i = streams[i].
        log_probs: float32 (N, C), a private copy.
    """

    __slots__ = ("streams", "log_probs", "_labels")

    def __init__(self, streams: tuple, log_probs: np.ndarray, labels: tuple[str, ...]):
        self.streams = streams
        self.log_probs = log_probs
        self._labels = labels

    def __len__(self) -> int:
        return len(self.streams)

    def __getitem__(self, i: int) -> Prediction:
        return Prediction(self.log_probs[i], self._labels)

    def get(self, stream: StreamSession) -> Prediction:
        """The prediction of one of the streams advanced."""
        return self[self.streams.index(stream)]

    @property
    def label_ids(self) -> np.ndarray:
        """int64 (N,) top class id of each stream."""
        return np.argmax(self.log_probs, axis=1)

    @property
    def labels(self) -> list[str]:
        return [self._labels[i] for i in self.label_ids]

    @property
    def probabilities(self) -> np.ndarray:
        """float32 (N,) probability of each stream's top label."""
        return np.exp(self.log_probs.max(axis=1))


class StreamPool:
    """Advance N streams of one model in one onnxruntime call per step.

    Args:
        model: the StreamModel all member streams run on.

    Each member's results are those it would get alone (see the README for how
    exactly onnxruntime's batched results match unbatched ones).
    """

    def __init__(self, model):
        self.model = model
        self._C = model.metadata.num_classes
        self._unpredicted: set[int] = set()  # id() of the members with no prediction yet
        self._allocate([], model.initial_state(0), np.zeros((0, self._C), np.float32))

    @property
    def streams(self) -> tuple[StreamSession, ...]:
        """The members, in row order: row i of `step`'s tokens goes to streams[i]."""
        return self._streams

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, stream: StreamSession) -> bool:
        return id(stream) in self._slot

    def _allocate(self, members: list, state: dict[str, np.ndarray], last: np.ndarray) -> None:
        """(Re)build the batched buffers and bindings for `members`; all or nothing."""
        n = len(members)
        buffers = steps = None
        if n:
            buffers = self.model.state_buffers(n)
            buffers.write(state)
            buffers.log_probs[buffers.current][...] = last
            steps = self.model.bind_steps(buffers, n)
        self._members = members
        self._slot = {id(s): i for i, s in enumerate(members)}
        self._streams = tuple(members)
        self._buffers = buffers
        self._steps = steps
        if steps is not None:
            self._tokens = steps.tokens
            self._advance = steps.advance

    def _state(self) -> dict[str, np.ndarray]:
        if self._buffers is None:
            return self.model.initial_state(0)
        return self._buffers.read()

    def _last(self) -> np.ndarray:
        """(n, C) log_probs of the current states (a view; rows of `_unpredicted` unset)."""
        if self._buffers is None:
            return np.zeros((0, self._C), np.float32)
        return self._buffers.log_probs[self._buffers.current]

    def join(self, stream: StreamSession | None = None) -> StreamSession:
        """Add a stream (a new one at the initial state if None); returns it.

        The stream keeps its state and prediction; until it leaves, it is advanced
        only through the pool.
        """
        if stream is None:
            stream = self.model.stream()
        if not isinstance(stream, StreamSession):
            raise StreamError(f"a pool takes StreamSession objects; got {type(stream).__name__}")
        if stream.model is not self.model:
            raise StreamError(
                f"this pool runs {self.model.path}; the stream runs {stream.model.path} "
                "(a different StreamModel object)"
            )
        joining, last = stream.enter_pool(self)
        try:
            members = self._state()
            state = {
                spec.input: np.concatenate(
                    [members[spec.input], joining[spec.input]], axis=spec.batch_axis
                )
                for spec in self.model.metadata.states
            }
            row = np.zeros((1, self._C), np.float32) if last is None else last[None]
            self._allocate(self._members + [stream], state, np.concatenate([self._last(), row]))
        except BaseException:
            stream.leave_pool(self, joining, last)  # hand it back as it came
            raise
        if last is None:
            self._unpredicted.add(id(stream))
        return stream

    def leave(self, stream: StreamSession) -> StreamSession:
        """Remove a member; it takes its state and prediction with it and runs alone again."""
        i = self._index(stream)
        state = self._state()
        own = {
            spec.input: np.take(state[spec.input], [i], axis=spec.batch_axis)
            for spec in self.model.metadata.states
        }
        rest = {
            spec.input: np.delete(state[spec.input], i, axis=spec.batch_axis)
            for spec in self.model.metadata.states
        }
        lasts = self._last()
        last = None if id(stream) in self._unpredicted else lasts[i].copy()
        members = self._members[:i] + self._members[i + 1 :]
        self._allocate(members, rest, np.delete(lasts, i, axis=0))
        self._unpredicted.discard(id(stream))
        stream.leave_pool(self, own, last)
        return stream

    def _index(self, stream: StreamSession) -> int:
        i = self._slot.get(id(stream))
        if i is None:
            raise StreamError(f"{stream!r} is not a member of this pool")
        return i

    def prediction_of(self, stream: StreamSession) -> Prediction | None:
        """A member's prediction after its last step (None if it has none yet)."""
        i = self._index(stream)
        if id(stream) in self._unpredicted:
            return None
        return Prediction(self._last()[i].copy(), self.model.labels)

    def _blown_up(self, rows: list[int], call: str) -> StreamError:
        shown = ", ".join(f"row {r}" for r in rows[:8]) + (", ..." if len(rows) > 8 else "")
        return StreamError(
            f"pool {call}: the result of {len(rows)} member(s) ({shown}) is not finite (NaN "
            "or infinity: their state blew up); nothing changed: every member keeps its "
            "state; let those members leave to advance the others"
        )

    def step(
        self, tokens: Sequence[str | int] | np.ndarray | Mapping[StreamSession, str | int]
    ) -> BatchPrediction:
        """Advance members by one token each, in one onnxruntime call.

        Args:
            tokens: one character or token id per member, in `streams` order (a
                sequence, or an int64 (N,) array of ids); or a mapping
                {member: token} to advance only some members.

        Returns:
            The predictions of the members advanced.
        """
        if isinstance(tokens, Mapping):
            return self.feed(
                {
                    s: self.model.step_input(t, strict=s.strict)[None]
                    if self.model.tokenizer is None
                    else [self.model.token_id(t, strict=s.strict)]
                    for s, t in self._checked_items(tokens)
                }
            )
        n = len(self._members)
        ids = self._ids_per_member(tokens)
        if n == 0:
            return BatchPrediction((), np.zeros((0, self._C), np.float32), self.model.labels)
        self._tokens[:] = ids
        buffers = self._buffers
        if not self._advance():
            raise self._blown_up(buffers.nonfinite_rows(buffers.current ^ 1), "step")
        if self._unpredicted:
            self._unpredicted.clear()
        log_probs = buffers.log_probs[buffers.current].copy()
        return BatchPrediction(self._streams, log_probs, self.model.labels)

    def _ids_per_member(self, tokens) -> np.ndarray:
        n = len(self._members)
        if self.model.tokenizer is None:  # a features model: one frame per member, (n, F)
            frames = self.model.sequence(tokens)
            if len(frames) != n:
                raise StreamError(f"pool step got {len(frames)} frames; the pool has {n} members")
            return frames
        if (
            type(tokens) is np.ndarray
            and tokens.dtype is _INT64
            and tokens.shape == (n,)
            # Seen as unsigned, a negative id is huge: one reduction checks 0 <= id < V.
            and (n == 0 or tokens.view(np.uint64).max() < self.model.metadata.vocab_size)
        ):
            return tokens  # the common case, checked in full above
        if isinstance(tokens, np.ndarray):
            if tokens.shape != (n,) or not np.issubdtype(tokens.dtype, np.integer):
                raise StreamError(
                    f"pool step tokens have shape {tokens.shape}, dtype {tokens.dtype}; "
                    f"expected an integer array of shape ({n},), one id per member"
                )
            return self.model.token_ids(tokens)
        tokens = list(tokens)
        if len(tokens) != n:
            raise StreamError(f"pool step got {len(tokens)} tokens; the pool has {n} members")
        return np.array(
            [
                self.model.token_id(t, strict=s.strict)
                for s, t in zip(self._members, tokens, strict=True)
            ],
            dtype=np.int64,
        )

    def _checked_items(self, inputs: Mapping) -> list:
        items = list(inputs.items())
        for s, _ in items:
            self._index(s)
        return items

    def feed(
        self, inputs: Mapping[StreamSession, str | Iterable[int] | np.ndarray]
    ) -> BatchPrediction:
        """Advance some members by chunks of possibly different lengths, in one call.

        Args:
            inputs: {member: text or token ids}; each chunk is non-empty. Chunks are
                padded to the longest and the `lengths` input stops each row at its
                own last token.

        Returns:
            The predictions of the members advanced, in `inputs` order.
        """
        items = self._checked_items(inputs)
        ids = [self.model.sequence(x, strict=s.strict) for s, x in items]
        for (s, _), x in zip(items, ids, strict=True):
            if len(x) == 0:
                raise StreamError(f"pool feed needs at least one token per stream; {s!r} got none")
        streams = tuple(s for s, _ in items)
        if not items:
            return BatchPrediction((), np.zeros((0, self._C), np.float32), self.model.labels)
        rows = [self._slot[id(s)] for s in streams]
        if len(set(rows)) != len(rows):
            raise StreamError("pool feed got the same stream twice")
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        reader = self.model.reader
        tokens = np.zeros((len(ids), int(lengths.max()), *reader.step_shape), dtype=reader.dtype)
        for r, x in enumerate(ids):
            tokens[r, : len(x)] = x
        state = self._state()
        sub = {
            spec.input: np.ascontiguousarray(np.take(state[spec.input], rows, axis=spec.batch_axis))
            for spec in self.model.metadata.states
        }
        try:
            log_probs, new = self.model.run(tokens, sub, lengths)
        except RUN_ERRORS as e:
            raise run_failed(e) from e
        specs = self.model.metadata.states
        bad = nonfinite_rows(specs, log_probs, [new[spec.input] for spec in specs])
        if bad:
            raise self._blown_up([rows[r] for r in bad], "feed")
        for spec in specs:
            index = [slice(None)] * state[spec.input].ndim
            index[spec.batch_axis] = rows
            state[spec.input][tuple(index)] = new[spec.input]
        self._buffers.write(state)
        self._last()[rows] = log_probs
        self._unpredicted.difference_update(id(s) for s in streams)
        return BatchPrediction(streams, log_probs, self.model.labels)
