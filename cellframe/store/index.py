"""In-memory indexes in flat columns: no Python object per record.

Each partition keeps its records as *rows*, in sequence order, in parallel columns: sequence,
location, time (``array`` words) and the 16-byte content digest (one ``bytearray``). Finding
a row by digest is an open-addressing hash table of row numbers (``array("I")``, linear
probing, at most half full), keyed by the digest's first 8 bytes: a digest is a blake2b
hash, so its bits are already uniform, and the table's layout is the same in every process
(an index checkpoint stores it as it is). Each family keeps its row numbers sorted by (time,
first 8 digest bytes), so equal times order the same way on every replica, and ``select``
is one bisect (by time, through the time column).

A row costs about 52 bytes: 8 + 8 + 8 for the words, 16 for the digest, 4 in its family's
list and 8 on average in the hash table. The dict of digests and the per-family arrays of
times, ties and locations this replaces held about 150 bytes a record in objects (a bytes
object, an int and a dict slot for every digest), and the process peaked at 720 MB for a
million records.

*A location* is one int: ``file_id << 40 | offset``.

Mutation is by appending only: a change of anything already there (an insert in the middle
of a family's rows, the table growing, a compaction) puts a new array in place of the old
one. A checkpoint can then take a partition's arrays and their lengths under the lock, and
copy them out later without it: the prefix it took never changes (``checkpoint``).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from typing import Any

from .merkle import MerkleTree

__all__ = ["DIGEST_BYTES", "FamilyIndex", "PartitionState", "location", "split_location",
           "tie_key"]

_OFFSET_BITS = 40
DIGEST_BYTES = 16
_MIN_SLOTS = 8


def location(file_id: int, offset: int) -> int:
    """Pack a file id and an offset into one location int."""
    return (file_id << _OFFSET_BITS) | offset


def split_location(loc: int) -> tuple[int, int]:
    """(file id, offset) of a location."""
    return loc >> _OFFSET_BITS, loc & ((1 << _OFFSET_BITS) - 1)


def tie_key(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "big")


class PartitionState:
    """One partition: its rows, its digest table, its families, Merkle tree and compaction."""

    __slots__ = ("partition", "seqs", "locs", "times", "digests", "slots", "families", "tree",
                 "next_seq", "covers", "compacted_file", "pending")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.seqs = array("Q")
        self.locs = array("Q")
        self.times = array("q")
        self.digests = bytearray()
        self.slots = array("I", bytes(4 * _MIN_SLOTS))  # row + 1 per slot; 0 is empty
        self.families: dict[str, FamilyIndex] = {}
        self.tree = MerkleTree()
        self.next_seq = 1
        self.covers = 0
        self.compacted_file: int | None = None
        # digest -> (queued item, commit batch) of records written but not yet durable
        self.pending: dict[bytes, tuple[Any, Any]] = {}

    def __len__(self) -> int:
        return len(self.seqs)

    # -- rows by digest ---------------------------------------------------------------------

    def find(self, digest: bytes) -> int:
        """The row holding ``digest``, or -1."""
        slots, digests = self.slots, self.digests
        mask = len(slots) - 1
        i = int.from_bytes(digest[:8], "big") & mask
        while row := slots[i]:
            row -= 1
            if digests[row * DIGEST_BYTES:row * DIGEST_BYTES + DIGEST_BYTES] == digest:
                return row
            i = (i + 1) & mask
        return -1

    def __contains__(self, digest: bytes) -> bool:
        return self.find(digest) >= 0

    def digest(self, row: int) -> bytes:
        return bytes(self.digests[row * DIGEST_BYTES:(row + 1) * DIGEST_BYTES])

    def all_digests(self) -> Iterator[bytes]:
        view = bytes(self.digests)
        return (view[i:i + DIGEST_BYTES] for i in range(0, len(view), DIGEST_BYTES))

    def rebuild_slots(self) -> None:
        """A new table for the rows there are (at most half full)."""
        size = _MIN_SLOTS
        while size < 2 * len(self.seqs):
            size *= 2
        slots = array("I", bytes(4 * size))
        mask, digests = size - 1, bytes(self.digests)
        for row in range(len(self.seqs)):  # placed inline: once per record at a scan
            at = row * DIGEST_BYTES
            i = int.from_bytes(digests[at:at + 8], "big") & mask
            while slots[i]:
                i = (i + 1) & mask
            slots[i] = row + 1
        self.slots = slots

    # -- adding -----------------------------------------------------------------------------

    def add(self, seq: int, digest: bytes, loc: int, time: int, *, place: bool = True) -> int:
        """Account for a durable record (sequences arrive in increasing order); its row.

        ``place=False`` leaves the row out of the digest table, for a scan that adds every
        record first and then calls ``rebuild_slots`` once (each record placed once, not
        2.4 times on average as the table doubles).
        """
        row = len(self.seqs)
        self.seqs.append(seq)
        self.locs.append(loc)
        self.times.append(time)
        self.digests += digest
        if place:
            slots = self.slots
            mask = len(slots) - 1
            if 2 * (row + 1) > mask + 1:
                self.rebuild_slots()
            else:  # placed inline, from the digest at hand: once per record published
                i = int.from_bytes(digest[:8], "big") & mask
                while slots[i]:
                    i = (i + 1) & mask
                slots[i] = row + 1
        self.tree.add(digest)
        if seq >= self.next_seq:
            self.next_seq = seq + 1
        return row

    def family(self, name: str) -> FamilyIndex:
        """The family's index, made empty if the partition has none yet."""
        index = self.families.get(name)
        if index is None:
            index = self.families[name] = FamilyIndex(self)
        return index

    # -- reading ----------------------------------------------------------------------------

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

    # -- compaction -------------------------------------------------------------------------

    def replace_prefix(self, seq: int, kept: list[tuple[int, int]]) -> list[str]:
        """After compaction up to ``seq``: of the rows with sequence <= ``seq``, only the
        ``kept`` ones, as (row, new location), in row order. Returns the families that lost
        every version (they are gone from the partition)."""
        cut = bisect_right(self.seqs, seq)
        remap = array("q", [-1]) * len(self.seqs)
        seqs, locs, times, digests = array("Q"), array("Q"), array("q"), bytearray()
        for new, (row, loc) in enumerate(kept):
            remap[row] = new
            seqs.append(self.seqs[row])
            locs.append(loc)
            times.append(self.times[row])
            digests += self.digests[row * DIGEST_BYTES:(row + 1) * DIGEST_BYTES]
        shift = len(kept) - cut
        for row in range(cut, len(self.seqs)):
            remap[row] = row + shift
        self.seqs = seqs + self.seqs[cut:]
        self.locs = locs + self.locs[cut:]
        self.times = times + self.times[cut:]
        self.digests = digests + self.digests[cut * DIGEST_BYTES:]
        self.rebuild_slots()
        self.tree = MerkleTree.build(self.all_digests())
        self.covers = max(self.covers, seq)
        gone = []
        for name, index in list(self.families.items()):
            index.rows = array("I", [remap[r] for r in index.rows if remap[r] >= 0])
            if not index.rows:
                del self.families[name]
                gone.append(name)
        return gone


class FamilyIndex:
    """The versions of one family: its partition's row numbers, sorted by (time, digest
    prefix)."""

    __slots__ = ("part", "rows")

    def __init__(self, part: PartitionState) -> None:
        self.part = part
        self.rows = array("I")

    @property
    def partition(self) -> int:
        return self.part.partition

    def __len__(self) -> int:
        return len(self.rows)

    def _key(self, row: int) -> tuple[int, int]:
        part = self.part
        at = row * DIGEST_BYTES
        return part.times[row], int.from_bytes(part.digests[at:at + 8], "big")

    def add(self, row: int, time: int, digest: bytes) -> None:
        """Insert a version; appending (the usual case, times rising) is O(1), anything
        else puts a new array in place (see the module docstring)."""
        rows = self.rows
        if rows:
            last = rows[-1]
            times = self.part.times
            if times[last] > time or (times[last] == time and self._key(last)[1] >
                                      int.from_bytes(digest[:8], "big")):
                key = (time, int.from_bytes(digest[:8], "big"))
                i = bisect_right(rows, key, key=self._key)
                self.rows = rows[:i] + array("I", [row]) + rows[i:]
                return
        rows.append(row)

    def newest(self) -> int | None:
        return self.part.locs[self.rows[-1]] if self.rows else None

    def versions(self) -> _Versions:
        """The versions as a sorted sequence of (time, tie), without copying them."""
        return _Versions(self)

    def as_of(self, time: int) -> int | None:
        """Location of the newest version with time <= ``time``."""
        i = bisect_right(self.rows, time, key=self.part.times.__getitem__)
        return self.part.locs[self.rows[i - 1]] if i else None

    def between(self, since: int | None, until: int | None) -> list[int]:
        """Locations of the versions with since <= time <= until, oldest first."""
        times = self.part.times.__getitem__
        rows = self.rows
        lo = 0 if since is None else bisect_left(rows, since, key=times)
        hi = len(rows) if until is None else bisect_right(rows, until, key=times)
        locs = self.part.locs
        return [locs[row] for row in rows[lo:hi]]


class _Versions:
    """A read-only view of a family's (time, tie) pairs that ``bisect`` can search."""

    __slots__ = ("index",)

    def __init__(self, index: FamilyIndex) -> None:
        self.index = index

    def __len__(self) -> int:
        return len(self.index.rows)

    def __getitem__(self, i: int) -> tuple[int, int]:
        return self.index._key(self.index.rows[i])
