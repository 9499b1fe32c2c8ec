"""In-memory indexes: per family, versions by time; per partition, records by sequence.

A *location* is one int: ``file_id << 40 | offset``. Versions of a family are kept sorted by
(time, first 8 digest bytes) in parallel ``array`` columns, so ``select`` is one bisect and
equal times order the same way on every replica. Arrays instead of lists of tuples: 24 bytes
per version instead of about 120, which is what lets a million records fit comfortably.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from typing import Any

from .merkle import MerkleTree

__all__ = ["FamilyIndex", "PartitionState", "location", "split_location", "tie_key"]

_OFFSET_BITS = 40


def location(file_id: int, offset: int) -> int:
    """Pack a file id and an offset into one location int."""
    return (file_id << _OFFSET_BITS) | offset


def split_location(loc: int) -> tuple[int, int]:
    """(file id, offset) of a location."""
    return loc >> _OFFSET_BITS, loc & ((1 << _OFFSET_BITS) - 1)


def tie_key(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "big")


class FamilyIndex:
    """The versions of one family, sorted by (time, digest prefix)."""

    __slots__ = ("partition", "times", "ties", "locs")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.times = array("q")
        self.ties = array("Q")
        self.locs = array("Q")

    def __len__(self) -> int:
        return len(self.times)

    def add(self, time: int, digest: bytes, loc: int) -> None:
        """Insert a version; appending (the usual case, times rising) is O(1)."""
        tie = int.from_bytes(digest[:8], "big")  # tie_key, inlined: once per record stored
        times = self.times
        if times and (times[-1] > time or (times[-1] == time and self.ties[-1] > tie)):
            i = bisect_right(times, time)
            while i > 0 and times[i - 1] == time and self.ties[i - 1] > tie:
                i -= 1
            times.insert(i, time)
            self.ties.insert(i, tie)
            self.locs.insert(i, loc)
        else:
            times.append(time)
            self.ties.append(tie)
            self.locs.append(loc)

    def newest(self) -> int | None:
        return self.locs[-1] if self.locs else None

    def versions(self) -> _Versions:
        """The versions as a sorted sequence of (time, tie), without copying them."""
        return _Versions(self.times, self.ties)

    def as_of(self, time: int) -> int | None:
        """Location of the newest version with time <= ``time``."""
        i = bisect_right(self.times, time)
        return self.locs[i - 1] if i else None

    def between(self, since: int | None, until: int | None) -> list[int]:
        """Locations of the versions with since <= time <= until, oldest first."""
        lo = 0 if since is None else bisect_left(self.times, since)
        hi = len(self.times) if until is None else bisect_right(self.times, until)
        return list(self.locs[lo:hi])

    def relocate(self, moved: dict[int, int], dropped: set[int]) -> None:
        """Apply compaction: rewrite moved locations, remove dropped ones."""
        keep = [i for i, loc in enumerate(self.locs) if loc not in dropped]
        self.times = array("q", (self.times[i] for i in keep))
        self.ties = array("Q", (self.ties[i] for i in keep))
        self.locs = array("Q", (moved.get(self.locs[i], self.locs[i]) for i in keep))


class _Versions:
    """A read-only view of a family's (time, tie) pairs that ``bisect`` can search."""

    __slots__ = ("times", "ties")

    def __init__(self, times: array[int], ties: array[int]) -> None:
        self.times, self.ties = times, ties

    def __len__(self) -> int:
        return len(self.times)

    def __getitem__(self, i: int) -> tuple[int, int]:
        return self.times[i], self.ties[i]


class PartitionState:
    """One partition: its records by digest and by sequence, its Merkle tree, its compaction."""

    __slots__ = ("partition", "digests", "seqs", "locs", "tree", "next_seq", "covers",
                 "compacted_file", "pending")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.digests: dict[bytes, int] = {}
        self.seqs = array("Q")
        self.locs = array("Q")
        self.tree = MerkleTree()
        self.next_seq = 1
        self.covers = 0
        self.compacted_file: int | None = None
        # digest -> (receipt, commit batch) of records written but not yet durable
        self.pending: dict[bytes, tuple[Any, Any]] = {}

    def add(self, seq: int, digest: bytes, loc: int) -> None:
        """Account for a durable record (sequences arrive in increasing order)."""
        self.digests[digest] = loc
        self.seqs.append(seq)
        self.locs.append(loc)
        self.tree.add(digest)
        if seq >= self.next_seq:
            self.next_seq = seq + 1

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    def since(self, position: int, limit: int) -> list[int]:
        """Locations of up to ``limit`` records with sequence > ``position``, in order."""
        i = bisect_right(self.seqs, position)
        return list(self.locs[i:i + limit])

    def upto(self, seq: int) -> list[tuple[int, int]]:
        """(sequence, location) of every record with sequence <= ``seq``."""
        i = bisect_right(self.seqs, seq)
        return list(zip(self.seqs[:i], self.locs[:i], strict=True))

    def replace_prefix(self, seq: int, kept: Iterable[tuple[int, bytes, int]],
                       dropped: Iterable[bytes]) -> None:
        """After compaction up to ``seq``: the kept (sequence, digest, new location) only."""
        i = bisect_right(self.seqs, seq)
        kept = list(kept)
        self.seqs = array("Q", [s for s, _, _ in kept]) + self.seqs[i:]
        self.locs = array("Q", [loc for _, _, loc in kept]) + self.locs[i:]
        for digest in dropped:
            del self.digests[digest]
        for _, digest, loc in kept:
            self.digests[digest] = loc
        self.tree = MerkleTree.build(self.digests)
        self.covers = max(self.covers, seq)
