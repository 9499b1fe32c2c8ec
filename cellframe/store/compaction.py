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
from dataclasses import dataclass

__all__ = ["CompactionResult", "Retention", "STEPS", "choose_kept", "fault_point"]

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
