"""The store's lock as its writers take it (``Polling``): mutual exclusion, and a release that
leaves it free for the thread that runs next rather than taken by one that is asleep (no lock
convoy under the GIL)."""

from __future__ import annotations

import sys
import threading
import time

from cellframe.store.convoy import Polling


def _busy(seconds: float) -> None:
    """Run Python, holding the GIL, for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_only_one_thread_at_a_time_holds_the_lock() -> None:
    lock, inside, most, total = threading.Lock(), [0], [0], [0]
    polling = Polling(lock)

    def work() -> None:
        for n in range(500):
            with polling if n % 5 else lock:  # writers poll, others sleep on it
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                time.sleep(0)  # another thread runs while this one holds the lock
                total[0] += 1
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a thread never got the lock"
    assert (most[0], total[0]) == (1, 3000)


def test_a_released_lock_is_free_for_the_running_thread_while_others_wait_for_it() -> None:
    """A ``threading.Lock`` released with a thread asleep on it is taken by that thread in C,
    before it has the GIL back: the next try of the thread still running fails, and the
    store's writers fell into a convoy (convoy.py). Polling waiters leave it free."""
    lock, tried, done = threading.Lock(), threading.Semaphore(0), []

    def wait_for_it() -> None:
        tried.release()
        with Polling(lock):
            done.append(1)

    waiters = [threading.Thread(target=wait_for_it) for _ in range(3)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(30)  # no switch forced while this thread runs Python below
    lock.acquire()
    held = True
    try:
        for waiter in waiters:
            waiter.start()
        for _ in waiters:
            assert tried.acquire(timeout=30), "a waiter never started"
        for attempt in range(20):
            lock.release()
            held = False
            _busy(0.002)  # a sleeper on a threading.Lock is awake and holds it by now
            held = lock.acquire(False)
            assert held, f"a waiting thread took the lock while this one ran (try {attempt})"
        assert done == []  # nobody else had the GIL to take it
    finally:
        if held:
            lock.release()
        sys.setswitchinterval(interval)
    for waiter in waiters:
        waiter.join(30)
    assert done == [1, 1, 1], "a waiter did not get the lock once it was free for good"
