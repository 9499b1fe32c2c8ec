"""Group commit: concurrent writes batched into one write+fsync by a single committer thread.

Submitters append to the open batch and wait on (or attach a callback to) that batch; a
committer thread takes the whole open batch, writes and syncs it, publishes it, then wakes
every waiter of the batch at once. While one batch is being synced the next one fills up
(and may be synced at the same time), so the batch size adapts to the load by itself: no
timer, no added latency when idle. One gate per batch, not per record, keeps wake-ups cheap.
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
    """Records that become durable together; ``wait`` returns once they are.

    Its waiters block on one raw lock, held until the batch settles; each waiter takes it
    and hands it straight on, so the wake-ups cost a C-level acquire and release each. With
    a ``threading.Event`` (a Condition, a fresh lock per wait and Python code on both sides)
    8 blocking writers spent 77 us of CPU a record without any fsync.
    """

    __slots__ = ("number", "items", "size", "callbacks", "error", "settled", "_gate", "_lock")

    def __init__(self, number: int = 0) -> None:
        self.number = number
        self.items: list[Any] = []
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
    """``in_flight`` *sync* threads that take the open batch in turn, place it (``write``),
    make it durable (``flush``), and settle the batches in order: ``publish`` makes each one
    visible, then its writers wake.

    ``write(batch)`` runs in batch order, one at a time, and returns what ``flush`` needs to
    make ``batch.items`` durable; ``flush`` calls run ``in_flight`` at a time, and batch
    k + in_flight is flushed only once batch k is durable (the log's recovery rule depends
    on it: see ``segment``). ``publish(batch, written)`` runs in batch order, once the batch
    and every one before it are durable; a batch after one that failed fails too.

    Measured with 8 blocking writers (one sync 170 us, bare append + fsync 190 us here), one
    sync at a time spent 290 us more per commit than the sync itself, every writer asleep
    while it ran: publishing the batch 45 us, then the writers woken one after another,
    27 us each (a wake-up across cores and the GIL taken, then the next insert's Python),
    then the sync thread woken. That work runs under the GIL, in series, and blocking
    writers cannot overlap it with their own sync. Two syncs in flight can: while one batch
    syncs, the writers of the other are woken and queue the next, and the disk here completes
    two concurrent synced writes at 1.8x the rate of one.

    While no other batch is syncing, a sync thread *lingers* for the writers it just woke:
    until the batch is as large as the last one, for at most ``linger`` and at most as long
    as the last sync took (with one sync at a time, writers that split into two groups taking
    turns came back from each fsync to a GIL held by the other group: 3.7 records a commit).
    While another batch syncs, it takes what is queued at once.
    """

    def __init__(self, write: Callable[[CommitBatch], Any],
                 publish: Callable[[CommitBatch, Any], None],
                 flush: Callable[[Any], None] = lambda written: None, *,
                 max_batch_bytes: int, first_batch: int = 1, linger: float = 0.002,
                 in_flight: int = 2, name: str = "cellframe-commit") -> None:
        self._write = write
        self._flush = flush
        self._publish = publish
        self._max = max_batch_bytes
        self.linger = linger
        self.in_flight = in_flight
        self._mutex = threading.Lock()  # taken directly where no wait is needed: cheaper
        self._cond = threading.Condition(self._mutex)
        self._open = CommitBatch(first_batch)
        self._closing = False
        self._sleeping = False
        self._wanted = 1  # how many items wake a sleeping sync thread
        self._previous = 0
        self._took = 0.0
        # Placing: one sync thread at a time takes the open batch and writes it, in order.
        self._placing = threading.Lock()
        self._next_ticket = 0
        # Flushing: the tickets placed and not yet durable (each added before the next is
        # placed, so the smallest one bounds what may be flushed).
        self._flight = threading.Condition(threading.Lock())
        self._flying: set[int] = set()
        # Settling, in ticket order, by whichever sync thread completes the next one.
        self._settling = threading.Lock()
        self._completed: dict[int, tuple[CommitBatch, Any, BaseException | None]] = {}
        self._next_settle = 0
        self._failed: BaseException | None = None
        self._threads = [threading.Thread(target=self._sync_loop, name=f"{name}-sync-{i}",
                                          daemon=True) for i in range(in_flight)]
        for thread in self._threads:
            thread.start()

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
            batch.items.append(item)
            batch.size += size
            if callback is not None:
                batch.callbacks.append((callback, arg))  # open batch: cannot be settled yet
            if self._sleeping and len(batch.items) >= self._wanted:
                self._cond.notify()  # one wake-up per batch, not one per record
            return batch

    def submit_many(self, items: list[Any], size: int) -> CommitBatch:
        """Add ``items`` (``size`` bytes in all) to the open batch and return that batch."""
        with self._mutex:
            if self._closing:
                raise StoreError("the store is closed")
            batch = self._open
            batch.items += items
            batch.size += size
            if self._sleeping and len(batch.items) >= self._wanted:
                self._cond.notify()
            return batch

    def wait_for_flushes(self) -> None:
        """Wait until every batch placed so far is durable (from ``write``, before a change
        that must not overtake them, such as sealing the file they are in)."""
        with self._flight:
            while self._flying:
                self._flight.wait()

    def close(self) -> None:
        """Commit what is open, publish it, then stop the sync threads."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    # -- taking the open batch (one sync thread at a time, under _placing) -------------------

    def _sleep(self, wanted: int, timeout: float | None) -> None:
        self._sleeping, self._wanted = True, wanted
        try:
            self._cond.wait(timeout)
        finally:
            self._sleeping = False

    def _take(self) -> CommitBatch | None:
        """The open batch once it holds something, after the linger (a fresh one opens);
        None once closing with nothing left."""
        with self._cond:
            while not self._open.items:
                if self._closing:
                    return None
                self._sleep(1, None)
            wanted = self._previous if not self._flying else 0
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
        return batch

    # -- each sync thread ---------------------------------------------------------------------

    def _sync_loop(self) -> None:
        while True:
            with self._placing:
                batch = self._take()
                if batch is None:
                    return
                ticket = self._next_ticket
                self._next_ticket += 1
                try:
                    written, error = self._write(batch), None
                except BaseException as exc:  # settled with the error, in order
                    written, error = None, exc
                with self._flight:
                    self._flying.add(ticket)
            if error is None:
                error = self._flush_in_turn(ticket, written)
            else:
                self._landed(ticket)
            if error is not None:
                log.error("group commit failed: %s", error)
            self._complete(ticket, batch, written, error)

    def _flush_in_turn(self, ticket: int, written: Any) -> BaseException | None:
        """Flush once the batch ``in_flight`` places earlier is durable; the error if any."""
        with self._flight:
            while min(self._flying) <= ticket - self.in_flight:
                self._flight.wait()
        start = time.monotonic()
        try:
            self._flush(written)
        except BaseException as exc:
            return exc
        finally:
            self._took = time.monotonic() - start
            self._landed(ticket)
        return None

    def _landed(self, ticket: int) -> None:
        with self._flight:
            self._flying.discard(ticket)
            self._flight.notify_all()

    def _complete(self, ticket: int, batch: CommitBatch, written: Any,
                  error: BaseException | None) -> None:
        """Settle every batch whose turn has come, in order (holding ``_settling``, so that
        a batch is published only after the one before it)."""
        with self._settling:
            self._completed[ticket] = (batch, written, error)
            while (done := self._completed.pop(self._next_settle, None)) is not None:
                self._next_settle += 1
                self._settle(*done)

    def _settle(self, batch: CommitBatch, written: Any, error: BaseException | None) -> None:
        if error is None and self._failed is not None:
            error = StoreError(f"an earlier commit failed: {self._failed}")
        if error is None:
            try:
                self._publish(batch, written)
            except BaseException as exc:
                log.error("publishing a group commit failed: %s", exc)
                error = exc
        if error is not None:
            self._failed = self._failed or error
        batch.settle(error)
