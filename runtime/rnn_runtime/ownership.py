"""The check that a stream or a pool is used by one thread at a time.

onnxruntime releases the GIL while it runs, so two threads stepping one stream would
interleave their reads and writes of the state buffers and silently lose steps or tear
the state. Every call that reads or changes a stream's or pool's state holds an Ownership
for its duration; a second thread that arrives meanwhile gets a StreamError at once
(a non-blocking acquire: it never waits, so misuse shows instead of slowing down).
"""

from __future__ import annotations

import threading

from rnn_runtime.errors import StreamError


class Ownership:
    """A non-blocking lock around a stream's or pool's calls.

    `with ownership:` holds it for a call; the hot paths (a stream's step) call
    `acquire(False)` and `release()` themselves, which costs well under 0.1 us.

    Args:
        what: how the message names the object ("stream", "pool").
    """

    __slots__ = ("acquire", "release", "what")

    def __init__(self, what: str):
        lock = threading.Lock()
        self.acquire = lock.acquire
        self.release = lock.release
        self.what = what

    def __enter__(self) -> None:
        if not self.acquire(False):
            raise self.busy()

    def __exit__(self, *exc) -> None:
        self.release()

    def busy(self) -> StreamError:
        """The error for a call that finds another call inside."""
        return StreamError(
            f"this {self.what} is being used by another thread; a {self.what} must not be "
            f"shared between threads: give each thread its own, or guard it with a lock"
        )
