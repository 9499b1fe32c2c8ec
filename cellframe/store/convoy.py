"""A lock that never hands itself to a sleeping thread: no lock convoy under the GIL.

A ``threading.Lock`` released while another thread sleeps on it wakes that thread, and the
waker's next try finds the lock taken: the sleeper took it in C, before it had the GIL back.
So the thread running Python blocks, hands the GIL over, and the next release hands the lock
to the next sleeper. Once one thread has slept on the lock, every acquire costs a context
switch and the convoy does not end while writers keep coming.

The store's lock met this: its first insert writes the guid lease (three fsyncs) under it,
and a thread switched out inside it starts the same. 8 writers keeping 32 inserts each in
flight (the benchmark's pipelined writers) fell into it in 4 runs of 6: 25.9k to 31.4k
records a second, 36 to 61 records a commit, 1.1 to 1.7 context switches a record, against
47.8k to 51.2k, 242 to 250 a commit and 0.1 a record in the other two. With this lock, 8
runs of 8 ran at 47k to 58k, 235 to 250 a commit, 0.1 a record.

Here a thread that finds the lock taken gives the GIL away (``sleep(0)``) and tries again,
then polls with a growing sleep: nobody sleeps inside the lock, so a release leaves it free
for whoever runs next. The cost: a waiter may come back up to ``_MAX_POLL`` late after a long
hold (a lease write, a compaction's install).
"""

from __future__ import annotations

import threading
import time

__all__ = ["ConvoyFreeLock"]

_YIELDS = 20  # tries that only give the GIL away: the holder is usually runnable
_FIRST_POLL = 0.00005
_MAX_POLL = 0.001


class ConvoyFreeLock:
    """A mutex for short critical sections shared by many threads (``with lock:``)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; with ``blocking=False`` only if it is free now (True if taken)."""
        if self._lock.acquire(False):
            return True
        return self._contended() if blocking else False

    def _contended(self) -> bool:
        lock, sleep = self._lock, time.sleep
        for _ in range(_YIELDS):
            sleep(0)
            if lock.acquire(False):
                return True
        pause = _FIRST_POLL
        while not lock.acquire(False):
            sleep(pause)
            pause = min(2 * pause, _MAX_POLL)
        return True

    def release(self) -> None:
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
