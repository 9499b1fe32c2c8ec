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
resumes where it was. A checkpoint costs an fsync (0.15 to 3 ms here), so the checkpoints of
every partition are written together, in one fsync at most every ``CHECKPOINT_EVERY``
seconds, and never for the batch that completes a transfer (the key is then forgotten, with
the next write); resuming from an older checkpoint only re-sends records that the receiver's
store ignores. The source charges each answer to the node's one ``TokenBucket``
and, when the budget says to wait, schedules the send instead of sleeping.
"""

from __future__ import annotations

import heapq
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..cell.statemachine import transition
from ..errors import StoreError
from ..language.symbols import Keyword, Symbol
from ..store import Checkpoints, HandoffSender, Record, TokenBucket, Transfer
from ..store.handoff import parse_transfer_key, record_bytes, transfer_key
from .base import ShardBase, _int
from .wire import MESSAGE_BUDGET, RECORDS_PER_ROW, quoted, record_text, row_size, rows_to_records

__all__ = ["CHECKPOINT_EVERY", "Asked", "Handoff", "Pull", "Pulls"]

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
    checkpointed: bool = False  # a checkpoint of it is written or waits to be
    records: int = 0

    @property
    def idle(self) -> bool:
        return self.request is None and not self.applying


@dataclass(slots=True)
class Asked:
    """A request waiting for its answer: whom it asked, when, for which transfers."""

    source: int
    at: float
    pulls: list[Pull]


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

    #: A partition's transfer, between shard cells only.
    node_verbs: ClassVar[Mapping[str, str | None]] = dict.fromkeys(("handoff-pull", "handoff-batch"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pulls = Pulls(self.config.handoff_concurrency)
        self.asked: dict[str, Asked] = {}  # request id -> the request, until answered
        self.budget = TokenBucket(self.config.handoff_rate)
        self.outgoing: list[tuple[float, int, int, list[Any]]] = []  # (due, order, shard, expr)
        self.due_checkpoints: dict[str, int] = {}  # key -> position, written together
        self.finished_checkpoints: set[str] = set()  # keys to forget, with the next write
        self._checkpointed_at = -float("inf")
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

    def on_stop(self) -> None:
        try:
            self._write_checkpoints(float("inf"))  # what is due, before the file closes
        except OSError as error:
            log.warning("%s: checkpoints not written: %s", self.cell_name, error)
        super().on_stop()

    def on_tick(self, now: float) -> None:
        super().on_tick(now)
        # A source that is alive but slow is waited for: asking again (or elsewhere) while
        # it works only adds work, and under load that fed on itself (3 s was too short:
        # thousands of re-asks in one process). Only a lost message is worth asking again;
        # a request to a source that is gone is asked of another one.
        for request, asked in list(self.asked.items()):
            waiting = [p for p in asked.pulls
                       if p.request == request and self.pulls.active.get(p.partition) is p]
            gone = not self.live(asked.source)
            if not waiting or gone or now - asked.at > self.config.stall_timeout:
                del self.asked[request]
                for pull in waiting:
                    pull.request = None
                    if not gone:
                        self.count("transfer_stalls")
        self._pull(now, every=True)
        self._send_due(now)
        self._write_checkpoints(now)
        if len(self.pulls) != self._saved_receiving and now - self._saved_at >= 1.0:
            # at most once a second: 6% of the CPU of a transfer when it was every tick
            self._saved_receiving, self._saved_at = len(self.pulls), now
            self.save_ring()

    def _pull(self, now: float, *, every: bool = False) -> None:
        """Ask each source with room for the next records of idle transfers it serves.

        Runs on every answer, so it stops once the room is filled (a scan of all 1,024
        transfers each time was a tenth of a receiving spare's CPU); ``every`` scans them
        all, which also finishes those left without a live source (the tick does it).
        """
        self.pulls.start()
        room = self._room()
        wanted = sum(room.values()) * PULL_GROUP
        if not wanted and not every:
            return
        by_source: dict[int, list[Pull]] = {}
        for pull in list(self.pulls.active.values()):
            if not pull.idle:
                continue
            source = self._source(pull)
            if source is None or not room.get(source):
                continue
            group = by_source.setdefault(source, [])
            if len(group) < room[source] * PULL_GROUP:
                group.append(pull)
                wanted -= 1
                if not wanted and not every:
                    break
        for source, pulls in by_source.items():
            for start in range(0, len(pulls), PULL_GROUP):
                self._ask(source, pulls[start:start + PULL_GROUP], now)

    def _room(self) -> dict[int, int]:
        """Requests each live source may be sent now. A few in flight per source keep it
        busy without queueing answers that would outlive the stall timer (unbounded, 877 of
        them stalled and were re-sent)."""
        busy: dict[int, int] = {}
        for asked in self.asked.values():
            busy[asked.source] = busy.get(asked.source, 0) + 1
        return {s: REQUESTS_PER_SOURCE - busy.get(s, 0) for s in self.peers.shards()
                if s != self.me and busy.get(s, 0) < REQUESTS_PER_SOURCE}

    def _source(self, pull: Pull) -> int | None:
        """A live source for ``pull``: the current one while it lives, else the one we hold
        the furthest checkpoint of (it resumes where it stopped; another starts over)."""
        if pull.source is not None and self.live(pull.source):
            return pull.source  # chosen among the candidates below, and still alive
        candidates = [s for s in pull.sources if s != self.me and self.live(s)]
        if not candidates:
            log.warning("%s: no live source holds partition %s; left to anti-entropy",
                        self.cell_name, pull.partition)
            self._finished(pull.partition)
            return None
        resume = self._resume_position
        source = max(candidates, key=lambda s: resume(self._key(pull.partition, s)))
        pull.source, pull.position = source, resume(self._key(pull.partition, source))
        return source

    def _resume_position(self, key: str) -> int:
        """Where a transfer resumes: its newest checkpoint, written or waiting to be."""
        if key in self.finished_checkpoints:
            return 0
        due = self.due_checkpoints.get(key)
        return due if due is not None else self._checkpoints().get(key)

    def _ask(self, source: int, pulls: list[Pull], now: float) -> None:
        request = uuid.uuid4().hex[:16]
        for pull in pulls:
            pull.request, pull.asked_at = request, now
        self.asked[request] = Asked(source, now, pulls)
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
            self._answer(shard, expr)

    def _answer(self, shard: int, expr: list[Any]) -> None:
        if not self.send_to(shard, expr):
            # A requester this cell does not count as live (declared down, not heard from
            # since): the answer is lost and the requester asks again after the stall time.
            self.count("transfer_answers_unsent")

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
            self._answer(shard, expr)

    # -- the receiver's side ----------------------------------------------------------------

    @transition("handoff-batch")
    def handoff_batch(self, shard: int, request: str, parts: Any, **extra: Any) -> None:
        if not _int(shard) or not isinstance(parts, list):
            return
        asked = self.asked.get(request)
        waiting: list[Pull] = []
        if asked is not None and asked.source == shard:
            del self.asked[request]
            waiting = [p for p in asked.pulls if p.request == request]
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
            pull.request = None  # answered (or not reached: asked again at once)
        self.when_durable(records, lambda failures: self._applied(accepted, failures),
                          source=shard)
        # The answer freed a request slot: fill it now rather than once these records are
        # durable, so the source works while this cell applies (its partitions wait, being
        # applied: order within a partition holds).
        self._pull(time.monotonic())

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
                self.due_checkpoints[key] = last
                self.finished_checkpoints.discard(key)
                pull.checkpointed = True
                continue
            if pull.checkpointed:
                self.due_checkpoints.pop(key, None)
                self.finished_checkpoints.add(key)
            self._finished(pull.partition)
        self._pull(now)
        self._write_checkpoints(now)

    def _write_checkpoints(self, now: float) -> None:
        """Write the checkpoints due and forget the finished ones, in one fsync at most
        every ``CHECKPOINT_EVERY`` seconds: one fsync per partition and batch held this
        cell's thread for 1,024 fsyncs when a spare received every partition at once."""
        if not (self.due_checkpoints or self.finished_checkpoints) or \
                now - self._checkpointed_at < CHECKPOINT_EVERY or self.checkpoints is None:
            return
        self._checkpointed_at = now
        due, finished = self.due_checkpoints, self.finished_checkpoints
        self.due_checkpoints, self.finished_checkpoints = {}, set()
        self.checkpoints.update(due, finished)

    def _finished(self, partition: int) -> None:
        self.pulls.done(partition)

    def forget_transfers(self, partitions: set[int]) -> None:
        """Forget, durably and at once, the checkpoints of transfers of ``partitions`` to this
        cell: once it drops them, a later transfer must start over, not resume past records
        it no longer holds."""
        super().forget_transfers(partitions)
        if not partitions:
            return

        def ours(key: str) -> bool:
            parsed = parse_transfer_key(key)
            return parsed is not None and parsed[0] in partitions and parsed[2] == self.me

        for key in [k for k in self.due_checkpoints if ours(k)]:
            del self.due_checkpoints[key]
        self.finished_checkpoints -= {k for k in self.finished_checkpoints if ours(k)}
        self._checkpoints().update({}, [k for k in self._checkpoints().keys() if ours(k)])

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
