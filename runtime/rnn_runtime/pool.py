"""Many independent streams advanced together: one onnxruntime call per step for all.

A stream that joins a pool hands its state to the pool, which keeps the states of all
its members concatenated along each state's batch axis (StateSpec.batch_axis) on the
provider's device. `step` with one token per member runs the batch through prebuilt
IOBindings, ping-ponging two batched state buffers, like a single stream does. Joining
and leaving cost O(1) amortized: the states move to the host (`_Rows`, whose capacity
doubles), members are appended or marked gone there, and the next step or feed builds
the buffers once for the new membership; a member that `join()` makes gets buffers of
its own only when it leaves. Steps for a subset of the members, and `feed` with chunks of
different lengths (padded, with the `lengths` input), gather the rows concerned and
scatter them back; `feed` runs in
calls of at most MAX_CHUNK padded tokens in all (rows x length, as a stream's chunk), so
one long text among short ones costs a stream's memory, not the longest times the rows.

A call whose result is not finite for some member (its state blew up) raises
StreamError and changes nothing: every member keeps its state and prediction from
before the call; the message names the members, which can leave and run alone.

A stream enters and leaves through its own `enter_pool` and `leave_pool`; which members
have no prediction yet is kept in a set, never encoded in the log-probabilities.

Thread safety: a pool (and its member streams) must not be used from two threads at
once: a call that finds another thread's call inside raises StreamError
(rnn_runtime.ownership); distinct pools on one shared StreamModel may run concurrently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from rnn_runtime.errors import StreamError
from rnn_runtime.ownership import Ownership
from rnn_runtime.session import RUN_ERRORS, nonfinite_rows, run_failed
from rnn_runtime.stream import MAX_CHUNK, Prediction, StreamSession

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


class _Rows:
    """The members' states and log_probs on the host while the membership changes.

    Rows are appended into spare capacity (doubled when full) and a member that leaves
    leaves a hole, dropped at `compact` (or when holes outnumber members), so that any run
    of joins and leaves costs O(1) amortized each; row order is the members' order.

    Args:
        specs: the model's StateSpecs (each state's batch axis).
        members, state, last: the pool's members, their states (batch n along each
            spec's batch axis) and log_probs (n, C), taken over (not copied).
    """

    def __init__(self, specs, members: list, state: dict[str, np.ndarray], last: np.ndarray):
        self.specs = specs
        self.members: list = list(members)  # None where a member left
        self.state = state
        self.last = last
        self.live = len(members)

    def _resize(self, capacity: int, rows) -> None:
        """Keep `rows` (indices) at the front of arrays of `capacity` rows."""
        for spec in self.specs:
            old = self.state[spec.input]
            shape = list(old.shape)
            shape[spec.batch_axis] = capacity
            new = np.zeros(shape, np.float32)
            index = [slice(None)] * old.ndim
            index[spec.batch_axis] = slice(0, len(rows))
            new[tuple(index)] = np.take(old, rows, axis=spec.batch_axis)
            self.state[spec.input] = new
        last = np.zeros((capacity, self.last.shape[1]), np.float32)
        last[: len(rows)] = self.last[rows]
        self.last = last

    def append(self, stream, state: Mapping[str, np.ndarray], last: np.ndarray | None) -> int:
        """Add a member with its state (B=1) and log_probs (C,) or None; returns its row."""
        n = len(self.members)
        if n == self.last.shape[0]:
            self._resize(max(8, 2 * n), np.arange(n))
        for spec in self.specs:
            index = [slice(None)] * state[spec.input].ndim
            index[spec.batch_axis] = slice(n, n + 1)
            self.state[spec.input][tuple(index)] = state[spec.input]
        self.last[n] = 0.0 if last is None else last
        self.members.append(stream)
        self.live += 1
        return n

    def row(self, i: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Row i's state (B=1) and log_probs (C,), copies."""
        own = {s.input: np.take(self.state[s.input], [i], axis=s.batch_axis) for s in self.specs}
        return own, self.last[i].copy()

    def remove(self, i: int) -> None:
        """Row i becomes a hole."""
        self.members[i] = None
        self.live -= 1

    def packed(self) -> bool:
        """Drop the holes when they outnumber the members; True when rows moved."""
        holes = len(self.members) - self.live
        if holes <= max(8, self.live):
            return False
        rows = [i for i, m in enumerate(self.members) if m is not None]
        self._resize(2 * len(rows), rows)
        self.members = [self.members[i] for i in rows]
        return True

    def compact(self) -> tuple[list, dict[str, np.ndarray], np.ndarray]:
        """The members, their states (batch n) and log_probs (n, C), holes dropped."""
        rows = [i for i, m in enumerate(self.members) if m is not None]
        state = {s.input: np.take(self.state[s.input], rows, axis=s.batch_axis) for s in self.specs}
        return [self.members[i] for i in rows], state, self.last[rows]


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
        self._owner = Ownership("pool")
        self._staged: _Rows | None = None  # the members' states while membership changes
        self._allocate([], model.initial_state(0), np.zeros((0, self._C), np.float32))

    @property
    def streams(self) -> tuple[StreamSession, ...]:
        """The members, in row order: row i of `step`'s tokens goes to streams[i]."""
        if self._streams is None:
            self._streams = tuple(m for m in self._staged.members if m is not None)
        return self._streams

    def __len__(self) -> int:
        return len(self._members) if self._staged is None else self._staged.live

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

    def _stage(self) -> _Rows:
        """The members' states on the host, for a change of membership (O(n) once)."""
        if self._staged is None:
            self._staged = _Rows(
                self.model.metadata.states, self._members, self._state(), self._last().copy()
            )
            self._buffers = self._steps = None
        self._streams = None
        return self._staged

    def _settle(self) -> None:
        """Build the buffers and bindings for the membership staged (O(n) once)."""
        if self._staged is not None:
            members, state, last = self._staged.compact()
            self._allocate(members, state, last)
            self._staged = None

    def _state(self) -> dict[str, np.ndarray]:
        self._settle()
        if self._buffers is None:
            return self.model.initial_state(0)
        return self._buffers.read()

    def _last(self) -> np.ndarray:
        """(n, C) log_probs of the current states (a view; rows of `_unpredicted` unset)."""
        self._settle()
        if self._buffers is None:
            return np.zeros((0, self._C), np.float32)
        return self._buffers.log_probs[self._buffers.current]

    def join(self, stream: StreamSession | None = None) -> StreamSession:
        """Add a stream (a new one at the initial state if None); returns it.

        The stream keeps its state and prediction; until it leaves, it is advanced
        only through the pool.
        """
        with self._owner:
            return self._join(stream)

    def _join(self, stream: StreamSession | None) -> StreamSession:
        if stream is None:
            stream = StreamSession._for_pool(self.model)
        if not isinstance(stream, StreamSession):
            raise StreamError(f"a pool takes StreamSession objects; got {type(stream).__name__}")
        if stream.model is not self.model:
            raise StreamError(
                f"this pool runs {self.model.path}; the stream runs {stream.model.path} "
                "(a different StreamModel object)"
            )
        joining, last = stream.enter_pool(self)
        try:
            self._slot[id(stream)] = self._stage().append(stream, joining, last)
        except BaseException:
            stream.leave_pool(self, joining, last)  # hand it back as it came
            raise
        if last is None:
            self._unpredicted.add(id(stream))
        return stream

    def leave(self, stream: StreamSession) -> StreamSession:
        """Remove a member; it takes its state and prediction with it and runs alone again."""
        with self._owner:
            return self._leave(stream)

    def _leave(self, stream: StreamSession) -> StreamSession:
        i = self._index(stream)
        staged = self._stage()
        own, last = staged.row(i)
        stream.leave_pool(self, own, None if id(stream) in self._unpredicted else last)
        staged.remove(i)
        del self._slot[id(stream)]
        self._unpredicted.discard(id(stream))
        if staged.packed():
            self._slot = {id(m): r for r, m in enumerate(staged.members)}
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
        last = self._last() if self._staged is None else self._staged.last
        return Prediction(last[i].copy(), self.model.labels)

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
        with self._owner:
            return self._step(tokens)

    def _step(self, tokens) -> BatchPrediction:
        if self._staged is not None:
            self._settle()
        if isinstance(tokens, Mapping):
            return self._feed(
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
        with self._owner:
            return self._feed(inputs)

    def _feed(self, inputs: Mapping) -> BatchPrediction:
        self._settle()
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
        specs = self.model.metadata.states
        state = self._state()
        sub = {s.input: np.take(state[s.input], rows, axis=s.batch_axis) for s in specs}
        log_probs = np.zeros((len(ids), self._C), np.float32)
        done = np.zeros(len(ids), np.int64)
        sizes = np.array([len(x) for x in ids], dtype=np.int64)
        reader = self.model.reader
        # Calls of at most MAX_CHUNK padded tokens: the rows still running, each at most
        # T further tokens; the state of every call stays here until all have run.
        while (active := np.flatnonzero(done < sizes)).size:
            T = int(min((sizes - done)[active].max(), max(1, MAX_CHUNK // active.size)))
            tokens = np.zeros((active.size, T, *reader.step_shape), dtype=reader.dtype)
            lengths = np.minimum(sizes[active] - done[active], T)
            for j, r in enumerate(active):
                tokens[j, : lengths[j]] = ids[r][done[r] : done[r] + lengths[j]]
            part = {
                s.input: np.ascontiguousarray(np.take(sub[s.input], active, axis=s.batch_axis))
                for s in specs
            }
            try:
                lp, new = self.model.run(tokens, part, lengths)
            except RUN_ERRORS as e:
                raise run_failed(e) from e
            bad = nonfinite_rows(specs, lp, [new[s.input] for s in specs])
            if bad:
                raise self._blown_up([rows[active[r]] for r in bad], "feed")
            _put_rows(specs, sub, active, new)
            log_probs[active] = lp
            done[active] += lengths
        _put_rows(specs, state, rows, sub)
        self._buffers.write(state)
        self._last()[rows] = log_probs
        self._unpredicted.difference_update(id(s) for s in streams)
        return BatchPrediction(streams, log_probs, self.model.labels)


def _put_rows(specs, state: dict[str, np.ndarray], rows, values: Mapping[str, np.ndarray]):
    """Write values (batch len(rows) along each spec's batch axis) into rows of state."""
    for spec in specs:
        index = [slice(None)] * state[spec.input].ndim
        index[spec.batch_axis] = rows
        state[spec.input][tuple(index)] = values[spec.input]
