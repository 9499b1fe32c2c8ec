"""Compaction: which records a retention rule keeps, and the crash-safe order of its steps.

A compaction of partition ``p`` snapshots the partition's last sequence ``S``, copies the
records (sequence <= S) that the rule keeps into a new compacted file, and installs that
file; records appended meanwhile have sequences > S and stay where they are, in the shared
log, so there is no delta to copy. The steps, and what a crash after each leaves::

    snapshot   nothing on disk changed
    written    part-P-ID.tmp exists, incomplete     -> deleted on open
    synced     part-P-ID.tmp complete               -> deleted on open
    renamed    part-P-ID.seg (maybe not yet durable) -> newest compacted file of P wins
    committed  the rename is durable                 -> new file used, old one deleted on open
    installed  indexes switched in memory            -> same
    cleaned    old compacted file and dead log segments deleted

At every point the old files are intact until the new one is durable, so a crash leaves
either the old or the new content, never a mix; compaction is simply started again.
Extra disk: the new file holds only the kept records.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .index import tie_key

if TYPE_CHECKING:
    from .records import Record

__all__ = ["CompactionResult", "Retention", "STEPS", "Versions", "choose_kept", "fault_point",
           "kept_entries", "obsolete"]

_MAX_TIE = (1 << 64) - 1
STEPS = ("snapshot", "written", "synced", "renamed", "committed", "installed", "cleaned")


def fault_point(step: str) -> None:
    """Called after each step; tests replace it to simulate a crash at that step."""


@dataclass(frozen=True, slots=True)
class Retention:
    """What to keep; a record is kept when any rule keeps it.

    ``newest``: the N newest versions of every family. ``since`` (int microseconds): every
    version with time >= since, plus the version that was current at ``since``, so
    ``select(family, at=t)`` is unchanged for every t >= since.
    """

    newest: int = 0
    since: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.newest, int) or self.newest < 0:
            raise ValueError(f"newest must be a non-negative int, got {self.newest!r}")
        if self.since is not None and (not isinstance(self.since, int)
                                       or isinstance(self.since, bool)):
            raise TypeError(f"since must be int microseconds, got {self.since!r}")
        if self.newest == 0 and self.since is None:
            raise ValueError("a Retention needs a rule: newest=N and/or since=time")

    def keeps(self, newer: int, newer_by_since: int) -> bool:
        """Does this rule keep a version with ``newer`` versions of its family above it, of
        which ``newer_by_since`` have a time at or before ``since``?

        The rule of ``choose_kept`` for one version: kept by ``newest`` while fewer than N
        versions are newer; kept by ``since`` unless a newer version was current at
        ``since`` (then that one is the version ``select(at=since)`` answers).
        """
        if self.newest and newer < self.newest:
            return True
        return self.since is not None and newer_by_since == 0


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """What one compaction did."""

    partition: int
    covers: int
    kept: int
    dropped: int
    bytes_written: int
    segments_deleted: int


def choose_kept(versions: list[tuple[int, int]], keep: Retention) -> list[int]:
    """Indices of the kept versions of one family; ``versions`` is (time, tie) sorted."""
    n = len(versions)
    chosen = set(range(max(0, n - keep.newest), n)) if keep.newest else set()
    if keep.since is not None:
        at_or_before = bisect_right(versions, (keep.since, _MAX_TIE))
        chosen.update(range(max(0, at_or_before - 1), n))
    return sorted(chosen)


class Versions(Protocol):
    """A family's versions, (time, tie) sorted: what ``bisect`` needs of them."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int, /) -> tuple[int, int]: ...


def obsolete(candidates: Sequence[tuple[int, int]], held: Versions,
             keep: Retention) -> list[bool]:
    """Which ``candidates`` the next compaction would drop, were they added to ``held``.

    Both are a family's versions as (time, tie), sorted; the candidates are new (none is in
    ``held``), so a candidate's newer versions are those of ``held`` above it plus the
    candidates above it: exactly what ``choose_kept`` would count over the union. This is
    what a replica asks before applying a record a peer sent (``Store.retained``): a record
    its retention has dropped, or would drop, does not come back. ``held`` only needs
    ``len`` and indexing (bisect, no copy: a family may hold many versions).
    """
    cut = None if keep.since is None else (keep.since, _MAX_TIE)
    held_cut = 0 if cut is None else bisect_right(held, cut)
    mine_cut = 0 if cut is None else bisect_right(candidates, cut)
    out = []
    for i, version in enumerate(candidates):
        below = bisect_right(held, version)
        newer = len(held) - below + len(candidates) - i - 1
        by_since = max(0, held_cut - below) + max(0, mine_cut - i - 1)
        out.append(not keep.keeps(newer, by_since))
    return out


def kept_entries(snapshot: list[tuple[int, int, Record]], keep: Retention,
                 ) -> list[tuple[int, int, Record]]:
    """The entries of a partition's snapshot, (sequence, location, record) in sequence
    order, that ``keep`` retains."""
    by_family: dict[str, list[tuple[int, int, int]]] = {}
    for i, (_, _, record) in enumerate(snapshot):
        by_family.setdefault(record.family, []).append(
            (record.time, tie_key(record.digest), i))
    chosen: list[int] = []
    for versions in by_family.values():
        versions.sort()
        picks = choose_kept([(t, tie) for t, tie, _ in versions], keep)
        chosen.extend(versions[j][2] for j in picks)
    return [snapshot[i] for i in sorted(chosen)]
