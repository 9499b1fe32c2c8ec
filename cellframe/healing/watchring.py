"""The watch ring: who heartbeats to whom when membership's cost must be flat in n.

Every node is placed on a ring by a hash of its name. A node is *watched* by the ``k`` nodes
that follow it on the ring, so it *watches* the ``k`` nodes before it: it binds only their
``heartbeat.<node>`` keys and runs a detector only for them. Each node then receives ``k``
heartbeats an interval whatever ``n`` is (Akka watches with 9, Orleans with 10), and every
node is watched by exactly ``k`` others, however the hashes fall. A join or a death changes
the watch sets of about ``2k`` nodes only.

Pure functions of names: every node computes the same ring from the same view, and a
simulator can run them as they are.
"""

from __future__ import annotations

import hashlib
import heapq
from bisect import bisect_left
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["LiveRing", "ring_order", "watched_by", "watchers_of"]


@lru_cache(maxsize=65536)
def _position(name: str) -> tuple[int, str]:
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big"), name


def ring_order(members: Iterable[str]) -> list[str]:
    """The members in ring order (by the hash of the name, then the name)."""
    return sorted(set(members), key=_position)


def watched_by(me: str, members: Iterable[str], k: int) -> list[str]:
    """The members ``me`` watches: the ``k`` before it on the ring of ``members`` and ``me``,
    nearest first. A pass with a heap of ``k``, not a sort of the ring: every node
    recomputes this after each change it hears (n nodes each, so a sort was n**2 log n
    a change across a simulation)."""
    mine = _position(me)
    others = {_position(m) for m in members if m != me}
    count = min(k, len(others))
    if count <= 0:
        return []
    nearest = heapq.nlargest(count, (p for p in others if p < mine))
    if len(nearest) < count:  # past the start of the ring: go on from its end
        nearest += heapq.nlargest(count - len(nearest), (p for p in others if p > mine))
    return [name for _, name in nearest]


def watchers_of(node: str, members: Iterable[str], k: int) -> list[str]:
    """The members that watch ``node``: the ``k`` after it on the ring, nearest first."""
    mine = _position(node)
    others = {_position(m) for m in members if m != node}
    count = min(k, len(others))
    if count <= 0:
        return []
    nearest = heapq.nsmallest(count, (p for p in others if p > mine))
    if len(nearest) < count:  # past the end of the ring: go on from its start
        nearest += heapq.nsmallest(count - len(nearest), (p for p in others if p < mine))
    return [name for _, name in nearest]


class LiveRing:
    """The ring of the live members as one node sees it, kept sorted as members come and
    go, so that ``watched_by`` costs O(k + log n) after each change instead of a pass over
    the view: with 10,000 simulated nodes each recomputing its ring after every change it
    heard, those passes were about 100 s of CPU per crash (docs/scale.md)."""

    __slots__ = ("_positions",)

    def __init__(self, members: Iterable[str] = ()) -> None:
        self._positions = sorted({_position(m) for m in members})

    def __len__(self) -> int:
        return len(self._positions)

    def add(self, name: str) -> None:
        position = _position(name)
        index = bisect_left(self._positions, position)
        if index == len(self._positions) or self._positions[index] != position:
            self._positions.insert(index, position)

    def discard(self, name: str) -> None:
        position = _position(name)
        index = bisect_left(self._positions, position)
        if index < len(self._positions) and self._positions[index] == position:
            del self._positions[index]

    def watched_by(self, me: str, k: int) -> list[str]:
        """What ``watched_by(me, members, k)`` gives for the members in this ring."""
        positions, mine = self._positions, _position(me)
        index = bisect_left(positions, mine)
        present = index < len(positions) and positions[index] == mine
        count = min(k, len(positions) - present)
        found: list[str] = []
        step = index - 1
        while len(found) < count:  # backwards from me, past the start to the end of the ring
            position = positions[step % len(positions)]
            if position != mine:
                found.append(position[1])
            step -= 1
        return found
