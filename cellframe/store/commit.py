"""Group commit: concurrent writes batched into one write+fsync by a single committer thread.

Submitters append to the open batch and wait on (or attach a callback to) that batch; the
committer takes the whole open batch, hands it to ``flush`` (which writes, fsyncs and
publishes it), then wakes every waiter of the batch at once. While one batch is being
fsynced the next one fills up, so the batch size adapts to the load by itself: no timer, no
added latency when idle. One Event per batch, not per record, keeps wake-ups cheap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import StoreError

__all__ = ["CommitBatch", "GroupCommitter", "ManyCallback", "Tally"]

log = logging.getLogger(__name__)

Callback = Callable[[Any, BaseException | None], None]
#: ``callback(failed, error)``: how many records of a group failed, and the first reason.
ManyCallback = Callable[[int, BaseException | None], None]


class CommitBatch:
    """Records that become durable together; ``wait`` returns once they are."""

    __slots__ = ("items", "size", "callbacks", "error", "_done", "_lock")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.size = 0
        self.callbacks: list[tuple[Callback, Any]] = []
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the batch is durable; raise ``StoreError`` if writing it failed."""
        if not self._done.wait(timeout):
            raise StoreError(f"the commit did not finish within {timeout} s")
        if self.error is not None:
            raise StoreError(f"the commit failed: {self.error}") from self.error

    def add_callback(self, fn: Callback, arg: Any) -> None:
        """Call ``fn(arg, error)`` once the batch is settled (at once if it already is)."""
        with self._lock:
            if not self._done.is_set():
                self.callbacks.append((fn, arg))
                return
        _call(fn, arg, self.error)

    def settle(self, error: BaseException | None) -> None:
        with self._lock:
            self.error = error
            self._done.set()
            callbacks, self.callbacks = self.callbacks, []
        for fn, arg in callbacks:
            _call(fn, arg, error)


def _call(fn: Callback, arg: Any, error: BaseException | None) -> None:
    try:
        fn(arg, error)
    except Exception:  # a caller's callback must not stop the committer
        log.exception("commit callback %r failed", fn)


class Tally:
    """Follows the commit batches a group of records went into; calls ``callback(failed,
    error)`` once, when all of them have settled and ``close`` was called.

    One call-back for a group instead of one per record: the group's caller (a replica
    applying a message's records) has one thing to do once they are all durable.
    """

    __slots__ = ("_callback", "_left", "failed", "error", "_lock")

    def __init__(self, callback: ManyCallback) -> None:
        self._callback = callback
        self._left = 1  # the caller's own hold, released by close: no call-back before it
        self.failed = 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def fail(self, count: int, error: BaseException) -> None:
        """Count ``count`` records that will never be durable."""
        with self._lock:
            self.failed += count
            self.error = self.error or error

    def follow(self, batch: CommitBatch, count: int) -> None:
        """Wait for ``batch``, which holds ``count`` of the group's records."""
        with self._lock:
            self._left += 1
        batch.add_callback(self._settled, count)

    def expect_one(self) -> Callback:
        """A per-record call-back ``(receipt, error)`` for one more record to wait for."""
        with self._lock:
            self._left += 1
        return self.settle_one

    def settle_one(self, receipt: Any, error: BaseException | None) -> None:
        self._settled(1, error)

    def close(self) -> None:
        """Every batch is followed: call back as soon as they have all settled."""
        self._settled(0, None)

    def _settled(self, count: int, error: BaseException | None) -> None:
        with self._lock:
            if error is not None:
                self.failed += count
                self.error = self.error or error
            self._left -= 1
            if self._left:
                return
        _call(self._callback, self.failed, self.error)


class GroupCommitter:
    """The committer thread. ``flush(batch)`` must make ``batch.items`` durable or raise."""

    def __init__(self, flush: Callable[[CommitBatch], None], *, max_batch_bytes: int,
                 linger: float = 0.002, name: str = "cellframe-commit") -> None:
        self._flush = flush
        self.linger = linger
        self._max = max_batch_bytes
        self._cond = threading.Condition()
        self._open = CommitBatch()
        self._closing = False
        self._sleeping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _linger(self, previous: int, budget: float) -> None:
        """Give the writers woken by the last commit a moment to join this one.

        Without it the first writer back triggers a commit of one record and the others
        queue behind it (8 blocking writers averaged 3.8 records per fsync). The wait ends
        as soon as the batch is as large as the last one, and never lasts more than half
        of the last commit's duration (capped by ``linger``), so it costs at most a third
        of the throughput it can win.
        """
        deadline = time.monotonic() + budget
        while len(self._open.items) < previous and not self._closing:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wait(left)

    def _wait(self, timeout: float | None) -> None:
        self._sleeping = True
        try:
            self._cond.wait(timeout)
        finally:
            self._sleeping = False

    def throttle(self) -> None:
        """Wait while the open batch is over its size budget (back-pressure, not a limit)."""
        if self._open.size < self._max:  # unlocked peek: the common case costs no lock
            return
        with self._cond:
            while self._open.size >= self._max and not self._closing:
                self._cond.wait()

    def submit(self, item: Any, size: int, callback: Callback | None = None,
               arg: Any = None) -> CommitBatch:
        """Add ``item`` (and its callback) to the open batch and return that batch."""
        with self._cond:
            if self._closing:
                raise StoreError("the store is closed")
            batch = self._open
            batch.items.append(item)
            batch.size += size
            if callback is not None:
                batch.callbacks.append((callback, arg))  # open batch: cannot be settled yet
            if self._sleeping:  # notify only a committer that waits: saves 2 us per insert
                self._cond.notify_all()
            return batch

    def submit_many(self, items: list[Any], size: int) -> CommitBatch:
        """Add ``items`` (``size`` bytes in all) to the open batch and return that batch."""
        with self._cond:
            if self._closing:
                raise StoreError("the store is closed")
            batch = self._open
            batch.items += items
            batch.size += size
            if self._sleeping:
                self._cond.notify_all()
            return batch

    def close(self) -> None:
        """Commit what is open, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        previous, took = 0, 0.0
        while True:
            with self._cond:
                while not self._open.items and not self._closing:
                    self._wait(None)
                if not self._open.items:
                    return
                self._linger(previous, min(self.linger, took / 2))
                batch, self._open = self._open, CommitBatch()
                self._cond.notify_all()
            previous = len(batch.items)
            start = time.monotonic()
            try:
                self._flush(batch)
            except BaseException as exc:  # settle the waiters whatever happened
                log.error("group commit failed: %s", exc)
                batch.settle(exc)
            else:
                batch.settle(None)
            took = time.monotonic() - start
