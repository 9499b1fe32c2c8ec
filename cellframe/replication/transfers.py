"""Partition transfers pulled by their new owner: resumable, in order, within a budget.

A shard cell that gains partitions (the ``Transfer`` s of the ring's plan naming it) pulls
them from live old owners. One request asks one source for many partitions at once, each
from its own position, and the answer carries as many records as fit in one message::

    new -> old  (handoff-pull :request R :positions '((p n) (q m) ...))
    old -> new  (handoff-batch :request R :parts '((p last more (row ...)) ...))
    new: apply every row durably, checkpoint, and ask again for what has more

Within a partition the rows are the source's records in sequence order (``records_since``,
cut by ``HandoffSender``), so a partition arrives in order. A partition the answer did not
reach (the message was full) is simply asked again. One request per partition measured
2,600 records/s here (1,024 partitions of 20 records, in one process: every message costs
several thread wake-ups); many partitions per message removes most of those.

The position is the source's sequence, checkpointed in ``Checkpoints`` under
``transfer_key(p, source, target)`` so that a transfer interrupted by a crash of either side
resumes where it was. A checkpoint costs an fsync (3 ms here), so it is written at most every
``CHECKPOINT_EVERY`` seconds per partition and never for the batch that completes it (the key
is then forgotten); resuming from an older checkpoint only re-sends records that the
receiver's store ignores. The source charges each answer to the node's one ``TokenBucket``
and, when the budget says to wait, schedules the send instead of sleeping.
"""

from __future__ import annotations

import heapq
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import StoreError
from ..statemachine import transition
from ..store import Checkpoints, HandoffSender, Record, TokenBucket, Transfer
from ..store.handoff import record_bytes, transfer_key
from ..symbols import Keyword, Symbol
from .base import ShardBase, _int
from .wire import MESSAGE_BUDGET, RECORDS_PER_ROW, quoted, record_text, row_size, rows_to_records

__all__ = ["CHECKPOINT_EVERY", "Handoff", "Pull", "Pulls"]

log = logging.getLogger(__name__)

#: Seconds between two checkpoints of one partition's transfer.
CHECKPOINT_EVERY = 0.5
#: Partitions asked of one source in one request.
PULL_GROUP = 32
#: Requests waiting for an answer from one source at a time.
REQUESTS_PER_SOURCE = 4


@dataclass(slots=True)
class Pull:
    """One partition this cell is receiving."""

    partition: int
    sources: tuple[int, ...]
    source: int | None = None
    position: int = 0
    request: str | None = None  # the request it waits an answer to
    asked_at: float = 0.0
    applying: bool = False
    checkpointed_at: float | None = None
    records: int = 0

    @property
    def idle(self) -> bool:
        return self.request is None and not self.applying


class Pulls:
    """The receiving side's transfers (pure bookkeeping; the cell sends the messages)."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.queued: dict[int, Pull] = {}
        self.active: dict[int, Pull] = {}
        self.finished = 0

    def want(self, partition: int, sources: tuple[int, ...]) -> None:
        """Queue ``partition`` (a repeat only refreshes the sources of a queued one)."""
        if partition not in self.active:
            self.queued[partition] = Pull(partition, sources)

    def drop(self, keep: Callable[[int], bool]) -> list[int]:
        """Cancel the transfers of partitions for which ``keep`` is false."""
        gone = [p for p in [*self.queued, *self.active] if not keep(p)]
        for p in gone:
            self.queued.pop(p, None)
            self.active.pop(p, None)
        return gone

    def start(self) -> None:
        """Activate queued transfers, oldest first, up to the concurrency limit."""
        while self.queued and len(self.active) < self.concurrency:
            partition = next(iter(self.queued))
            self.active[partition] = self.queued.pop(partition)

    def stalled(self, now: float, timeout: float) -> list[Pull]:
        """Active transfers waiting for an answer for longer than ``timeout``."""
        return [p for p in self.active.values()
                if p.request is not None and now - p.asked_at > timeout]

    def done(self, partition: int) -> Pull | None:
        pull = self.active.pop(partition, None)
        if pull is not None:
            self.finished += 1
        return pull

    def receiving(self, partition: int) -> bool:
        return partition in self.active or partition in self.queued

    def __len__(self) -> int:
        return len(self.active) + len(self.queued)


class Handoff(ShardBase):
    """The transfer part of the shard cell: pulls what it gains, serves what others pull."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pulls = Pulls(self.config.handoff_concurrency)
        self.budget = TokenBucket(self.config.handoff_rate)
        self.outgoing: list[tuple[float, int, int, list[Any]]] = []  # (due, order, shard, expr)
        self._saved_receiving = 0
        self._saved_at = 0.0
        self._order = 0

    def is_receiving(self, partition: int) -> bool:
        return self.pulls.receiving(partition)

    def receiving_now(self) -> list[int]:
        return sorted([*self.pulls.active, *self.pulls.queued])

    def on_restored(self, receiving: list[int]) -> None:
        super().on_restored(receiving)
        for p in receiving:
            if self.view.owns(p):
                self.pulls.want(p, tuple(s for s in self.view.owners(p) if s != self.me))
        self._saved_receiving = len(self.pulls)

    # -- starting transfers -----------------------------------------------------------------

    def on_ring_change(self, plan: list[Transfer], *, first: bool) -> None:
        super().on_ring_change(plan, first=first)
        for t in plan:
            if t.to_shard == self.me:
                self.pulls.want(t.partition, t.from_shards)
        if first:
            # The first table of a cell that had none (and no saved one) already names it: it
            # holds nothing it can vouch for (replicated writes may have reached it already,
            # so "empty" is no test), so it pulls every partition it owns; what it has is
            # skipped by the store.
            for p in self.view.mine():
                self.pulls.want(p, tuple(s for s in self.view.owners(p) if s != self.me))
        for p in self.pulls.drop(self.view.owns):
            log.info("%s: partition %s is no longer ours; transfer dropped", self.cell_name, p)
        self._pull(time.monotonic())

    def pull_partition(self, p: int, sources: tuple[int, ...]) -> None:
        if not self.pulls.receiving(p):
            self.pulls.want(p, sources)
            self._pull(time.monotonic())

    def on_tick(self, now: float) -> None:
        super().on_tick(now)
        for pull in list(self.pulls.active.values()):
            if pull.request is not None and pull.source is not None and not self.live(pull.source):
                pull.request = None  # its source is gone: ask another one
        # A source that is alive but slow is waited for: asking again (or elsewhere) while
        # it works only adds work, and under load that fed on itself (3 s was too short:
        # thousands of re-asks in one process). Only a lost message is worth asking again.
        for pull in self.pulls.stalled(now, self.config.stall_timeout):
            self.count("transfer_stalls")
            pull.request = None
        self._pull(now)
        self._send_due(now)
        if len(self.pulls) != self._saved_receiving and now - self._saved_at >= 1.0:
            # at most once a second: 6% of the CPU of a transfer when it was every tick
            self._saved_receiving, self._saved_at = len(self.pulls), now
            self.save_ring()

    def _pull(self, now: float) -> None:
        """Ask each source for the next records of every idle transfer it serves."""
        self.pulls.start()
        by_source: dict[int, list[Pull]] = {}
        asked: dict[int, set[str]] = {}
        for pull in list(self.pulls.active.values()):
            if pull.request is not None and pull.source is not None:
                asked.setdefault(pull.source, set()).add(pull.request)
            elif pull.idle:
                source = self._source(pull)
                if source is not None:
                    by_source.setdefault(source, []).append(pull)
        for source, pulls in by_source.items():
            # A few requests in flight per source keep it busy without queueing answers that
            # would outlive the stall timer (unbounded, 877 of them stalled and were re-sent).
            room = REQUESTS_PER_SOURCE - len(asked.get(source, ()))
            for start in range(0, min(len(pulls), room * PULL_GROUP), PULL_GROUP):
                self._ask(source, pulls[start:start + PULL_GROUP], now)

    def _source(self, pull: Pull) -> int | None:
        """A live source for ``pull``: the current one while it lives, else the one we hold
        the furthest checkpoint of (it resumes where it stopped; another starts over)."""
        candidates = [s for s in pull.sources if s != self.me and self.live(s)]
        if not candidates:
            log.warning("%s: no live source holds partition %s; left to anti-entropy",
                        self.cell_name, pull.partition)
            self._finished(pull.partition)
            return None
        if pull.source in candidates:
            return pull.source
        resume = self._checkpoints().get
        source = max(candidates, key=lambda s: resume(self._key(pull.partition, s)))
        pull.source, pull.position = source, resume(self._key(pull.partition, source))
        return source

    def _ask(self, source: int, pulls: list[Pull], now: float) -> None:
        request = uuid.uuid4().hex[:16]
        for pull in pulls:
            pull.request, pull.asked_at = request, now
        self.send_to(source, [Symbol("handoff-pull"), Keyword("shard"), self.me,
                              Keyword("request"), request, Keyword("positions"),
                              quoted([[p.partition, p.position] for p in pulls])])

    # -- the source's side ------------------------------------------------------------------

    @transition("handoff-pull")
    def handoff_pull(self, shard: int, request: str, positions: Any, **extra: Any) -> None:
        if self.store is None or not _int(shard) or not isinstance(positions, list):
            return
        parts, room, charged, sent = [], MESSAGE_BUDGET, 0, 0
        for entry in positions:
            if room <= 0:
                break
            if not (isinstance(entry, list) and len(entry) == 2 and _int(*entry)
                    and 0 <= entry[0] < self.config.partitions):
                continue
            part, used, cost, count = self._part(entry[0], entry[1], room)
            parts.append(part)
            room -= used
            charged += cost
            sent += count
        delay = self.budget.reserve(charged) if charged else 0.0
        self.count("transfer_records_sent", sent)
        self.count("transfer_bytes_charged", charged)
        expr = [Symbol("handoff-batch"), Keyword("shard"), self.me, Keyword("request"), request,
                Keyword("parts"), quoted(parts)]
        if delay > 0:
            self.count("transfer_answers_paced")
            self._order += 1
            heapq.heappush(self.outgoing, (time.monotonic() + delay, self._order, shard, expr))
        else:
            self.send_to(shard, expr)

    def _part(self, p: int, position: int, room: int) -> tuple[list[Any], int, int, int]:
        """``[p, last, more, rows]`` after ``position`` within ``room`` bytes; the bytes it
        takes, its cost against the budget, and its records."""
        assert self.store is not None
        sender = HandoffSender(self.store, p, batch_bytes=min(room, self.config.handoff_batch_bytes))
        batch, _ = sender.next_batch(position)
        records = list(batch.records) if batch is not None else []
        rows: list[str] = []
        last, used, cost, count = position, 16, 0, 0
        for start in range(0, len(records), RECORDS_PER_ROW):
            group = records[start:start + RECORDS_PER_ROW]
            row = "".join(record_text(r) for r in group)
            size = row_size(row)
            if rows and used + size > room:
                break
            rows.append(row)
            last, used, count = group[-1].sequence, used + size, count + len(group)
            cost += sum(record_bytes(r) for r in group)
        more = last < self.store.last_position(p)
        return [p, last, more, rows], used, cost, count

    def _send_due(self, now: float) -> None:
        while self.outgoing and self.outgoing[0][0] <= now:
            _, _, shard, expr = heapq.heappop(self.outgoing)
            self.send_to(shard, expr)

    # -- the receiver's side ----------------------------------------------------------------

    @transition("handoff-batch")
    def handoff_batch(self, shard: int, request: str, parts: Any, **extra: Any) -> None:
        if not _int(shard) or not isinstance(parts, list):
            return
        waiting = [p for p in self.pulls.active.values()
                   if p.request == request and p.source == shard]
        accepted: list[tuple[Pull, int, bool, int]] = []
        records: list[Record] = []
        for part in parts:
            pull, last, more, rows = self._accept(part, request, shard)
            if pull is not None:
                batch, bad = rows_to_records(rows)
                self.count("bad_rows", bad)
                records += batch
                pull.applying = True
                accepted.append((pull, last, more, len(batch)))
        for pull in waiting:
            pull.request = None  # answered (or not reached: asked again next time)
        self.when_durable(records, lambda failures: self._applied(accepted, failures))

    def _accept(self, part: Any, request: str, shard: int) -> tuple[Pull | None, int, bool, Any]:
        if not (isinstance(part, list) and len(part) == 4 and _int(part[0], part[1])):
            return None, 0, False, None
        p, last, more, rows = part
        pull = self.pulls.active.get(p)
        if pull is None or pull.request != request or pull.source != shard or last < pull.position:
            return None, 0, False, None  # late, duplicated, or from a source given up on
        return pull, last, bool(more), rows

    def _applied(self, accepted: list[tuple[Pull, int, bool, int]], failures: int) -> None:
        now = time.monotonic()
        for pull, last, more, count in accepted:
            pull.applying = False
            if failures or self.pulls.active.get(pull.partition) is not pull:
                continue  # refused by the store (asked again), or cancelled meanwhile
            pull.position = last
            pull.records += count
            self.count("transfer_records_received", count)
            key = self._key(pull.partition, pull.source)  # type: ignore[arg-type]
            if more:
                if pull.checkpointed_at is None or now - pull.checkpointed_at >= CHECKPOINT_EVERY:
                    self._checkpoints().set(key, last)
                    pull.checkpointed_at = now
                continue
            if pull.checkpointed_at is not None:
                self._checkpoints().forget(key)
            self._finished(pull.partition)
        self._pull(now)

    def _finished(self, partition: int) -> None:
        self.pulls.done(partition)

    # -- helpers ----------------------------------------------------------------------------

    def _checkpoints(self) -> Checkpoints:
        if self.checkpoints is None:
            raise StoreError("the checkpoint file is not open")
        return self.checkpoints

    def _key(self, partition: int, source: int) -> str:
        return transfer_key(partition, source, self.me)

    def transfer_summary(self) -> dict[str, int]:
        return {"active": len(self.pulls.active), "queued": len(self.pulls.queued),
                "finished": self.pulls.finished}

    def cell_snapshot(self) -> dict[str, Any]:
        snapshot = super().cell_snapshot()
        snapshot["shard"]["transfers"] = self.transfer_summary()
        return snapshot
