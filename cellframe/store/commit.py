"""Group commit: concurrent writes batched into one write+fsync by a single committer thread.

Submitters append to the open batch and wait on (or attach a callback to) that batch; the
committer takes the whole open batch, hands it to ``flush`` (which writes, fsyncs and
publishes it), then wakes every waiter of the batch at once. While one batch is being
fsynced the next one fills up, so the batch size adapts to the load by itself: no timer, no
added latency when idle. One Event per batch, not per record, keeps wake-ups cheap.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import StoreError
from ..failures import log_failure

__all__ = ["CommitBatch", "GroupCommitter", "ManyCallback", "Tally"]

log = logging.getLogger(__name__)

Callback = Callable[[Any, BaseException | None], None]
#: ``callback(failed, error)``: how many records of a group failed, and the first reason.
ManyCallback = Callable[[int, BaseException | None], None]


class CommitBatch:
    """Records that become durable together; ``wait`` returns once they are.

    Its waiters block on one raw lock, held until the batch settles; each waiter takes it
    and hands it straight on, so the wake-ups cost a C-level acquire and release each. With
    a ``threading.Event`` (a Condition, a fresh lock per wait and Python code on both sides)
    8 blocking writers spent 77 us of CPU a record without any fsync.
    """

    __slots__ = ("number", "items", "size", "callbacks", "error", "settled", "opened", "_gate",
                 "_lock")

    def __init__(self, number: int = 0) -> None:
        self.number = number
        self.items: list[Any] = []
        self.opened = 0.0  # when its first item came (monotonic): GroupCommitter._take
        self.size = 0
        self.callbacks: list[tuple[Callback, Any]] = []
        self.error: BaseException | None = None
        self.settled = False
        self._gate = threading.Lock()
        self._gate.acquire()
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        return self.settled

    def wait(self, timeout: float | None = None) -> None:
        """Block until the batch is durable; raise ``StoreError`` if writing it failed."""
        if not self.settled:
            if not self._gate.acquire(True, -1 if timeout is None else timeout):
                raise StoreError(f"the commit did not finish within {timeout} s")
            self._gate.release()  # the next waiter's turn
        if self.error is not None:
            raise StoreError(f"the commit failed: {self.error}") from self.error

    def add_callback(self, fn: Callback, arg: Any) -> None:
        """Call ``fn(arg, error)`` once the batch is settled (at once if it already is)."""
        with self._lock:
            if not self.settled:
                self.callbacks.append((fn, arg))
                return
        _call(fn, arg, self.error)

    def settle(self, error: BaseException | None) -> None:
        with self._lock:
            self.error = error
            self.settled = True
            callbacks, self.callbacks = self.callbacks, []
        self._gate.release()
        for fn, arg in callbacks:
            _call(fn, arg, error)


def _call(fn: Callback, arg: Any, error: BaseException | None) -> None:
    try:
        fn(arg, error)
    except Exception as exc:  # a caller's callback must not stop the committer
        log_failure(log, exc, "commit callback %r failed", fn)


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
    """Two threads: the *sync* thread writes and fsyncs one batch after another, and the *ack*
    thread makes each synced batch visible (``publish``) and wakes its writers.

    ``write(batch)`` must make ``batch.items`` durable and return what ``publish(batch,
    written)`` needs to index them; batches are published in the order they were written.

    Measured with 8 blocking writers (bare fsync 0.2 ms here), one thread doing it all ran
    one commit per 1.1 ms; most of it was Python work in series with the fsync, and that
    work fights the sync thread for the GIL when the fsync returns. So:

    * When more records wait to be written, the ack thread publishes the synced batch while
      the sync thread writes the next: the indexing and the wake-ups leave the path between
      two fsyncs. When nothing waits, the sync thread publishes it itself (a hand-over to
      another thread costs a wake-up, and there is nothing to overlap).
    * After a commit the sync thread *lingers* for the writers it just woke: until the batch
      is as large as the last one, for at most ``linger`` and at most as long as the last
      write took. Without it the writers split into two groups that take turns, the fsync
      of one overlapping the Python work of the other, so the sync thread came back from
      each fsync to a GIL held by the other group (3.7 records a commit, 8k/s). With it,
      nothing runs Python during the fsync and the whole group shares it.
    * It waits for the whole group at once: asleep until the batch is as large as the last
      one, for at most about as long as the linger would take to end (the time the last
      batch's first record took to come, plus the last write's time); only if the group is
      not in by then does the linger run as above. Woken by the first record too, the sync
      thread took the GIL between two writers in the middle of their wake-ups (1.2 to 1.6
      sleeps a batch with 8 writers; 0.9 now), and batches came out smaller under load
      (sleeping on a raw lock as well: mean batch 7.1 to 7.6 for 8 writers, fsync stood in
      for by a 120 us sleep, load 2).
    """

    def __init__(self, write: Callable[[CommitBatch], Any],
                 publish: Callable[[CommitBatch, Any], None], *, max_batch_bytes: int,
                 first_batch: int = 1, linger: float = 0.002, max_unpublished: int = 4,
                 name: str = "cellframe-commit") -> None:
        self._write = write
        self._publish = publish
        self._max = max_batch_bytes
        self.linger = linger
        self._max_unpublished = max_unpublished
        self._mutex = threading.Lock()  # taken directly where no wait is needed: cheaper
        self._cond = threading.Condition(self._mutex)  # writers held back by throttle
        self._bell = threading.Lock()  # the sleeping sync thread's: see _sleep
        self._bell.acquire()
        self._open = CommitBatch(first_batch)
        self._closing = False
        self._sleeping = False
        self._wanted = 1  # how many items wake a sleeping sync thread
        self._previous = 0
        self._took = 0.0
        self._gap = 0.0  # from the start of the last wait to the first item of its batch
        self._synced: queue.SimpleQueue[tuple[CommitBatch, Any, BaseException | None] | None] \
            = queue.SimpleQueue()
        # Batches handed to the ack thread, and settled by it: each counter has one writer.
        self._handed = self._acked = 0
        self._backlog = threading.Condition(threading.Lock())
        self._backlogged = False
        self._sync_thread = threading.Thread(target=self._sync_loop, name=f"{name}-sync",
                                             daemon=True)
        self._ack_thread = threading.Thread(target=self._ack_loop, name=f"{name}-ack",
                                            daemon=True)
        self._ack_thread.start()
        self._sync_thread.start()

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
        with self._mutex:
            if self._closing:
                raise StoreError("the store is closed")
            batch = self._open
            if not batch.items:
                batch.opened = time.monotonic()
            batch.items.append(item)
            batch.size += size
            if callback is not None:
                batch.callbacks.append((callback, arg))  # open batch: cannot be settled yet
            if self._sleeping and len(batch.items) >= self._wanted:
                self._wake()  # one wake-up per batch, not one per record
            return batch

    def submit_many(self, items: list[Any], size: int) -> CommitBatch:
        """Add ``items`` (``size`` bytes in all) to the open batch and return that batch."""
        with self._mutex:
            if self._closing:
                raise StoreError("the store is closed")
            batch = self._open
            if not batch.items:
                batch.opened = time.monotonic()
            batch.items += items
            batch.size += size
            if self._sleeping and len(batch.items) >= self._wanted:
                self._wake()
            return batch

    def close(self) -> None:
        """Commit what is open, publish it, then stop both threads."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            if self._sleeping:
                self._wake()
        self._sync_thread.join()
        self._ack_thread.join()

    # -- the sync thread --------------------------------------------------------------------

    def _wake(self) -> None:
        """Wake the sleeping sync thread (under the mutex, ``_sleeping`` true)."""
        self._sleeping = False
        self._bell.release()

    def _sleep(self, wanted: int, timeout: float | None) -> None:
        """Wait, the mutex released, until the open batch holds ``wanted`` items, close, or
        ``timeout``; under the mutex, which is held again on return.

        On a raw lock, not ``self._cond``: a Condition's wait and notify run Python on both
        sides (a fresh lock and a deque each time), in series with the writers, and its
        notify could wake a writer held back by ``throttle`` instead of this thread. The
        bell is locked while the thread sleeps: ``_wake`` releases it once, and a release
        that came after a timeout is taken back here before the next sleep.
        """
        self._bell.acquire(False)
        self._sleeping, self._wanted = True, wanted
        self._mutex.release()
        try:
            self._bell.acquire(True, -1 if timeout is None else timeout)
        finally:
            self._mutex.acquire()
            self._sleeping = False

    def _take(self) -> CommitBatch | None:
        """The open batch once it holds something, after the linger (a fresh one opens);
        None once closing with nothing left."""
        with self._cond:
            since, wanted = time.monotonic(), self._previous
            if wanted > 1 and len(self._open.items) < wanted and not self._closing:
                # the whole group at once, about when the linger would end (see the class)
                self._sleep(wanted, min(self.linger, self._gap + self._took))
            while not self._open.items:
                if self._closing:
                    return None
                self._sleep(1, None)
            if len(self._open.items) < wanted and not self._closing:
                deadline = time.monotonic() + min(self.linger, self._took)
                while len(self._open.items) < wanted and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._sleep(wanted, left)
            batch = self._open
            self._open = CommitBatch(batch.number + 1)
            if batch.size >= self._max:
                self._cond.notify_all()  # writers held back by throttle
        self._previous = len(batch.items)
        self._gap = max(0.0, batch.opened - since)
        return batch

    def _sync_loop(self) -> None:
        try:
            while (batch := self._take()) is not None:
                start = time.monotonic()
                try:
                    written, error = self._write(batch), None
                except BaseException as exc:  # settled with the error, in order
                    log.error("group commit failed: %s", exc)
                    written, error = None, exc
                self._took = time.monotonic() - start
                if self._open.items or self._handed != self._acked:
                    self._hand_over(batch, written, error)
                else:  # nothing to overlap with, and every earlier batch is settled
                    self._settle(batch, written, error)
        finally:
            self._synced.put(None)

    def _hand_over(self, batch: CommitBatch, written: Any, error: BaseException | None) -> None:
        """Queue a synced batch for the ack thread; wait while too many are queued."""
        self._handed += 1
        self._synced.put((batch, written, error))
        if self._handed - self._acked >= self._max_unpublished:
            with self._backlog:
                self._backlogged = True
                while self._handed - self._acked >= self._max_unpublished:
                    self._backlog.wait()
                self._backlogged = False

    # -- the ack thread ---------------------------------------------------------------------

    def _ack_loop(self) -> None:
        while (synced := self._synced.get()) is not None:
            self._settle(*synced)
            self._acked += 1  # only after settling: the sync thread reads it
            if self._backlogged:
                with self._backlog:
                    self._backlog.notify()

    def _settle(self, batch: CommitBatch, written: Any, error: BaseException | None) -> None:
        if error is None:
            try:
                self._publish(batch, written)
            except BaseException as exc:
                log.error("publishing a group commit failed: %s", exc)
                error = exc
        batch.settle(error)
