"""Taking a busy lock without sleeping on it: no lock convoy under the GIL.

A ``threading.Lock`` released while another thread sleeps on it wakes that thread, and the
waker's next try finds the lock taken: the sleeper took it in C, before it had the GIL back.
So the thread running Python blocks, hands the GIL over, and the next release hands the lock
to the next sleeper. Once the busiest takers sleep on the lock, every acquire costs a
context switch, and the convoy does not end while they keep coming.

The store's lock met this: its first insert writes the guid lease (three fsyncs) under it,
and a writer switched out inside it starts the same. 8 writers keeping 32 inserts each in
flight (the benchmark's pipelined writers) fell into it in 4 runs of 6: 25.9k to 31.4k
records a second, 36 to 61 records a commit, 1.1 to 1.7 context switches a record, against
47.8k to 51.2k, 242 to 250 a commit and 0.1 a record in the other two.

So the store's writers take its lock through ``Polling``: one that finds it taken gives the
GIL away (``sleep(0)``) and tries again, then polls with a growing sleep, and never sleeps
inside the lock. Everyone else (the commit thread publishing a batch, the checkpoint thread,
readers) takes it as usual and sleeps on it: such a sleeper is handed the lock at the next
release, ahead of the writers, which is what a thread that comes rarely needs. With every
taker polling, a checkpoint thread behind one writer inserting without pause got the lock
late, again and again: 0 to 3 checkpoints in a load of 20,000 records (15 loads) where
sleeping on it wrote 2 to 5.

Taken in alternation with the code before, 6 runs each of the pipelined writers: 39.6k to
64.1k records a second, 239 to 250 a commit, 0.1 context switches a record, against 25.2k
to 49.8k, three of the six in the convoy.
"""

from __future__ import annotations

import threading
import time

__all__ = ["Polling"]

_YIELDS = 20  # tries that only give the GIL away: the holder is usually runnable
_FIRST_POLL = 0.00005
_MAX_POLL = 0.001


class Polling:
    """``with Polling(lock):`` holds ``lock``, taken without ever sleeping on it."""

    __slots__ = ("_lock",)

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        if not self._lock.acquire(False):
            _poll(self._lock)

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def _poll(lock: threading.Lock) -> None:
    sleep = time.sleep
    for _ in range(_YIELDS):
        sleep(0)
        if lock.acquire(False):
            return
    pause = _FIRST_POLL
    while not lock.acquire(False):
        sleep(pause)
        pause = min(2 * pause, _MAX_POLL)
