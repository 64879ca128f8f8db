"""Open-time proof that a model file's graphs compute the same steps, on every token id
(or, for a features model, on MAX_PROBE_ROWS frames spread around its training data).

Streams take one-token steps through the embedded step model (or the main graph at
T == 1) and feed longer chunks through the main graph, whose If picks one of three paths
(T == 1; T > 1 at B == 1; T > 1 at B > 1: see rnn_export's export). A file whose paths
disagree would give step() and feed() different answers, so StreamModel refuses it at
open. From a non-zero state, `check_graphs` runs:
    1. with a step model: one step of every token id through the main graph (T == 1)
       and through the step model, B = V rows in one call;
    2. two steps of every token id, B = V rows, T = 2, lengths alternating 2 and 1:
       the main graph's B > 1 path against one-token steps;
    3. one sequence of the first SEQUENCE token ids, B = 1: the main graph's B == 1
       path against one-token steps.
One-token steps go through the step model when it is open, else through the main graph
at T == 1. Rows go CHECK_FLOATS state values at a time (one call for any model of a
sane size). Values the reference itself overflows to (|x| >= OVERFLOW, or NaN) are not
compared: a state that grows without bound is the model's nature, not an inconsistency.
"""

from __future__ import annotations

import numpy as np

from rnn_runtime.errors import MetadataError, ModelFileError
from rnn_runtime.frames import MAX_PROBE_ROWS
from rnn_runtime.session import RUN_ERRORS, run_step_model

RTOL, ATOL = 1e-4, 1e-5  # the project's parity tolerance (runtime against PyTorch)
CHECK_FLOATS = 1 << 22  # state values per call (16 MiB)
SEQUENCE = 256
OVERFLOW = 1e30


def check_graphs(meta, main, reader, step_session=None) -> None:
    """Prove the main graph's paths (and the step model, if given) agree on every token.

    Args:
        meta: the file's ModelMetadata.
        main: the InferenceSession on the main graph.
        reader: the model's input reader (a Tokenizer or a FrameReader): its probe()
            gives the inputs to check.
        step_session: the InferenceSession on the embedded step model, or None.

    Raises:
        MetadataError: two paths disagree (naming the input and the output).
        ModelFileError: onnxruntime cannot run one of them.
    """
    inputs = reader.probe(meta.vocab_size if meta.reads_tokens else MAX_PROBE_ROWS)
    per_row = sum(int(np.prod(s.concrete_shape(1))) for s in meta.states)
    rows = max(1, min(len(inputs), CHECK_FLOATS // per_row))
    step = _stepper(meta, main, step_session)
    shown = reader.shown
    for start in range(0, len(inputs), rows):
        tokens = inputs[start : start + rows]
        states = _start(meta, len(tokens))
        if step_session is not None:
            got = _run_main(meta, main, tokens[:, None], states, "T = 1")
            _compare(
                meta,
                "the embedded step model disagrees with the main graph on one step",
                tokens,
                step(tokens, states),
                got,
                shown,
            )
        lengths = np.where(np.arange(len(tokens)) % 2 == 0, 2, 1).astype(np.int64)
        got = _run_main(meta, main, np.stack([tokens, tokens], 1), states, "T > 1", lengths)
        _compare(
            meta,
            "the main graph's path for T > 1 at B > 1 disagrees with one-token steps",
            tokens,
            _steps_of_rows(meta, step, tokens, states, lengths),
            got,
            shown,
        )
    tokens = inputs[:SEQUENCE]
    states = _start(meta, 1)
    got = _run_main(meta, main, tokens[None, :], states, "T > 1, B = 1")
    want = (None, states)
    for t in tokens:
        want = step(t[None], want[1])
    _compare(
        meta,
        "the main graph's path for T > 1 at B = 1 disagrees with one-token "
        f"steps over the first {len(tokens)} probe inputs",
        None,
        want,
        got,
        shown,
    )


def _start(meta, B: int) -> list[np.ndarray]:
    """A non-zero state of each spec for B rows (every row different)."""
    out = []
    for spec in meta.states:
        shape = spec.concrete_shape(B)
        values = np.linspace(-0.9, 0.9, num=int(np.prod(shape)), dtype=np.float32)
        out.append(values.reshape(shape))
    return out


def _run_main(meta, main, tokens, states, what: str, lengths=None):
    if lengths is None:
        lengths = np.full(tokens.shape[0], tokens.shape[1], dtype=np.int64)
    feeds = {meta.tokens.name: tokens, meta.lengths.name: lengths}
    feeds |= {spec.input: x for spec, x in zip(meta.states, states, strict=True)}
    try:
        log_probs, *new = main.run([meta.log_probs.name] + [s.output for s in meta.states], feeds)
    except RUN_ERRORS as e:
        raise ModelFileError(f"onnxruntime cannot run the main graph ({what}): {e}") from e
    return log_probs, new


def _stepper(meta, main, step_session):
    """step(tokens (B,), states) -> (log_probs, new states): one token per row."""
    if step_session is None:
        return lambda tokens, states: _run_main(meta, main, tokens[:, None], states, "T = 1")

    def step(tokens, states):
        try:
            return run_step_model(step_session, meta.step, tokens, states)
        except RUN_ERRORS as e:
            raise ModelFileError(f"onnxruntime cannot run its embedded step model: {e}") from e

    return step


def _steps_of_rows(meta, step, tokens, states, lengths):
    """Row r after lengths[r] steps of tokens[r] (1 or 2), from states."""
    log_probs, first = step(tokens, states)
    twice = np.flatnonzero(lengths == 2)
    sub = [
        np.take(s, twice, axis=spec.batch_axis) for spec, s in zip(meta.states, first, strict=True)
    ]
    lp2, second = step(tokens[twice], sub)
    log_probs = log_probs.copy()
    log_probs[twice] = lp2
    out = []
    for spec, s, s2 in zip(meta.states, first, second, strict=True):
        s = s.copy()
        index = [slice(None)] * s.ndim
        index[spec.batch_axis] = twice
        s[tuple(index)] = s2
        out.append(s)
    return log_probs, out


def _compare(meta, what: str, tokens, want, got, shown) -> None:
    """MetadataError when got differs from want beyond the tolerance; row r is input
    tokens[r] (None: the whole call is one sequence), shown(tokens[r]) in the message."""
    pairs = [("log_probs", want[0], got[0], 0)]
    pairs += [
        (spec.output, w, g, spec.batch_axis)
        for spec, w, g in zip(meta.states, want[1], got[1], strict=True)
    ]
    for name, w, g, axis in pairs:
        if g.shape != w.shape:
            raise MetadataError(
                f"{what}: {name} has shape {g.shape}; expected {w.shape}; the file is inconsistent"
            )
        with np.errstate(invalid="ignore"):
            ok = np.isclose(g, w, rtol=RTOL, atol=ATOL, equal_nan=True) | ~(np.abs(w) < OVERFLOW)
        if ok.all():
            continue
        where = ""
        if tokens is not None:
            other = tuple(i for i in range(ok.ndim) if i != axis)
            where = f" of {shown(tokens[int(np.argmin(ok.all(axis=other)))])}"
        diff = float(np.nanmax(np.abs(g - w)[~ok]))
        raise MetadataError(
            f"{what}{where}: {name} max |difference| {diff:.3g}; the file is inconsistent"
        )
