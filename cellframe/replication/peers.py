"""Which shard cells are alive, as one shard cell sees them.

A shard cell learns its peers from their ``(shard-hello ...)`` announcements (each carries the
node, the cell to address, the shard id and the node's incarnation) and forgets them when the
membership cell declares their node down or gone (``member-down`` / ``member-leave``, the
failure detector's verdict), when a message to their cell comes back unroutable (their queue
is gone: the broker's own evidence), when they say ``(shard-leave)``, or after a long silence.
Like the proxy's pool, news about a node life already declared over is ignored, so a late
hello cannot resurrect a dead node; a restarted node comes back with a larger incarnation.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Peer", "ShardPeers"]


@dataclass(slots=True)
class Peer:
    """One live shard cell: where it runs, where to send to it, and its shard id."""

    node: str
    cell: str
    shard: int
    incarnation: int
    last_seen: float


class ShardPeers:
    """The live shard cells other than this one, by shard id (pure: no clock, no I/O)."""

    def __init__(self, me: int) -> None:
        self.me = me
        self.by_shard: dict[int, Peer] = {}
        self.gone: dict[str, int] = {}  # node -> newest incarnation declared down or gone
        self.conflicts: set[str] = set()  # nodes that announced a shard id already taken

    def hear(self, node: str, cell: str, shard: int, incarnation: int, now: float) -> bool:
        """Account for a hello; True if the peer is new (or a new life of a known one)."""
        if self.gone.get(node, -1) >= incarnation:
            return False
        if shard == self.me or self._taken_by_other(shard, node):
            self.conflicts.add(node)
            return False
        known = self.by_shard.get(shard)
        if known is not None and known.incarnation > incarnation:
            return False
        for other in [p for p in self.by_shard.values() if p.node == node and p.shard != shard]:
            del self.by_shard[other.shard]  # the node took another shard id: forget the old one
        self.by_shard[shard] = Peer(node, cell, shard, incarnation, now)
        return known is None or known.incarnation != incarnation or known.cell != cell

    def _taken_by_other(self, shard: int, node: str) -> bool:
        known = self.by_shard.get(shard)
        return known is not None and known.node != node

    def down(self, node: str, incarnation: int | None = None) -> list[int]:
        """Forget ``node`` (up to ``incarnation``; None: whatever life); return its shard ids."""
        if incarnation is not None:
            self.gone[node] = max(self.gone.get(node, -1), incarnation)
        lost = [p.shard for p in self.by_shard.values()
                if p.node == node and (incarnation is None or p.incarnation <= incarnation)]
        for shard in lost:
            del self.by_shard[shard]
        return lost

    def unreachable(self, shard: int) -> bool:
        """The broker could not route to ``shard``'s cell: forget it until it says hello again."""
        return self.by_shard.pop(shard, None) is not None

    def expire(self, now: float, timeout: float) -> list[int]:
        """Forget peers silent for longer than ``timeout``; return their shard ids."""
        silent = [s for s, p in self.by_shard.items() if now - p.last_seen > timeout]
        for shard in silent:
            del self.by_shard[shard]
        return silent

    def live(self, shard: int) -> bool:
        return shard == self.me or shard in self.by_shard

    def shards(self) -> set[int]:
        """Every live shard id, this cell's included."""
        return {self.me, *self.by_shard}

    def cell_of(self, shard: int) -> str | None:
        peer = self.by_shard.get(shard)
        return None if peer is None else peer.cell
