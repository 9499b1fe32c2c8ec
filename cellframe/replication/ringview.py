"""One shard cell's view of the ring: the current table, the moves in progress, and who to ask.

Ring membership is the set of live shard ids. When it changes, the cell rebalances its
current table (``Ring.rebalanced``: a pure function of the table and the member list, so
cells that hold the same table and see the same members compute the same successor). Cells
that reached the same member set by different paths can hold different tables; each hello
carries the sender's ring version and digest, and a cell adopts a peer's table when it has
the same members and a larger ``(version, digest)``: every cell converges on the same one.

A change moves data (``plan_transfer``). While a partition moves, its old owners stay in its
*replica set*, so writes still reach them and reads still ask them. The move is over when no
owner of the partition says it is still receiving it (every hello lists the partitions its
sender is receiving) and ``settle_after`` seconds have passed: state that is announced again
and again, rather than a one-off "ready" message that a cell whose table moved by another
path would never expect.

A table a cell built *alone* (it heard no peer before ``ring_wait``: a cold start of one
node, or a joiner on a starved machine whose peers answered late) is only a stand-in until the
cell takes a write under it: it yields to a peer's table of two members or more, whatever
they are, and the cell takes that one as its first (the cell clears ``alone`` once it
coordinates a write; records from peers do not clear it). Meanwhile the cell hands what it
is asked to a peer it has heard, and its own answers to a peer's read are never taken as
complete (``replication.coordinate``). Rebalanced instead, it grew a version with each peer heard one by one,
outranked the cluster's table, and every cell moved its data to a layout derived from a table
that held nothing. A peer's table of one member (another node that built alone, or a
one-node cluster) is met as before: both rebalance and the larger table wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..store import Ring, Transfer, plan_transfer

__all__ = ["RingView"]

Live = Callable[[int], bool]


class RingView:
    """The ring table as this cell knows it, plus the partitions on the move (pure)."""

    def __init__(self, me: int, *, partitions: int, replicas: int) -> None:
        self.me = me
        self.partitions = partitions
        self.replicas = replicas
        self.ring: Ring | None = None
        self.digest = ""
        self.previous: dict[int, tuple[int, ...]] = {}  # partition -> owners before the move
        self.moved_at: dict[int, float] = {}
        self.alone = False  # the table was built by this cell alone: it yields to a peer's
        self._mine: list[int] = []

    # -- changing the table -----------------------------------------------------------------

    def successor(self, members: Iterable[int]) -> Ring:
        """The table for ``members``: rebalanced from the current one, or built fresh."""
        members = sorted(set(members))
        if self.ring is None:
            return Ring.build(members, partitions=self.partitions, replicas=self.replicas)
        return self.ring.rebalanced(members)

    def install(self, new: Ring, now: float = 0.0, *, alone: bool = False,
                afresh: bool = False) -> list[Transfer]:
        """Make ``new`` current; return the transfers of the move (none for a first table).

        ``alone``: this cell built ``new`` without hearing any peer (see the module);
        ``afresh``: ``new`` replaces such a table and counts as the first."""
        old = None if afresh else self.ring
        self.ring, self.alone = new, alone
        self.digest = new.digest()  # 1.5 ms for 1,024 partitions: hellos carry it often
        self._mine = new.partitions_of(self.me)
        if old is None or old.partitions != new.partitions:
            self.previous.clear()
            self.moved_at.clear()
            return []
        plan = plan_transfer(old, new)
        for t in plan:
            self.previous.setdefault(t.partition, old.owners(t.partition))
            self.moved_at[t.partition] = now
        return plan

    def settle(self, now: float, receiving: Callable[[int], bool], after: float) -> None:
        """End the moves that are over: no owner receives the partition any more."""
        for p in [p for p, t in self.moved_at.items() if now - t >= after]:
            if not receiving(p):
                del self.moved_at[p]
                self.previous.pop(p, None)

    def should_adopt(self, version: int, digest: str, members: Iterable[int]) -> bool:
        """Is a peer's table (same members, larger version and digest) the one to converge on?
        Any peer's table is while this cell has none, and any of two members or more while
        it has only one it built alone."""
        ring = self.ring
        if ring is None:
            return True
        if self.alone and len(set(members)) > 1:
            return True
        return (tuple(sorted(members)) == ring.members
                and (version, digest) > (ring.version, self.digest))

    # -- asking it --------------------------------------------------------------------------

    def owners(self, partition: int) -> tuple[int, ...]:
        return () if self.ring is None else self.ring.owners(partition)

    def replica_set(self, partition: int, live: Live) -> list[int]:
        """The live shards that hold or are receiving ``partition``: owners, then old owners."""
        seen: list[int] = []
        for shard in (*self.owners(partition), *self.previous.get(partition, ())):
            if shard not in seen and live(shard):
                seen.append(shard)
        return seen

    def coordinator(self, partition: int, live: Live) -> int | None:
        """The first live owner of ``partition`` (its primary unless that one is down)."""
        replicas = self.replica_set(partition, live)
        return replicas[0] if replicas else None

    def mine(self) -> list[int]:
        """The partitions this cell owns."""
        return self._mine

    def owns(self, partition: int) -> bool:
        return self.me in self.owners(partition)

    def summary(self) -> dict[str, object]:
        ring = self.ring
        if ring is None:
            return {"version": None, "members": [], "moving": 0}
        return {"version": ring.version, "members": list(ring.members),
                "digest": self.digest, "moving": len(self.moved_at)}
