"""The onnxruntime plumbing: provider names, threads, options, sessions, state buffers."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from rnn_runtime import ModelFileError, ProviderError, ThreadsError
from rnn_runtime.metadata import StateSpec
from rnn_runtime.session import (
    MAX_THREADS,
    PROVIDERS,
    StateBuffers,
    bound_run,
    check_threads,
    nonfinite_rows,
    open_session,
    resolve_providers,
    session_options,
)

CPU = "CPUExecutionProvider"


@pytest.mark.parametrize(
    "spec, want",
    [
        ("cpu", (CPU,)),
        ("CPU", (CPU,)),
        (" cpu , cpu ", (CPU,)),
        (CPU, (CPU,)),
        (["cpu"], (CPU,)),
        ((CPU, "cpu"), (CPU,)),
    ],
)
def test_resolve_providers_takes_short_and_full_names(spec, want):
    assert resolve_providers(spec) == want


def test_every_short_name_has_a_full_onnxruntime_name():
    assert set(PROVIDERS.values()) <= set(ort.get_all_providers())


@pytest.mark.parametrize(
    "spec, message",
    [
        ("gpu", r"unknown execution provider 'gpu'; expected one of cpu, cuda, tensorrt, dml "),
        ("cpu,nope", r"unknown execution provider 'nope'"),
        ("cpuexecutionprovider", r"unknown execution provider 'cpuexecutionprovider'"),
        ("", r"a non-empty list of names; got ''"),
        ([], r"a non-empty list of names; got \[\]"),
        ([1], r"a non-empty list of names; got \[1\]"),
        (5, r"a name or a list of names; got 5"),
        (b"cpu", r"a name or a list of names; got b'cpu'"),
        ({"cpu": 1}, r"a name or a list of names"),
    ],
)
def test_resolve_providers_refuses(spec, message):
    with pytest.raises(ProviderError, match=message):
        resolve_providers(spec)


def test_an_unavailable_provider_is_an_error_never_dropped():
    missing = [p for p in PROVIDERS.values() if p not in ort.get_available_providers()]
    if not missing:
        pytest.skip("every provider of the table is available here")
    with pytest.raises(ProviderError, match=rf"\['{missing[0]}'\] not available"):
        resolve_providers(["cpu", missing[0]])


@pytest.mark.parametrize("bad", [0, -1, MAX_THREADS + 1, 2**31, 10**40, True, 2.0, "1", None])
def test_check_threads_bounds_the_count(bad):
    with pytest.raises(ThreadsError, match=rf"an integer in \[1, {MAX_THREADS}\] .*; got "):
        check_threads(bad)


def test_check_threads_passes_a_good_count():
    assert check_threads(1) == 1 and check_threads(np.int64(MAX_THREADS)) == MAX_THREADS


def test_session_options(tmp_path):
    plain = session_options(1)
    assert (plain.intra_op_num_threads, plain.inter_op_num_threads) == (1, 1)
    assert plain.log_severity_level == ort.SessionOptions().log_severity_level
    assert not plain.enable_profiling
    quiet = session_options(1, quiet=True, profile_prefix=tmp_path / "p")
    assert quiet.log_severity_level == 4
    assert quiet.enable_profiling and quiet.profile_file_prefix == str(tmp_path / "p")


def test_open_session_from_a_path_and_from_bytes(exported):
    path = exported[1]
    for model in (path, str(path), path.read_bytes()):
        session = open_session(model, providers="cpu", threads=1)
        assert session.get_providers() == [CPU]
        assert "h0" in [a.name for a in session.get_inputs()]


def test_open_session_names_what_it_cannot_load(tmp_path):
    with pytest.raises(ModelFileError, match=r"^the step: onnxruntime cannot load it as a model"):
        open_session(b"\x08\x01junk", name="the step")
    (tmp_path / "x.onnx").write_bytes(b"junk")
    with pytest.raises(ModelFileError, match=r"x.onnx: onnxruntime cannot load it as a model"):
        open_session(tmp_path / "x.onnx")


class _Meta:
    """The fields of ModelMetadata that StateBuffers reads, for a model with two states."""

    num_classes = 3
    states = (
        StateSpec("h0", "hn", (2, "B", 4), "float32"),
        StateSpec("c0", "cn", ("B", 5), "float32"),
    )


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_state_buffers_find_any_non_finite_value(n, value):
    """Every state value and log-probability of a set is checked, of every state."""
    buffers = StateBuffers(_Meta(), n)
    arena = buffers.arenas[1]
    assert arena.size == n * (2 * 4 + 5 + 3)
    for k in (0, 1):
        assert not buffers.nonfinite[k]()
    rows = []
    for i in range(arena.size):
        arena[:] = np.float32(3e38)  # huge but finite values are no alarm
        arena[i] = value
        with np.errstate(invalid="ignore"):
            rows.append(buffers.nonfinite_rows(1) if buffers.nonfinite[1]() else None)
        assert not buffers.nonfinite[0]()
    assert all(r is not None and len(r) == 1 for r in rows)
    # Each row is found where it is: states (2, B, 4) and (B, 5), then log_probs (B, 3).
    h, c, lp = np.split(np.arange(arena.size), [n * 8, n * 13])
    want = [(i // 4) % n for i in h] + [i // 5 for i in c - n * 8] + [i // 3 for i in lp - n * 13]
    assert [r[0] for r in rows] == want


def test_nonfinite_rows_of_plain_arrays():
    specs = _Meta.states
    log_probs = np.zeros((3, 3), np.float32)
    h, c = np.zeros((2, 3, 4), np.float32), np.zeros((3, 5), np.float32)
    assert nonfinite_rows(specs, log_probs, [h, c]) == []
    h[1, 2, 0] = np.nan
    c[0, 4] = np.inf
    assert nonfinite_rows(specs, log_probs, [h, c]) == [0, 2]


def _doubling_session():
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    opsets = [helper.make_opsetid("", 14)]
    model = helper.make_model(
        graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)
    )
    session = open_session(model.SerializeToString())
    x, y = np.array([1, 2, 3], dtype=np.float32), np.zeros(3, dtype=np.float32)
    binding = session.io_binding()
    binding.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(x))
    binding.bind_ortvalue_output("y", ort.OrtValue.ortvalue_from_numpy(y))
    return session, binding, x, y


def test_bound_run_calls_the_cxx_session_directly_and_computes_the_same():
    session, binding, x, y = _doubling_session()
    run = bound_run(session, binding)
    assert run.func == session._sess.run_with_iobinding  # the wrapper's checks skipped
    run()
    np.testing.assert_array_equal(y, [2, 4, 6])
    x[:] = [5, 6, 7]  # the bound arrays feed the next call
    run()
    np.testing.assert_array_equal(y, [10, 12, 14])


def test_bound_run_falls_back_to_the_public_call_where_it_cannot_go_direct():
    session, binding, _, y = _doubling_session()
    other, other_binding, _, _ = _doubling_session()

    class Wrapped:  # an onnxruntime whose wrapper keeps no _sess
        def __init__(self, session):
            self.run_with_iobinding = session.run_with_iobinding

    run = bound_run(Wrapped(session), binding)
    assert run.func == session.run_with_iobinding
    run()
    np.testing.assert_array_equal(y, [2, 4, 6])
    # A binding of another session goes through the public call, which refuses it.
    with pytest.raises(ValueError, match="IOBinding must be used with the session"):
        bound_run(session, other_binding)()
