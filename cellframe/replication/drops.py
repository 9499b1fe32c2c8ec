"""Dropping the partitions a shard no longer owns, once their owners hold what it holds.

While a partition moves, its old owners keep their copies and stay in its replica set
(``ringview``): writes reach them, reads ask them. Once the move is over, an old owner X drops
its copy, but only after every current owner O has said it durably holds every record X
holds of the partition::

    X -> O  (drop-check :shard X :partition p :check K :chunk i :digests '("hex" ...))
    O -> X  (drop-check-is :shard O :partition p :check K :chunk i :owner true :missing '(...))
    X -> O  (drop-check :shard X :partition p :check K :chunk j :rows '(...))  what O lacked
    O -> X  (drop-check-is ... :chunk j :missing '(...))   once O applied them, durably

X asks only when it is not in p's preference list, the move of p is over (the view has
settled it: no live owner receives p), X itself is not receiving p, and every owner of p is
live and announces the same ring as X (a peer on another table may still count X as an
owner). The digests are those of X's durable records of p up to its newest sequence S
(``Store.holdings``), sent to every owner; an answer from a shard that does not own p in its
own ring, fails the check (asked again on a later round). What an owner lacks, X sends it as
rows, under new chunk numbers of the same check; the owner applies them and answers for those
chunks once they are durable. A record the owner's retention rule drops (``shard.retention``:
the owner compacted, and holds newer versions) is not applied and not missing: the owner
could only learn that from the record itself, which is why the rows go back to it rather
than X asking again (an owner that compacted would otherwise lack the same digests on every
round, and X could never drop). A chunk of rows still lacking after that fails the check.
Once every owner confirmed every chunk, X drops p up to S
(``Store.drop_partition(p, upto=S)``): records that reached X after it asked (a write
coordinated with a stale ring) have larger sequences, are kept, and are checked next time.

The drop is a compaction that keeps nothing, with compaction's crash-safe steps. Before it,
X forgets its transfer checkpoints of p (durably: forgetting one early only costs records
sent again), so that if the ring gives p back, X pulls it from the start, not from where an
earlier transfer stopped. Drops run on the cell's thread, which is what makes the ownership
test and the drop one step (a thread of their own could drop records that a pull started
meanwhile had just found present); each costs a few fsyncs, so a tick spends at most
``DROP_BUDGET`` seconds on them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..cell.statemachine import transition
from ..errors import CellframeError
from ..language.symbols import Keyword, Symbol
from .base import ShardBase, _int
from .wire import chunks, digest_hex, hex_digest, quoted, row_size, rows_of, rows_to_records

__all__ = ["DROP_BUDGET", "DropCheck", "Drops", "MAX_DROP_CHECKS"]

log = logging.getLogger(__name__)

#: Partitions whose owners are being asked at once (each check is a message per owner per
#: 1,600 records).
MAX_DROP_CHECKS = 64
#: Seconds of a tick that drops may take.
DROP_BUDGET = 0.02


@dataclass(slots=True)
class DropCheck:
    """Owners being asked to confirm they hold a partition's records up to ``upto``."""

    check: str
    upto: int
    ring: tuple[int, str]  # the table (version, digest) the owners were named by
    started: float
    waiting: set[tuple[int, int]] = field(default_factory=set)  # (owner, chunk) unconfirmed
    next_chunk: int = 0  # the number of the next chunk (of rows sent to an owner)
    rows_chunks: set[int] = field(default_factory=set)  # the chunks that carried rows


class Drops(ShardBase):
    """The part of the shard cell that drops partitions it no longer owns, safely."""

    #: The checks an old owner makes before it drops a partition, between shard cells only.
    node_verbs: ClassVar[Mapping[str, str | None]] = dict.fromkeys(("drop-check", "drop-check-is"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drop_checks: dict[int, DropCheck] = {}
        #: partition -> (sequence its owners confirmed, the ring they were owners in)
        self.drop_ready: dict[int, tuple[int, tuple[int, str]]] = {}
        self.next_drop_round = time.monotonic() + self.config.drop_interval

    def may_drop(self, p: int) -> bool:
        """Is ``p`` someone else's now, its move over, and its owners live on our ring?"""
        ring = self.view.ring
        if ring is None or self.restored or self.view.owns(p) or p in self.view.moved_at \
                or self.is_receiving(p):
            return False
        agreed = self._ring_key()
        owners = self.view.owners(p)
        return bool(owners) and all(
            self.live(s) and self.peer_rings.get(s) == agreed
            and p not in self.peer_receiving.get(s, ()) for s in owners)

    def on_tick(self, now: float) -> None:
        super().on_tick(now)
        if self.store is None or self.view.ring is None:
            return
        if self.drop_ready:
            self._drop_confirmed()
        if now >= self.next_drop_round:
            self.next_drop_round = now + self.config.drop_interval
            for p, entry in list(self.drop_checks.items()):
                if now - entry.started > self.config.stall_timeout:
                    del self.drop_checks[p]  # an answer was lost: asked again below
            self._start_drop_checks(now)

    # -- asking the owners (X) --------------------------------------------------------------

    def _start_drop_checks(self, now: float) -> None:
        assert self.store is not None
        for p in self.store.partitions_held():
            if len(self.drop_checks) >= MAX_DROP_CHECKS:
                return
            if p not in self.drop_checks and p not in self.drop_ready and self.may_drop(p):
                self._ask_owners(p, now)

    def _ask_owners(self, p: int, now: float) -> None:
        assert self.store is not None
        upto, digests = self.store.holdings(p)
        if not digests:
            return
        entry = self.drop_checks[p] = DropCheck(uuid.uuid4().hex[:16], upto, self._ring_key(),
                                                now)
        parts = list(chunks([hex_digest(d) for d in digests], lambda d: 35))
        entry.next_chunk = len(parts)
        self.count("drop_checks")
        for owner in self.view.owners(p):
            for i, part in enumerate(parts):
                entry.waiting.add((owner, i))
                self.send_to(owner, [Symbol("drop-check"), Keyword("shard"), self.me,
                                     Keyword("partition"), p, Keyword("check"), entry.check,
                                     Keyword("chunk"), i, Keyword("digests"), quoted(part)])

    @transition("drop-check-is")
    def drop_check_is(self, shard: int, partition: int, check: str, chunk: int,
                      owner: bool = False, missing: Any = None, **extra: Any) -> None:
        entry = self.drop_checks.get(partition) if _int(partition) else None
        if entry is None or entry.check != check or (shard, chunk) not in entry.waiting:
            return  # late, repeated, or for a check given up on
        lacked = list(map(digest_hex, missing)) if isinstance(missing, list) else [None]
        if owner is not True or None in lacked or (lacked and chunk in entry.rows_chunks):
            del self.drop_checks[partition]  # asked again on a later round
            self.count("drop_checks_failed")
            return
        entry.waiting.discard((shard, chunk))
        if lacked:
            self._send_lacked(shard, partition, entry, [d for d in lacked if d is not None])
        if not entry.waiting:
            del self.drop_checks[partition]
            self.drop_ready[partition] = (entry.upto, entry.ring)

    def _send_lacked(self, shard: int, p: int, entry: DropCheck, digests: list[bytes]) -> None:
        """Send an owner the records of ``p`` it lacks, as more chunks of the check (those
        this cell compacted away meanwhile need not be sent: its rule dropped them)."""
        assert self.store is not None
        records = self.store.fetch(p, digests)
        self.count("drop_check_pushed", len(records))
        for part in chunks(rows_of(records), row_size):
            chunk, entry.next_chunk = entry.next_chunk, entry.next_chunk + 1
            entry.waiting.add((shard, chunk))
            entry.rows_chunks.add(chunk)
            self.send_to(shard, [Symbol("drop-check"), Keyword("shard"), self.me,
                                 Keyword("partition"), p, Keyword("check"), entry.check,
                                 Keyword("chunk"), chunk, Keyword("rows"), quoted(part)])

    # -- dropping (X) -----------------------------------------------------------------------

    def _drop_confirmed(self) -> None:
        """Drop the confirmed partitions that are still someone else's, within the budget.

        A confirmation counts only on the table it was asked on: on another, the owners
        that answered may not be the owners any more.
        """
        start, ring = time.monotonic(), self._ring_key()
        batch = {p: ready for p, ready in self.drop_ready.items()
                 if ready[1] == ring and self.may_drop(p)}
        self.drop_ready.clear()  # the others are owned or moving again, or asked again later
        try:
            self.forget_transfers(set(batch))
        except (OSError, CellframeError) as error:
            log.warning("%s: transfer checkpoints not forgotten (%s); nothing dropped",
                        self.cell_name, error)
            return
        for p, ready in batch.items():
            if time.monotonic() - start > DROP_BUDGET:
                self.drop_ready[p] = ready  # next tick (its checkpoints are forgotten already)
                continue
            self._drop(p, ready[0])

    def _ring_key(self) -> tuple[int, str]:
        ring = self.view.ring
        return (-1, "") if ring is None else (ring.version, self.view.digest)

    def _drop(self, p: int, upto: int) -> None:
        assert self.store is not None
        try:
            result = self.store.drop_partition(p, upto=upto)
        except (OSError, CellframeError) as error:
            log.warning("%s: partition %s not dropped: %s", self.cell_name, p, error)
            return
        self.count("partitions_dropped")
        self.count("records_dropped", result.dropped)
        log.info("%s: dropped partition %s (%d records), its owners hold them", self.cell_name,
                 p, result.dropped)

    # -- answering (O) ----------------------------------------------------------------------

    @transition("drop-check")
    def drop_check(self, shard: int, partition: int, check: str, chunk: int,
                   digests: Any = None, rows: Any = None, **extra: Any) -> None:
        """Say which of an old owner's records of a partition this shard lacks (given their
        digests), or apply those it lacked and then say which it still lacks (given rows)."""
        if self.store is None or not _int(shard, partition, chunk) or \
                not 0 <= partition < self.config.partitions:
            return
        if rows is not None:
            self._apply_lacked(shard, partition, check, chunk, rows)
            return
        if not isinstance(digests, list):
            return
        wanted = [d for d in map(digest_hex, digests) if d is not None]
        if len(wanted) != len(digests):
            return  # unreadable: no answer is safer than a wrong "nothing missing"
        self._answer_check(shard, partition, check, chunk, self.store.missing(partition, wanted))

    def _apply_lacked(self, shard: int, p: int, check: str, chunk: int, rows: Any) -> None:
        """Apply an old owner's rows; answer once durable with those still lacking (a record
        retention drops here is not lacking: see ``when_durable``)."""
        records, bad = rows_to_records(rows)
        if bad:
            self.count("bad_rows", bad)
            return  # unreadable: no answer is safer than a wrong "nothing missing"

        def durable(failures: int) -> None:
            store = self.store
            if store is None:
                return
            absent = set(store.missing(p, [r.digest for r in records]))
            lacking = [r for r in records if r.digest in absent]
            keep = self.retention_now()
            if keep is not None:
                lacking = store.retained(lacking, keep)
            self._answer_check(shard, p, check, chunk, [r.digest for r in lacking])

        self.when_durable(records, durable, source=shard)

    def _answer_check(self, shard: int, p: int, check: str, chunk: int,
                      missing: list[bytes]) -> None:
        self.send_to(shard, [Symbol("drop-check-is"), Keyword("shard"), self.me,
                             Keyword("partition"), p, Keyword("check"), check,
                             Keyword("chunk"), chunk, Keyword("owner"), self.view.owns(p),
                             Keyword("missing"), quoted([hex_digest(d) for d in missing])])
