"""The runtime's fast paths through private APIs are taken where they are meant to be.

Each of these paths has a public fallback that computes the same result, so a change in
onnxruntime or CPython that made the runtime fall back would pass every other test and
only cost time or memory. These tests fail instead:

- a stream's and a pool's step call onnxruntime's C++ session (`InferenceSession._sess`)
  with its C++ binding (`IOBinding._iobinding`) directly, never the Python wrapper's
  `run_with_iobinding` (0.3 to 0.4 us of a 5 us step, docs/benchmarks.md);
- the step model's SHA-256 is computed by CPython's own `_sha2` (3.12+) or `_sha256`
  (3.11) below the size threshold, so opening a file never loads OpenSSL through hashlib
  (3.6 MiB of resident memory and 3 ms of a cold start, docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from reference import ATOL, REPO, RTOL, TEXT

from rnn_runtime import open_model, records
from rnn_runtime.session import run_step_model

CPYTHON_WITH_BUILTIN_SHA = sys.implementation.name == "cpython" and sys.version_info >= (3, 11)


@pytest.fixture
def public_calls(monkeypatch):
    """Counts the calls of onnxruntime's public InferenceSession.run_with_iobinding."""
    calls = []
    public = ort.InferenceSession.run_with_iobinding

    def counted(self, *args, **kwargs):
        calls.append(self)
        return public(self, *args, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "run_with_iobinding", counted)
    return calls


def _step_ids(model, text: str) -> np.ndarray:
    return np.array([model.token_id(c) for c in text], dtype=np.int64)


def test_a_streams_step_calls_the_cxx_session_directly(exported, public_calls):
    model = open_model(exported[1])
    session = model.step_session
    assert session is not None, "the file's step model was not opened: the step runs the graph"
    stream = model.stream()
    for call in stream._calls:  # the two ping-pong calls bound_run chose
        assert call.func == session._sess.run_with_iobinding
    for c in TEXT:
        got = stream.step(c)
    assert public_calls == [], "a step went through the Python wrapper's run_with_iobinding"

    # The same steps through the plain public session.run give the same prediction.
    state = model.initial_state(1)
    states = [state[s.input] for s in model.metadata.states]
    for token in _step_ids(model, TEXT):
        log_probs, states = run_step_model(session, model.metadata.step, np.array([token]), states)
    np.testing.assert_allclose(got.log_probs, log_probs[0], atol=ATOL, rtol=RTOL)

    # The counter sees the public call when it is made: the assertion above is not vacuous.
    session.run_with_iobinding(stream._steps.bindings[0])
    assert public_calls == [session]


def test_a_pools_step_calls_the_cxx_session_directly(exported, public_calls):
    model = open_model(exported[1])
    pool = model.pool()
    members = [pool.join() for _ in range(3)]
    n = len(TEXT) - 2
    for a, b, c in zip(TEXT[:n], TEXT[1:][:n], TEXT[2:], strict=True):
        batch = pool.step([a, b, c])
    assert public_calls == [], "a pool step went through the Python wrapper's run_with_iobinding"
    for call in pool._steps.calls:
        assert call.func == model.step_session._sess.run_with_iobinding
    # Each member computed what a stream fed its characters alone computes.
    for i, member in enumerate(members):
        alone = model.stream().feed(TEXT[i : i + n])
        np.testing.assert_allclose(batch.log_probs[i], alone.log_probs, atol=ATOL, rtol=RTOL)
        assert pool.prediction_of(member).label == alone.label


@pytest.mark.skipif(
    not CPYTHON_WITH_BUILTIN_SHA, reason="CPython 3.11+ has the builtin _sha2/_sha256"
)
def test_cpython_s_own_sha256_is_found():
    assert records._builtin_sha256 is not None, "neither _sha2 nor _sha256 could be imported"


@pytest.mark.skipif(
    not CPYTHON_WITH_BUILTIN_SHA, reason="CPython 3.11+ has the builtin _sha2/_sha256"
)
def test_the_step_model_is_hashed_without_hashlib_below_the_threshold(exported, monkeypatch):
    step_bytes = open_model(exported[1]).metadata.step.model_bytes()
    assert 0 < len(step_bytes) < records._BUILTIN_HASH_BYTES
    want = hashlib.sha256(step_bytes).hexdigest()
    used = []

    def recorded(*args, **kwargs):
        used.append(len(args[0]) if args else 0)
        return hashlib_sha256(*args, **kwargs)

    hashlib_sha256 = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", recorded)
    assert records.sha256_hex(step_bytes) == want
    open_model(exported[1])  # reads and checks the step model's checksum
    assert used == [], "the step model was hashed by hashlib (OpenSSL), not CPython's own"
    # Above the threshold hashlib is the one used: the recorder above is not vacuous.
    monkeypatch.setattr(records, "_BUILTIN_HASH_BYTES", len(step_bytes))
    assert records.sha256_hex(step_bytes) == want
    assert used == [len(step_bytes)]


_COLD_OPEN = r"""
import json, sys
import rnn_runtime
stream = rnn_runtime.open_model(sys.argv[1]).stream()
stream.feed("abc")
print(json.dumps(sorted(m for m in ("hashlib", "_hashlib") if m in sys.modules)))
"""


@pytest.mark.skipif(
    not CPYTHON_WITH_BUILTIN_SHA, reason="CPython 3.11+ has the builtin _sha2/_sha256"
)
def test_a_cold_process_opens_and_streams_without_loading_openssl(exported):
    path = str(REPO / "runtime")
    done = subprocess.run(
        [sys.executable, "-c", _COLD_OPEN, str(exported[1])],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": path, "PATH": ""},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
