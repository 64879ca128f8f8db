"""The cases verify runs: local-error checks from many states, and whole runs.

Local error (the cases that decide for a correct file whatever the model's conditioning):
start states are taken from real trajectories of PyTorch float32 (inside validation
texts, along the long stream), uniform random states, sparse states (a few units on:
each output unit then sums few terms, so its allowance is tight and a wrong weight
stands out) and zeros. From exactly each state the file runs a short horizon (1 to
HORIZON steps) through every path of its graph: one token per call (T == 1), a whole
horizon at B == 1, all states at once with mixed lengths (B > 1), and the embedded step
model; each result is compared with the float64 reference from the same state.

Whole runs (as a user drives the file): batch sizes x lengths up to 1000, zero and
random initial states, mixed lengths in a padded batch, the run's validation split,
one token per call, random chunks; they are held to the same allowance, carried along
the run, and report the drift from PyTorch float32 and float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rnn_export.parity.bounds import Approx
from rnn_export.parity.compare import CaseFailure, check_shape, compare, error_ratios
from rnn_export.parity.results import LOCAL, CaseResult

BATCH_SIZES = (1, 8, 17)
# A traced export fixes T to its example's length (a word-sized example of 7 tokens
# here); the whole runs try that length, 16 times it, 1000 and 1.
EXAMPLE_LENGTH = 7
LONG_LENGTH = 1000
HORIZON = 4  # steps from each start state
START_STATES = 256  # per source
SPARSE_STATES = 1024  # single-unit sparse states: H units x as many quiet tokens as fit
B1_STATES = 512  # the B=1 path runs one call per state: at most this many of them
CELL_RANGE = 3.0  # random LSTM cell states: uniform in +-this (tanh(3) = 0.995)


def _lengths_label(lengths: np.ndarray):
    lo, hi = int(lengths.min()), int(lengths.max())
    return hi if lo == hi else f"{lo}..{hi}"


def decision_agreement(got: np.ndarray, ref: Approx) -> tuple[float, int]:
    """(fraction of rows whose top label is float64's, rows that differ at a clear margin).

    A margin is clear when float64's lead of its label over the file's label is wider than
    the allowances of the two: no float32 rounding within the allowance flips it.
    """
    mine = got.argmax(axis=-1)
    exact = ref.value.argmax(axis=-1)
    rows = np.arange(got.shape[0])
    margin = ref.value[rows, exact] - ref.value[rows, mine]
    room = ref.radius[rows, exact] + ref.radius[rows, mine]
    clear = (mine != exact) & (margin > room)
    return float(np.mean(mine == exact)), int(clear.sum())


def state_axes(meta) -> tuple[int, ...]:
    """The batch axis of each state, in the metadata's order."""
    return tuple(s.batch_axis for s in meta.states)


def check_state_count(states, ref_states) -> None:
    """Raises CaseFailure when the file returns another number of states than the model."""
    if len(states) != len(ref_states):
        raise CaseFailure(f"the file returns {len(states)} states; the model has {len(ref_states)}")


def random_state(config, B: int, rng) -> tuple[np.ndarray, ...]:
    """A uniform random float32 state: h in [-1, 1] (tanh's range), an LSTM's cell state
    c in [-CELL_RANGE, CELL_RANGE] (it is unbounded; trained cells mostly stay inside)."""
    shape = config.state_shape(B)
    ranges = [1.0 if name == "h0" else CELL_RANGE for name, _ in config.state_names]
    return tuple(rng.uniform(-r, r, size=shape).astype(np.float32) for r in ranges)


def draw_inputs(model, rng, size: tuple) -> np.ndarray:
    """Random inputs of the model's input stage: int64 token ids of shape size, or for a
    features model float32 frames (*size, F) around its training data (mean + scale *
    a standard normal, per feature)."""
    config = model.config
    if config.reads_tokens:
        return rng.integers(0, config.vocab_size, size=size, dtype=np.int64)
    mean, scale = (x.detach().double().numpy() for x in (model.frames.mean, model.frames.scale))
    return (mean + scale * rng.standard_normal((*size, config.input_size))).astype(np.float32)


def zero_state(config, B: int) -> tuple[np.ndarray, ...]:
    return tuple(np.zeros(config.state_shape(B), dtype=np.float32) for _ in config.state_names)


@dataclass
class Case:
    """Inputs of one whole run; its references are computed once for every provider.

    torch_state / torch_lengths are what PyTorch gets (None: zeros / all of T), while the
    file always gets explicit tensors. `chunks` drives the file in pieces with the state
    fed back; `agreement` reports decision agreement (real inputs).
    """

    name: str
    family: str
    tokens: np.ndarray
    state: tuple[np.ndarray, ...]
    lengths: np.ndarray
    torch_state: tuple[np.ndarray, ...] | None
    torch_lengths: np.ndarray | None
    chunks: list[int] | None = None
    agreement: bool = False
    same_inputs_as: Case | None = None  # a case with the same inputs: share its references
    _references: tuple | None = field(default=None, repr=False)

    def references(self, recurrence, torch32):
        """((log_probs, states) as Approx, PyTorch float32's (log_probs, states))."""
        if self.same_inputs_as is not None:
            return self.same_inputs_as.references(recurrence, torch32)
        if self._references is None:
            self._references = (
                recurrence.run(self.tokens, self.state, self.torch_lengths),
                torch32(self.tokens, self.torch_state, self.torch_lengths),
            )
        return self._references

    def run(self, runner, recurrence, torch32, names, tolerance=None) -> CaseResult:
        (ref_lp, ref_states), (t_lp, t_states) = self.references(recurrence, torch32)
        family = runner.family or self.family
        base = dict(
            provider=runner.provider,
            name=self.name,
            family=family,
            batch_size=self.tokens.shape[0],
            length=_lengths_label(self.lengths),
        )
        try:
            log_probs, states = self._drive(runner)
            check_state_count(states, ref_states)
            outputs = [compare(log_probs, ref_lp, names[0], t_lp, tolerance)]
            outputs += [
                compare(got, ref, name, want, tolerance)
                for got, ref, want, name in zip(
                    states, ref_states, t_states, names[1:], strict=True
                )
            ]
        except CaseFailure as e:
            return CaseResult(**base, error=str(e))
        agreement = clear = None
        if self.agreement:
            agreement, clear = decision_agreement(log_probs, ref_lp)
        return CaseResult(
            **base, outputs=tuple(outputs), agreement=agreement, clear_disagreements=clear
        )

    def _drive(self, runner):
        if self.chunks is None:
            return runner(self.tokens, self.state, self.lengths)
        state, start = self.state, 0
        B = self.tokens.shape[0]
        for size in self.chunks:
            piece = np.ascontiguousarray(self.tokens[:, start : start + size])
            log_probs, state = runner(piece, state, np.full(B, size, dtype=np.int64))
            start += size
        return log_probs, state


def plan_cases(ckpt, example_length: int, rng, validation) -> list[Case]:
    """The whole runs. validation: the run's validation split [(text, label)] or None."""
    cfg = ckpt.config
    cases = []

    def add(name, family, B, T, *, random_h0=True, lengths=None, **kwargs):
        """A case on random tokens; PyTorch gets state=None for zeros, lengths=None for full."""
        tokens = draw_inputs(ckpt.model, rng, (B, T))
        state = random_state(cfg, B, rng) if random_h0 else zero_state(cfg, B)
        ort_lengths = np.full(B, T, dtype=np.int64) if lengths is None else lengths
        torch_state = state if random_h0 else None
        case = Case(name, family, tokens, state, ort_lengths, torch_state, lengths, **kwargs)
        cases.append(case)
        return case

    for B in BATCH_SIZES:
        for T in sorted({1, 2, example_length, 16 * example_length, LONG_LENGTH}):
            add(f"B={B} T={T} random h0", "shapes", B, T)
    for B, T in [(1, example_length), (17, example_length), (8, LONG_LENGTH)]:
        add(f"B={B} T={T} zero h0", "zero-state", B, T, random_h0=False)
    for B, T, random_h0 in [
        (8, 16 * example_length, True),
        (17, LONG_LENGTH, True),
        (17, 64, False),
    ]:
        lengths = rng.integers(1, T + 1, size=B, dtype=np.int64)
        lengths[0], lengths[-1] = T, 1  # both extremes in every batch
        kind = "random" if random_h0 else "zero"
        add(f"B={B} T<={T} {kind} h0", "mixed-lengths", B, T, random_h0=random_h0, lengths=lengths)
    if validation:
        cases += validation_cases(ckpt, validation)
    T = 256
    for B in (1, 3):
        last = add(f"B={B} T={T} 1 token/call", "step-by-step", B, T, chunks=[1] * T)
        # The same tokens and state in random chunks.
        chunks = random_chunks(T, max(2, 4 * example_length), rng)
        cases.append(
            Case(
                f"B={B} T={T} {len(chunks)} chunks",
                "chunks",
                last.tokens,
                last.state,
                last.lengths,
                last.torch_state,
                None,
                chunks=chunks,
                same_inputs_as=last,
            )
        )
    return cases


def random_chunks(T: int, largest: int, rng) -> list[int]:
    chunks = []
    while sum(chunks) < T:
        chunks.append(int(min(rng.integers(1, largest + 1), T - sum(chunks))))
    return chunks


def validation_cases(ckpt, validation, batch_size: int = 256) -> list[Case]:
    """The run's validation split in padded batches from zeros, with decision agreement."""
    from rnn_export.data import encode_batch

    cases = []
    for start in range(0, len(validation), batch_size):
        texts = [text for text, _ in validation[start : start + batch_size]]
        tokens, lengths = encode_batch(texts, ckpt.vocab)
        B = len(texts)
        state = zero_state(ckpt.config, B)
        name = f"rows {start}-{start + B - 1}"
        lengths = lengths.numpy()
        cases.append(
            Case(name, "validation", tokens.numpy(), state, lengths, None, lengths, agreement=True)
        )
    return cases


# --- local error ----------------------------------------------------------------------


@dataclass
class StartStates:
    """Start states of the local-error checks, with the tokens that follow each.

    Args:
        states: the model-layout float32 states, N along each state's batch axis.
        tokens: int64 (N, HORIZON): the tokens after each state.
        sources: (N,) where each state comes from ("validation", "stream", ...).
        lengths: int64 (N,) in 1..HORIZON: each state's horizon on the T > 1 paths.
        single: the states the B=1 path runs (one call each), as many of every source.
    """

    states: tuple[np.ndarray, ...]
    tokens: np.ndarray
    sources: np.ndarray
    lengths: np.ndarray
    single: np.ndarray


def sparse_states(model, rng, tokens: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """States with few units on (each vector of each layer), and the first token after each.

    For every hidden unit i and every token of `tokens`, a state with only unit i on, at
    +-0.9..1; then for every unit i a state with unit i and one or two others on, followed
    by a random token. Each output unit then sums few recurrent terms: its allowance is
    tight, and a wrong weight from unit i stands out (most after the tokens that leave the
    unit unsaturated, so every unit is tried after every token of `tokens`).

    An LSTM's cell state has the same units on, at +-(0.5..CELL_RANGE), the others 0.

    Returns:
        (the state tuple (n along the batch axis), first tokens (n,) or frames (n, F)).
    """
    config = model.config
    H, k = config.hidden_size, len(tokens)
    n = H * (k + 1)
    state = zero_state(config, n)
    views = [s.reshape(-1, n, H) if s.ndim == 3 else s[None] for s in state]
    for layer in range(views[0].shape[0]):
        for r in range(n):
            extra = [] if r < H * k else rng.choice(H, size=int(rng.integers(1, 3)), replace=False)
            units = np.array(sorted({r % H, *extra}))
            signs = rng.choice([-1.0, 1.0], units.size)
            views[0][layer, r, units] = rng.uniform(0.9, 1.0, size=units.size) * signs
            for cell in views[1:]:
                size = rng.uniform(0.5, CELL_RANGE, size=units.size)
                cell[layer, r, units] = size * rng.choice([-1.0, 1.0], units.size)
    return state, np.concatenate([np.repeat(tokens, H, axis=0), draw_inputs(model, rng, (H,))])


def gather_rows(states: tuple[np.ndarray, ...], rows, axes) -> tuple[np.ndarray, ...]:
    return tuple(np.take(s, rows, axis=a) for s, a in zip(states, axes, strict=True))


def concat_rows(parts: list[tuple[np.ndarray, ...]], axes) -> tuple[np.ndarray, ...]:
    return tuple(np.concatenate([p[i] for p in parts], axis=a) for i, a in enumerate(axes))


class LocalCase:
    """One path of the file from every start state, compared step by step with the
    float64 reference from the same state.

    kind: "T=1" (one token per call, HORIZON calls with the state fed back), "B=1" (one
    call per state, T = HORIZON, its own length), "B>1" (one call for all states, T =
    HORIZON, mixed lengths).
    """

    def __init__(self, kind: str, start: StartStates, axes, names):
        self.kind, self.start, self.axes, self.names = kind, start, axes, names

    @property
    def name(self) -> str:
        n = self.start.tokens.shape[0]
        if self.kind == "B=1":
            n = len(self.start.single)
        what = {
            "T=1": f"1 token per call, {HORIZON} calls",
            "B=1": f"B=1 T={HORIZON}, lengths 1..{HORIZON}",
            "B>1": f"B={n} T={HORIZON}, mixed lengths",
        }[self.kind]
        return f"{what} from {n} states"

    def run(self, runner, reference, torch_steps, tolerance=None) -> CaseResult:
        """reference, torch_steps: the per-step outputs from every start state (steps first)."""
        start = self.start
        n, K = start.tokens.shape[:2]
        base = dict(
            provider=runner.provider,
            name=self.name if runner.family is None else f"{LOCAL}: {self.name}",
            family=runner.family or LOCAL,
            batch_size=len(start.single) if self.kind == "B=1" else n,
            length=1 if self.kind == "T=1" else f"1..{K}",
        )
        try:
            if self.kind == "T=1":
                steps = np.repeat(np.arange(K), n)
                rows = np.tile(np.arange(n), K)
                got = self._one_token_per_call(runner)
            else:
                rows = start.single if self.kind == "B=1" else np.arange(n)
                steps = start.lengths[rows] - 1
                got = self._whole_horizon(runner, rows)
            outputs, worst = self._compare(got, reference, torch_steps, steps, rows, tolerance)
        except CaseFailure as e:
            return CaseResult(**base, error=str(e))
        r = rows[worst]
        detail = f"worst: step {int(steps[worst]) + 1} from a {start.sources[r]} state (#{r})"
        return CaseResult(**base, outputs=outputs, detail=detail)

    def _one_token_per_call(self, runner):
        """(log_probs (K*n, C), states with K*n rows): the outputs after each call."""
        start = self.start
        n, K = start.tokens.shape[:2]
        state, lps, states = start.states, [], []
        ones = np.ones(n, dtype=np.int64)
        for k in range(K):
            lp, state = runner(np.ascontiguousarray(start.tokens[:, k : k + 1]), state, ones)
            lps.append(lp)
            states.append(state)
        return np.concatenate(lps), concat_rows(states, self.axes)

    def _whole_horizon(self, runner, rows):
        start = self.start
        if self.kind == "B>1":
            return runner(start.tokens, start.states, start.lengths)
        lps, states = [], []
        for i in rows:
            lp, state = runner(
                start.tokens[i : i + 1],
                gather_rows(start.states, [i], self.axes),
                start.lengths[i : i + 1],
            )
            lps.append(lp)
            states.append(state)
        return np.concatenate(lps), concat_rows(states, self.axes)

    def _compare(self, got, reference, torch_steps, steps, rows, tolerance):
        """Compare got (rows in the order of steps/rows) with the per-step references.

        Returns:
            (one OutputCheck per output, the index of the row with the worst ratio).
        """
        ref_lp, ref_states = reference
        t_lp, t_states = torch_steps
        log_probs, states = got
        check_state_count(states, ref_states)
        series = [(log_probs, _pick(ref_lp, steps, rows, 0), _pick(t_lp, steps, rows, 0), 0)]
        series += [
            (g, _pick(r, steps, rows, a), _pick(t, steps, rows, a), a)
            for g, r, t, a in zip(states, ref_states, t_states, self.axes, strict=True)
        ]
        outputs, per_row = [], np.zeros(len(rows))
        for (g, ref, want, axis), name in zip(series, self.names, strict=True):
            check_shape(np.asarray(g), ref, name)
            ratios = error_ratios(g, ref)
            outputs.append(compare(g, ref, name, want, tolerance, ratios))
            by_row = np.moveaxis(ratios, axis, 0).reshape(len(rows), -1).max(axis=1)
            per_row = np.maximum(per_row, by_row)
        return tuple(outputs), int(np.argmax(per_row))


def _pick(per_step, steps, rows, axis):
    """Element i of the result: row rows[i] of step steps[i], along the state's batch axis.

    per_step has the step axis first and the batch axis at 1 + axis.
    """
    if isinstance(per_step, Approx):
        return Approx(
            _pick(per_step.value, steps, rows, axis), _pick(per_step.radius, steps, rows, axis)
        )
    moved = np.moveaxis(per_step, 1 + axis, 1)  # (steps, B, ...)
    return np.moveaxis(moved[steps, rows], 0, axis)


def rows_of_steps(per_step: np.ndarray, steps, axis: int) -> np.ndarray:
    """States after the given steps of a B=1 run, as one batch along the batch axis.

    per_step: (S, *state shape with B = 1) -> (*state shape with B = len(steps)).
    """
    x = np.squeeze(per_step[steps], axis=1 + axis)
    return np.ascontiguousarray(np.moveaxis(x, 0, axis))


def plan_start_states(
    ckpt, torch32, axes, rng, validation=None, stream=None, quiet_tokens=None
) -> StartStates:
    """Start states from every source, each followed by HORIZON tokens.

    Args:
        ckpt: the Checkpoint (config, vocabulary).
        torch32: TorchFloat32 on its model (the trajectories' states are PyTorch's).
        axes: each state's batch axis.
        validation: the validation split [(text, label)], or None.
        stream: (tokens (1, S), PyTorch's states after each step (S, *state shape)), or None.
        quiet_tokens: token ids (or frames), quietest first (their input terms leave the
            units least saturated), to follow the sparse states; None: one random input.
    """
    from rnn_export.data import encode_batch

    cfg = ckpt.config
    K, N = HORIZON, START_STATES
    parts: list[tuple] = []  # (source, states, tokens)

    def continuation(seqs):
        out = draw_inputs(ckpt.model, rng, (len(seqs), K))
        for i, seq in enumerate(seqs):
            if len(seq):
                out[i, : min(K, len(seq))] = seq[:K]
        return out

    if validation:
        texts = [t for t, _ in validation if len(t) >= 2]
        if texts:
            picked = rng.choice(len(texts), size=min(N, len(texts)), replace=False)
            tokens, lengths = encode_batch([texts[i] for i in picked], ckpt.vocab)
            tokens, lengths = tokens.numpy(), lengths.numpy()
            cut = np.array([rng.integers(1, n) for n in lengths], dtype=np.int64)
            _, states = torch32(tokens[:, : int(cut.max())], None, cut)
            rest = [tokens[i, cut[i] : lengths[i]] for i in range(len(picked))]
            parts.append(("validation", states, continuation(rest)))
    if stream is not None:
        tokens, per_step = stream
        S = tokens.shape[1]
        if S >= 2:
            steps = np.sort(rng.choice(S - 1, size=min(N, S - 1), replace=False))
            states = tuple(rows_of_steps(s, steps, a) for s, a in zip(per_step, axes, strict=True))
            parts.append(("stream", states, continuation([tokens[0, t + 1 :] for t in steps])))
    parts.append(("random", random_state(cfg, N, rng), continuation([[]] * N)))
    quiet = draw_inputs(ckpt.model, rng, (1,)) if quiet_tokens is None else quiet_tokens
    quiet = quiet[: max(4, SPARSE_STATES // cfg.hidden_size)]
    sparse, first = sparse_states(ckpt.model, rng, quiet)
    follow = continuation([[]] * len(first))
    follow[:, 0] = first
    parts.append(("sparse", sparse, follow))
    parts.append(("zero", zero_state(cfg, 16), continuation([[]] * 16)))

    states = concat_rows([p[1] for p in parts], axes)
    tokens = np.concatenate([p[2] for p in parts])
    sources = np.concatenate([[p[0]] * len(p[2]) for p in parts])
    n = tokens.shape[0]
    lengths = rng.integers(1, K + 1, size=n, dtype=np.int64)
    lengths[:2] = (1, K)  # both extremes
    per_source = B1_STATES // len(parts)
    single = np.concatenate(
        [
            rng.choice(
                np.flatnonzero(sources == name), size=min(per_source, len(p[2])), replace=False
            )
            for name, p in zip([p[0] for p in parts], parts, strict=True)
        ]
    )
    return StartStates(states, tokens, sources, lengths, np.sort(single))
