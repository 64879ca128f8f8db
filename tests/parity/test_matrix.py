"""The parity matrix: arch x nonlinearity (x layers for gru and lstm) x opset x provider x
shape case, the file against the model, under verify's rule: |file - float64| within the
float32 allowance everywhere, for log_probs and every state (hn, and cn for the LSTM).

Tiny models (H=16) keep the whole matrix fast; tests/parity/test_verify.py runs the full
`verify` on default-size models. CUDA cases run where CUDAExecutionProvider is available
and skip with the reason elsewhere.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from rnn_export.checkpoint import load_checkpoint
from rnn_export.config import ARCHS, NONLINEARITIES
from rnn_export.export import MIN_OPSET
from rnn_export.parity import PROVIDERS, compare
from rnn_export.parity.cases import random_state, zero_state
from rnn_export.parity.reference import Recurrence, TorchFloat32

pytestmark = pytest.mark.parity

OPSETS = (MIN_OPSET, onnx.defs.onnx_opset_version())  # the oldest exported and the newest
GATED_LAYERS = (1, 2, 3)
# (arch, nonlinearity, layers); None: the fixture's default (1 for cell, 2 for stacked)
MODELS = [
    (a, n, layers)
    for a in ARCHS
    for n in NONLINEARITIES[a]
    for layers in (GATED_LAYERS if a in ("gru", "lstm") else (None,))
]


@dataclass(frozen=True)
class Shape:
    """One shape case; `drive` is "whole" (one call), "steps" (1 token per call) or "chunks"."""

    B: int
    T: int
    zero_state: bool = False
    mixed_lengths: bool = False
    drive: str = "whole"


SHAPES = {
    **{f"B{B}-T{T}": Shape(B, T) for B in (1, 3, 17) for T in (1, 2, 7, 64, 1000)},
    "zero-h0-B3-T64": Shape(3, 64, zero_state=True),
    "mixed-B17-T64": Shape(17, 64, mixed_lengths=True),
    "mixed-B5-T1000": Shape(5, 1000, mixed_lengths=True),
    "mixed-zero-h0-B8-T30": Shape(8, 30, zero_state=True, mixed_lengths=True),
    "steps-B3-T64": Shape(3, 64, drive="steps"),
    "chunks-B3-T200": Shape(3, 200, drive="chunks"),
}


@pytest.fixture(scope="module")
def sessions(make_export):
    cache = {}

    def get(arch, nonlinearity, layers, opset, provider):
        ep = PROVIDERS[provider]
        available = ort.get_available_providers()
        if ep not in available:
            pytest.skip(f"{ep} is not available in this onnxruntime build ({', '.join(available)})")
        key = (arch, nonlinearity, layers, opset, provider)
        if key not in cache:
            run_dir, path = make_export(arch, nonlinearity, opset, num_layers=layers)
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=[ep])
            # no silent fallback: the session must really run on the provider asked for
            assert session.get_providers()[0] == ep, session.get_providers()
            model = load_checkpoint(run_dir).model
            cache[key] = (session, model, Recurrence(model))
        return cache[key]

    return get


def make_inputs(name: str, shape: Shape, config):
    """tokens, the state tuple (random as verify draws it, or zeros), lengths, the rng."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    B, T = shape.B, shape.T
    tokens = rng.integers(0, config.vocab_size, size=(B, T), dtype=np.int64)
    if shape.zero_state:
        state = zero_state(config, B)
    else:
        state = random_state(config, B, rng)
    lengths = np.full(B, T, dtype=np.int64)
    if shape.mixed_lengths:
        lengths = rng.integers(1, T + 1, size=B, dtype=np.int64)
        lengths[0], lengths[-1] = T, 1
    return tokens, state, lengths, rng


def run_onnx(session, names, tokens, state, lengths, shape: Shape, rng):
    """(log_probs, *new states) of the file, driven as shape.drive says."""

    def call(tok, state, lens):
        feed = {"tokens": np.ascontiguousarray(tok), "lengths": lens}
        feed |= {i: s for (i, _), s in zip(names, state, strict=True)}
        log_probs, *new = session.run(["log_probs", *(o for _, o in names)], feed)
        return log_probs, tuple(new)

    if shape.drive == "whole":
        return call(tokens, state, lengths)
    B, T = tokens.shape
    if shape.drive == "steps":
        sizes = [1] * T
    else:
        sizes = []
        while sum(sizes) < T:
            sizes.append(int(min(rng.integers(1, 33), T - sum(sizes))))
    start = 0
    for size in sizes:
        log_probs, state = call(tokens[:, start : start + size], state, np.full(B, size))
        start += size
    return log_probs, state


@pytest.mark.parametrize("case", SHAPES)
@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("arch, nonlinearity, layers", MODELS)
def test_onnx_matches_the_model(sessions, arch, nonlinearity, layers, opset, provider, case):
    session, model, reference = sessions(arch, nonlinearity, layers, opset, provider)
    shape = SHAPES[case]
    names = model.config.state_names
    tokens, state, lengths, rng = make_inputs(case, shape, model.config)
    want = reference.run(tokens, state, lengths)
    torch32 = TorchFloat32(model, 1)(
        tokens, None if shape.zero_state else state, lengths if shape.mixed_lengths else None
    )
    got = run_onnx(session, names, tokens, state, lengths, shape, rng)
    assert len(got[1]) == len(want[1]) == len(torch32[1]) == len(names)
    series = zip(
        ("log_probs", *(o for _, o in names)),
        (got[0], *got[1]),
        (want[0], *want[1]),
        (torch32[0], *torch32[1]),
        strict=True,
    )
    for name, g, ref, t32 in series:
        check = compare(g, ref, name, t32)
        assert check.passed, (name, check)
        # PyTorch float32 on the same inputs keeps within the same allowance
        assert check.torch_ratio <= 1.0, (name, check)
