"""The long stream: one token per call for STREAM_STEPS steps, as a streaming deployment runs.

PyTorch float32 and the float64 reference step the same random tokens from zeros once;
each runner (the main graph under each provider, the step model) then steps them too.
Every step is compared: the stream passes when the file is within the allowance carried
along it at every step (it grows as the model amplifies rounding, so a long run of a
correct file never fails for rounding), and reports per window its drift from PyTorch
float32 and float64, and step by step whether its decision is float64's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rnn_export.parity.bounds import Approx
from rnn_export.parity.compare import CaseFailure, abs_diff, compare
from rnn_export.parity.results import CaseResult, DriftCurve

STREAM_STEPS = 10_000
DRIFT_WINDOWS = 20


@dataclass
class StreamReference:
    """The references of one stream, every step.

    tokens (1, S); log_probs (S, 1, C) and states (tuple of (S, *state shape with B=1)) as
    Approx; torch_log_probs / torch_states the same from PyTorch float32.
    """

    tokens: np.ndarray
    log_probs: Approx
    states: tuple[Approx, ...]
    torch_log_probs: np.ndarray
    torch_states: tuple[np.ndarray, ...]


def stream_reference(recurrence, torch32, tokens: np.ndarray, zeros: tuple) -> StreamReference:
    """Step the references through tokens (1, S) from the zero state `zeros`."""
    log_probs, states = recurrence.run_steps(tokens, zeros)
    return StreamReference(tokens, log_probs, states, *torch32.run_steps(tokens, zeros))


def run_stream(runner, ref: StreamReference, names, tolerance=None):
    """Step `runner` through the stream; (CaseResult, DriftCurve or None if it raised)."""
    steps = ref.tokens.shape[1]
    family = runner.family or "stream"
    base = dict(
        provider=runner.provider,
        name=f"B=1 {steps} steps 1 token/call",
        family=family,
        batch_size=1,
        length=steps,
    )
    got_lp = np.empty(ref.torch_log_probs.shape, dtype=np.float32)
    got_states = tuple(np.empty_like(s) for s in ref.torch_states)
    state = tuple(np.zeros_like(s[0]) for s in ref.torch_states)
    one = np.ones(1, dtype=np.int64)
    try:
        for t in range(steps):
            lp, state = runner(np.ascontiguousarray(ref.tokens[:, t : t + 1]), state, one)
            if lp.shape != got_lp.shape[1:] or len(state) != len(got_states):
                raise CaseFailure(
                    f"step {t}: the file gives log_probs {lp.shape} and {len(state)} states; "
                    f"the model gives {got_lp.shape[1:]} and {len(got_states)}"
                )
            got_lp[t] = lp
            for out, s in zip(got_states, state, strict=True):
                if s.shape != out.shape[1:]:
                    raise CaseFailure(
                        f"step {t}: the file's state has shape {s.shape}; the model's is "
                        f"{out.shape[1:]}"
                    )
                out[t] = s
    except CaseFailure as e:
        return CaseResult(**base, error=str(e)), None

    series = [(names[0], got_lp, ref.log_probs, ref.torch_log_probs)]
    series += list(zip(names[1:], got_states, ref.states, ref.torch_states, strict=True))
    outputs = tuple(compare(g, r, name, t, tolerance) for name, g, r, t in series)
    window = max(1, math.ceil(steps / DRIFT_WINDOWS))
    starts = range(0, steps, window)
    windows, per_step = {}, {}
    for name, g, r, t in series:
        figures = {
            "vs_torch": abs_diff(g, t),
            "vs_f64": abs_diff(g, r.value),
            "torch_vs_f64": abs_diff(t, r.value),
        }
        figures["ratio"] = figures["vs_f64"] / r.radius
        per_step[name] = {k: v.reshape(steps, -1).max(axis=1) for k, v in figures.items()}
        windows[name] = {
            k: [float(v[i : i + window].max()) for i in starts] for k, v in per_step[name].items()
        }
    mine, exact = got_lp[:, 0].argmax(axis=1), ref.log_probs.value[:, 0].argmax(axis=1)
    torch_top = ref.torch_log_probs[:, 0].argmax(axis=1)
    lp = Approx(ref.log_probs.value[:, 0], ref.log_probs.radius[:, 0])
    rows = np.arange(steps)
    margin = lp.value[rows, exact] - lp.value[rows, mine]
    clear = int(((mine != exact) & (margin > lp.radius[rows, exact] + lp.radius[rows, mine])).sum())
    curve = DriftCurve(
        runner=runner.label,
        steps=steps,
        window=window,
        windows=windows,
        agreement=float(np.mean(mine == exact)),
        torch_agreement=float(np.mean(torch_top == exact)),
        per_step=per_step,
    )
    result = CaseResult(
        **base, outputs=outputs, agreement=curve.agreement, clear_disagreements=clear
    )
    return result, curve
