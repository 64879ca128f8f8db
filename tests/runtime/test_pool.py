"""StreamPool against PyTorch and against streams alone: joins, leaves, subsets, blow-ups."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from reference import REPO, TEXT, close, ids, torch_run

from rnn_runtime import StreamError
from rnn_runtime.stream import StreamSession

QUIET_DOT = pytest.mark.filterwarnings("ignore:invalid value encountered in dot")


def test_pool_with_joins_and_leaves_matches_pytorch(exported, rt_model):
    model, _ = exported
    pool = rt_model.pool()
    history: dict = {}

    def check(batch):
        for i, stream in enumerate(batch.streams):
            close(batch[i].log_probs, torch_run(model, history[id(stream)])[0])

    def step(tokens):
        for stream, t in zip(pool.streams, tokens, strict=True):
            history[id(stream)] += ids(t) if isinstance(t, str) else [int(t)]
        check(pool.step(tokens))

    a, b = pool.join(), pool.join()
    history[id(a)], history[id(b)] = [], []
    for t in ("ab", "cq", "jj"):
        step(list(t))
    c = rt_model.stream()
    c.feed("hgf")  # joins with a state and a prediction
    history[id(c)] = ids("hgf")
    pool.join(c)
    close(pool.prediction_of(c).log_probs, torch_run(model, history[id(c)])[0])
    for t in ("abc", "dea"):
        step(list(t))
    pool.leave(a)
    assert a not in pool and pool.streams == (b, c)
    close(a.step("d").log_probs, torch_run(model, history[id(a)] + ids("d"))[0])
    history[id(a)] += ids("d")
    step(["e", 2])
    pool.join(a)
    step(np.array(ids("fgh")))
    # A subset, and chunks of different lengths through the lengths input.
    history[id(b)] += ids("i")
    check(pool.step({b: "i"}))
    chunks = {c: "abcdefg", a: "j", b: "bb"}
    for s, text in chunks.items():
        history[id(s)] += ids(text)
    check(pool.feed(chunks))
    step(list("aaa"))
    for stream in (a, b, c):
        pool.leave(stream)
        close(stream.prediction.log_probs, torch_run(model, history[id(stream)])[0])
        close(stream.get_state()["h0"], torch_run(model, history[id(stream)])[1].numpy())
    assert len(pool) == 0


def test_pool_rows_equal_streams_run_alone(rt_model):
    """A stream's results in a pool equal its results alone, within the parity tolerance.

    Not bit for bit: onnxruntime's CPU kernels for B=1 and B>1 differ in their last bits
    (measured with H=128 over 30 steps at B=2, 16, 256: at most 3.6e-7 in log-probabilities).
    """
    texts = [TEXT, TEXT[::-1], "jihgfedcba" * 2, "aaaaaaaaaaaaaaaaaaaaaaaaa"]
    alone = []
    for text in texts:
        s = rt_model.stream()
        alone.append([s.step(c).log_probs for c in text[:20]])
    pool = rt_model.pool()
    for _ in texts:
        pool.join()
    batched = [pool.step([t[i] for t in texts]).log_probs for i in range(20)]
    for k in range(len(texts)):
        got = np.stack([row[k] for row in batched])
        close(got, np.stack(alone[k]))


def test_no_prediction_yet_is_kept_apart_from_the_log_probs(rt_model):
    """Members without a prediction are None until they are advanced, whatever their row
    holds; a member that joined with one keeps it."""
    pool = rt_model.pool()
    fresh = pool.join()
    fed = rt_model.stream()
    fed.feed("abc")
    pool.join(fed)
    assert pool.prediction_of(fresh) is None and fresh.prediction is None
    np.testing.assert_array_equal(pool.prediction_of(fed).log_probs, fed.prediction.log_probs)
    pool.feed({fed: "d"})
    assert pool.prediction_of(fresh) is None
    other = pool.join()
    pool.step(["a", "b", "c"])
    for member in (fresh, fed, other):
        assert np.isfinite(pool.prediction_of(member).log_probs).all()
    pool.leave(fresh)
    assert fresh.prediction is not None


def test_pool_bad_input_leaves_members_unchanged(rt_model):
    pool = rt_model.pool()
    a, b = pool.join(), pool.join()
    pool.step(["a", "b"])
    before = pool._state()["h0"].copy()
    with pytest.raises(StreamError, match=r"pool step got 3 tokens; the pool has 2 members"):
        pool.step(["a", "b", "c"])
    with pytest.raises(StreamError, match=r"token id 50 .*out of range"):
        pool.step([1, 50])
    with pytest.raises(StreamError, match=r"shape \(3,\), dtype int64; expected .*\(2,\)"):
        pool.step(np.array([1, 2, 3]))
    # int64 arrays take a fast path: negative ids and ids >= V must still be refused
    V = rt_model.metadata.vocab_size
    for bad in ([1, -1], [V, 1], [1, np.iinfo(np.int64).min]):
        with pytest.raises(StreamError, match=rf"token id {bad[1] if bad[0] == 1 else V} "):
            pool.step(np.array(bad, dtype=np.int64))
    with pytest.raises(StreamError, match=r"token id 50 "):
        pool.step(np.array([1, 50], dtype=">i8"))  # non-native byte order: the full check
    with pytest.raises(StreamError, match=r"at least one token per stream"):
        pool.feed({a: "abc", b: ""})
    with pytest.raises(StreamError, match=r"not a member of this pool"):
        pool.feed({rt_model.stream(): "a"})
    with pytest.raises(StreamError, match=r"in a pool: advance it through the pool"):
        a.step("a")
    with pytest.raises(StreamError, match=r"already in a pool"):
        pool.join(a)
    with pytest.raises(StreamError, match=r"already in a pool"):
        rt_model.pool().join(a)
    with pytest.raises(StreamError, match=r"not a member of that pool"):
        a.leave_pool(rt_model.pool(), {}, None)
    with pytest.raises(StreamError, match=r"token id >= 2\*\*70"):
        pool.step({a: 2**70})
    np.testing.assert_array_equal(pool._state()["h0"], before)


def test_a_stream_enters_and_leaves_through_its_own_methods(rt_model, monkeypatch):
    """The pool hands streams over only through enter_pool/leave_pool."""
    calls = []
    enter, leave = StreamSession.enter_pool, StreamSession.leave_pool
    monkeypatch.setattr(
        StreamSession, "enter_pool", lambda s, p: calls.append("enter") or enter(s, p)
    )
    monkeypatch.setattr(
        StreamSession,
        "leave_pool",
        lambda s, p, st, la: calls.append("leave") or leave(s, p, st, la),
    )
    pool = rt_model.pool()
    stream = pool.join()
    pool.leave(stream)
    assert calls == ["enter", "leave"]


def _huge(model) -> dict[str, np.ndarray]:
    """A finite state whose next step overflows float32 (16 * 1e38 > 3.4e38)."""
    return {k: np.full_like(v, 1e38) for k, v in model.initial_state(1).items()}


@QUIET_DOT
@pytest.mark.parametrize("call", ["step", "step subset", "feed"])
def test_a_member_that_blows_up_changes_nothing(growing, call):
    pool = growing.pool()
    calm, _, wild = pool.join(), pool.join(), growing.stream()
    wild.set_state(_huge(growing))  # overflows at its next step; the others do not
    pool.join(wild)
    state = pool._state()
    run = {
        "step": lambda: pool.step(["a", "b", "c"]),
        "step subset": lambda: pool.step({wild: "a", calm: "b"}),
        "feed": lambda: pool.feed({calm: "ab", wild: "abc"}),
    }[call]
    with pytest.raises(StreamError, match=r"the result of 1 member\(s\) \(row 2\) is not finite"):
        run()
    for name, value in pool._state().items():
        np.testing.assert_array_equal(value, state[name])
    assert pool.prediction_of(calm) is None and pool.prediction_of(wild) is None
    # The others advance once the broken member has left; it keeps its last good state.
    pool.leave(wild)
    np.testing.assert_array_equal(wild.get_state()["h0"], _huge(growing)["h0"])
    batch = pool.step(["a", "b"])
    assert np.isfinite(batch.log_probs).all()


def test_pool_steps_through_the_step_model(rt_model, exported):
    model, _ = exported
    pool = rt_model.pool()
    members = [pool.join() for _ in range(5)]
    texts = [TEXT[i:] + TEXT[:i] for i in range(5)]
    for t in range(len(TEXT)):
        pool.step(np.array([ids(x[t])[0] for x in texts], dtype=np.int64))
    assert pool._steps.session is rt_model.step_session
    for member, text in zip(members, texts, strict=True):
        close(member.prediction.log_probs, torch_run(model, ids(text))[0])


def test_joins_and_leaves_cost_amortized_constant_rows(counting, monkeypatch):
    """n joins, a step, n / 2 leaves and a step: the rows of state the pool allocates (its
    device buffers and its host copy) grow linearly with the operations, where rebuilding
    the buffers per join allocates n * (n + 1) / 2 rows (2,001,000 here)."""
    from rnn_runtime import pool as pool_module

    n = 2000
    streams = [counting.stream() for _ in range(n)]
    rows = []
    model_type = type(counting)
    buffers = model_type.state_buffers
    monkeypatch.setattr(model_type, "state_buffers", lambda m, b: rows.append(b) or buffers(m, b))
    if hasattr(pool_module, "_Rows"):
        resize = pool_module._Rows._resize
        monkeypatch.setattr(
            pool_module._Rows, "_resize", lambda r, c, keep: rows.append(c) or resize(r, c, keep)
        )
    pool = counting.pool()
    for s in streams:
        pool.join(s)
    pool.step(np.ones(n, dtype=np.int64))
    for s in streams[: n // 2]:
        pool.leave(s)
    pool.step(np.ones(n // 2, dtype=np.int64))
    assert sum(rows) <= 8 * n
    assert len(pool) == n // 2 and pool.streams == tuple(streams[n // 2 :])
    np.testing.assert_array_equal(streams[0].get_state()["h0"], np.full((1, 4), 1.0))
    np.testing.assert_array_equal(pool.leave(streams[-1]).get_state()["h0"], np.full((1, 4), 2.0))
    # New members made by join() get buffers of their own only when they leave.
    rows.clear()
    fresh = counting.pool()
    made = [fresh.join() for _ in range(n)]
    fresh.step(np.ones(n, dtype=np.int64))
    assert sum(rows) <= 8 * n
    alone = fresh.leave(made[7])
    np.testing.assert_array_equal(alone.get_state()["h0"], np.full((1, 4), 1.0))
    alone.step("a")
    np.testing.assert_array_equal(alone.get_state()["h0"], np.full((1, 4), 2.0))


def test_a_churning_pool_keeps_each_members_count(counting):
    """Joins, leaves (enough to drop the holes), steps and feeds in a random order: every
    member's state counts exactly the tokens it was given."""
    rng = np.random.default_rng(0)
    pool = counting.pool()
    count: dict[int, int] = {}
    outside = [counting.stream() for _ in range(60)]
    for s in outside:
        count[id(s)] = 0
    for _ in range(400):
        op = rng.integers(4)
        if op == 0 and outside:
            pool.join(outside.pop(int(rng.integers(len(outside)))))
        elif op == 1 and len(pool):
            s = pool.streams[int(rng.integers(len(pool)))]
            outside.append(pool.leave(s))
            if count[id(s)]:
                assert s.prediction is not None
        elif op == 2 and len(pool):
            pool.step(["a"] * len(pool))
            for s in pool.streams:
                count[id(s)] += 1
        elif op == 3 and len(pool):
            chosen = pool.streams[:: int(rng.integers(1, 4))]
            pool.feed({s: "b" * (1 + i % 3) for i, s in enumerate(chosen)})
            for i, s in enumerate(chosen):
                count[id(s)] += 1 + i % 3
    outside += [pool.leave(s) for s in pool.streams]
    for s in outside:
        np.testing.assert_array_equal(s.get_state()["h0"], np.full((1, 4), count[id(s)]))
    assert len(pool) == 0 and len(outside) == 60


# Opens the model and a pool of 256 (warmed up), then limits the address space to what
# it uses plus 300 MiB and feeds one member a long text, the others one character each.
_LONG_FEED = """
import json, resource, sys
from rnn_runtime import open_model

model = open_model(sys.argv[1])
pool = model.pool()
members = [pool.join() for _ in range(256)]
pool.feed({m: "ab" for m in members})
alone = model.stream()
alone.feed("ab" * 3000)
alone.reset()
size = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (size * 1024 + 300 * 2**20, resource.RLIM_INFINITY))
text = "abcdefghij" * (int(sys.argv[2]) // 10)
want = alone.feed(text).log_probs
try:
    got = pool.feed({m: text if i == 0 else "b" for i, m in enumerate(members)})
except MemoryError as e:
    print(json.dumps({"error": str(e)}))
else:
    print(json.dumps({"want": want.tolist(), "got": got[0].log_probs.tolist(), "n": len(got)}))
"""


def test_a_long_text_in_a_pool_feed_costs_a_streams_memory(rt_model):
    """One member of 200,000 characters among 255 of one: under an address-space limit
    that stream.feed meets with room to spare, so does pool.feed (padding every row to the
    longest asks for 390 MiB of token ids alone)."""
    run = subprocess.run(
        [sys.executable, "-c", _LONG_FEED, str(rt_model.path), "200000"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO / "runtime"), "PATH": ""},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert "error" not in result, result
    assert result["n"] == 256
    close(np.array(result["got"]), np.array(result["want"]))


@QUIET_DOT
def test_a_feed_that_blows_up_in_a_later_call_changes_nothing(growing):
    """With 256 members the first call runs 16 tokens each (finite from zero); the long
    text overflows in a later call, and every member keeps its state from before."""
    pool = growing.pool()
    members = [pool.join() for _ in range(256)]
    state = pool._state()
    with pytest.raises(StreamError, match=r"pool feed: the result of 1 member\(s\) \(row 0\)"):
        pool.feed({m: "a" * 100 if i == 0 else "b" for i, m in enumerate(members)})
    for name, value in pool._state().items():
        np.testing.assert_array_equal(value, state[name])
    assert all(pool.prediction_of(m) is None for m in members)
