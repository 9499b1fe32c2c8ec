"""Quorum bookkeeping of a coordinating shard cell: writes waiting for W copies, reads for R.

Nothing here waits: a write or read is an entry that acknowledgements and answers update as
their messages arrive, and the cell's tick expires the ones past their deadline. Reads merge
what the replicas answered and say which replica lacks which record (read repair).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..store import Record
from ..store.index import tie_key

__all__ = ["PendingRead", "PendingWrite", "merge", "newest", "repairs"]

NEWEST, AS_OF, HISTORY = "newest", "as-of", "history"


@dataclass(slots=True)
class PendingWrite:
    """An insert this cell coordinates: acknowledged to the client once ``needed`` shards
    hold it durably."""

    family: str
    guid: int
    time: int
    partition: int
    needed: int
    deadline: float
    reply_to: str | None
    request: str | None = None  # the client's message id, echoed in the call-back
    durable: set[int] = field(default_factory=set)
    answered: bool = False
    #: Further (reply address, request) pairs: the same content inserted again meanwhile.
    others: list[tuple[str | None, str | None]] = field(default_factory=list)

    def callers(self) -> list[tuple[str | None, str | None]]:
        return [(self.reply_to, self.request), *self.others]

    def acknowledge(self, shard: int) -> bool:
        """Count ``shard``'s durable copy; True the moment the quorum is reached."""
        if self.answered:
            return False
        self.durable.add(shard)
        if len(self.durable) >= self.needed:
            self.answered = True
            return True
        return False


@dataclass(slots=True)
class PendingRead:
    """A select this cell coordinates: answered once ``needed`` replicas answered, one of them
    holding the partition completely (not still receiving it)."""

    id: str
    family: str
    mode: str
    partition: int
    asked: set[int]
    needed: int
    deadline: float
    reply_to: str | None
    request: str | None = None
    at: int | None = None
    answers: dict[int, list[Record]] = field(default_factory=dict)
    complete: bool = False
    answered: bool = False

    def answer(self, shard: int, records: list[Record], complete: bool) -> None:
        if shard in self.asked and shard not in self.answers:
            self.answers[shard] = records
            self.complete = self.complete or complete

    @property
    def ready(self) -> bool:
        """Enough answers to reply (or every asked replica has answered)."""
        if len(self.answers) >= len(self.asked):
            return True
        return len(self.answers) >= self.needed and self.complete

    @property
    def finished(self) -> bool:
        """Every asked replica answered: time to repair the stale ones and forget the read."""
        return len(self.answers) >= len(self.asked)


def _order(record: Record) -> tuple[int, int]:
    return record.time, tie_key(record.digest)


def newest(records: Iterable[Record]) -> Record | None:
    """The latest version among ``records`` (time, then the digest order every replica uses)."""
    return max(records, key=_order, default=None)


def merge(mode: str, answers: Iterable[list[Record]]) -> list[Record]:
    """What the read returns: the newest answer (newest, as-of) or the union (history)."""
    union: dict[bytes, Record] = {}
    for records in answers:
        for record in records:
            union.setdefault(record.digest, record)
    if mode == HISTORY:
        return sorted(union.values(), key=_order)
    best = newest(union.values())
    return [] if best is None else [best]


def repairs(answers: dict[int, list[Record]], result: list[Record]) -> dict[int, list[Record]]:
    """Per replica, the records of ``result`` it did not answer with: what it lacks.

    For newest and as-of reads a replica that answered an older version (or none) lacks the
    winner: had it held it, its own newest would have been at least as new.
    """
    out: dict[int, list[Record]] = {}
    for shard, records in answers.items():
        have = {r.digest for r in records}
        missing = [r for r in result if r.digest not in have]
        if missing:
            out[shard] = missing
    return out
