"""The parity matrix: arch x nonlinearity x opset x provider x shape case, the file against
the model, under verify's rule: |file - float64| within the float32 allowance everywhere.

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
from rnn_export.parity.reference import Recurrence, TorchFloat32

pytestmark = pytest.mark.parity

OPSETS = (MIN_OPSET, onnx.defs.onnx_opset_version())  # the oldest exported and the newest
ARCH_NONLINEARITIES = [(a, n) for a in ARCHS for n in NONLINEARITIES[a]]


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

    def get(arch, nonlinearity, opset, provider):
        ep = PROVIDERS[provider]
        available = ort.get_available_providers()
        if ep not in available:
            pytest.skip(f"{ep} is not available in this onnxruntime build ({', '.join(available)})")
        key = (arch, nonlinearity, opset, provider)
        if key not in cache:
            run_dir, path = make_export(arch, nonlinearity, opset)
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
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    B, T = shape.B, shape.T
    tokens = rng.integers(0, config.vocab_size, size=(B, T), dtype=np.int64)
    if shape.zero_state:
        h0 = np.zeros(config.state_shape(B), dtype=np.float32)
    else:
        h0 = rng.uniform(-1.0, 1.0, size=config.state_shape(B)).astype(np.float32)
    lengths = np.full(B, T, dtype=np.int64)
    if shape.mixed_lengths:
        lengths = rng.integers(1, T + 1, size=B, dtype=np.int64)
        lengths[0], lengths[-1] = T, 1
    return tokens, h0, lengths, rng


def run_onnx(session, tokens, h0, lengths, shape: Shape, rng):
    def call(tok, state, lens):
        feed = {"tokens": np.ascontiguousarray(tok), "h0": state, "lengths": lens}
        return session.run(["log_probs", "hn"], feed)

    if shape.drive == "whole":
        return call(tokens, h0, lengths)
    B, T = tokens.shape
    if shape.drive == "steps":
        sizes = [1] * T
    else:
        sizes = []
        while sum(sizes) < T:
            sizes.append(int(min(rng.integers(1, 33), T - sum(sizes))))
    state, start = h0, 0
    for size in sizes:
        log_probs, state = call(tokens[:, start : start + size], state, np.full(B, size))
        start += size
    return log_probs, state


@pytest.mark.parametrize("case", SHAPES)
@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("arch, nonlinearity", ARCH_NONLINEARITIES)
def test_onnx_matches_the_model(sessions, arch, nonlinearity, opset, provider, case):
    session, model, reference = sessions(arch, nonlinearity, opset, provider)
    shape = SHAPES[case]
    tokens, h0, lengths, rng = make_inputs(case, shape, model.config)
    want = reference.run(tokens, (h0,), lengths)
    torch32 = TorchFloat32(model, 1)(
        tokens, None if shape.zero_state else (h0,), lengths if shape.mixed_lengths else None
    )
    got = run_onnx(session, tokens, h0, lengths, shape, rng)
    series = zip(
        ("log_probs", "hn"), got, (want[0], want[1][0]), (torch32[0], torch32[1][0]), strict=True
    )
    for name, g, ref, t32 in series:
        check = compare(g, ref, name, t32)
        assert check.passed, (name, check)
        # PyTorch float32 on the same inputs keeps within the same allowance
        assert check.torch_ratio <= 1.0, (name, check)
