"""A stream or a pool used from two threads at once: an error, never a torn state.

The model counts: its state adds exactly 1 per token (relu, identity recurrence), so a
step lost or a state torn by two interleaved calls shows as a count that differs from
the number of tokens the successful calls advanced.
"""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
from reference import LABELS

from rnn_runtime import StreamError

BUSY = r"this (stream|pool) is being used by another thread; a \1 must not be shared"


def _hammer(workers) -> list[int]:
    """Run each worker(record) on its own thread, all at once; returns the errors' count.

    A worker calls `record(tokens)` after each successful call, with the tokens it
    advanced; the StreamErrors it catches must be the busy error and are counted.
    """
    errors: list[str] = []
    start = threading.Barrier(len(workers))

    def run(worker):
        start.wait()
        worker(errors)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for message in errors:
        assert re.match(BUSY, message), message
    return len(errors)


def test_a_stream_shared_by_threads_raises_and_keeps_its_count(counting):
    stream = counting.stream()
    done = [0] * 4
    lock = threading.Lock()

    def stepper(i):
        def work(errors):
            for _ in range(1500):
                try:
                    stream.step("a")
                except StreamError as e:
                    with lock:
                        errors.append(str(e))
                else:
                    done[i] += 1

        return work

    def feeder(errors):
        for _ in range(20):
            try:
                stream.feed("b" * 5000)
            except StreamError as e:
                with lock:
                    errors.append(str(e))
            else:
                done[3] += 5000

    errors = _hammer([stepper(0), stepper(1), stepper(2), feeder])
    assert errors > 0
    count = sum(done)
    np.testing.assert_array_equal(stream.get_state()["h0"], np.full((1, 4), count, np.float32))


def test_a_pool_shared_by_threads_raises_and_keeps_every_count(counting):
    pool = counting.pool()
    a, b = pool.join(), pool.join()
    done = {"a": 0, "b": 0}
    lock = threading.Lock()

    def call(errors, f, advanced):
        try:
            f()
        except StreamError as e:
            with lock:
                errors.append(str(e))
        else:
            with lock:
                for k, n in advanced.items():
                    done[k] += n

    def stepper(errors):
        for _ in range(1500):
            call(errors, lambda: pool.step(["a", "b"]), {"a": 1, "b": 1})

    def feeder(errors):
        for _ in range(20):
            call(errors, lambda: pool.feed({a: "c" * 3000, b: "d"}), {"a": 3000, "b": 1})

    def churner(errors):
        for _ in range(300):
            s = counting.stream()
            call(errors, lambda s=s: pool.join(s), {})
            if s in pool:
                call(errors, lambda s=s: pool.leave(s), {})

    errors = _hammer([stepper, stepper, feeder, churner])
    assert errors > 0
    for s in [s for s in pool.streams if s not in (a, b)]:
        pool.leave(s)
    for member, key in ((a, "a"), (b, "b")):
        pool.leave(member)
        np.testing.assert_array_equal(
            member.get_state()["h0"], np.full((1, 4), done[key], np.float32)
        )


def test_a_busy_stream_refuses_every_call(counting):
    """Each call that touches the state checks ownership, not only step."""
    stream = counting.stream()
    blob = stream.save()
    assert stream._owner.acquire(False)  # as if another thread were inside a call
    try:
        for call in (
            lambda: stream.step("a"),
            lambda: stream.feed("ab"),
            stream.reset,
            stream.get_state,
            lambda: stream.set_state(counting.initial_state(1)),
            stream.save,
            lambda: stream.restore(blob),
            lambda: counting.pool().join(stream),
        ):
            with pytest.raises(StreamError, match=BUSY):
                call()
    finally:
        stream._owner.release()
    pool = counting.pool()
    member = pool.join()
    assert pool._owner.acquire(False)
    try:
        for call in (
            lambda: pool.step(["a"]),
            lambda: pool.step({member: "a"}),
            lambda: pool.feed({member: "ab"}),
            pool.join,
            lambda: pool.leave(member),
        ):
            with pytest.raises(StreamError, match=BUSY):
                call()
    finally:
        pool._owner.release()
    assert member in pool and stream.step("a").label in LABELS
