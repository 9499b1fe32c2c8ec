"""The claim algorithm: rebalance a partition table for a new membership, moving little.

Input: the current table (partition -> preference list) and the sorted member list. Output:
a table where every member holds between the floor and the ceiling of its fair share, both
of primaries and of replica slots, reached with few changes:

1. departed members are dropped; a partition that lost its primary promotes the surviving
   replica with the fewest primaries (promotion moves no data);
2. empty slots go to the least loaded members;
3. members below their share take slots from members above it; a taker that also lacks
   primaries takes primary slots first, so one move fixes both counts;
4. primary counts are evened out by promotions along shortest paths (no data moves).

Replica *diversity* is a goal too: a slot goes preferably where its new co-owners share few
partitions with the taker. Without it, a shard built up by joins kept 165 of its 204 replica
slots on two peers, so when it left those two took nearly all of its primaries and the
rebalance needed 1.75x the minimum promotions; with it, 1.1x.

Shares are kept within [floor, ceiling] of the mean rather than naming the members that get
the remainder up front: fixed remainders forced chains of extra moves.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter, deque
from collections.abc import Callable

__all__ = ["PRIMARY_SLACK_ABOVE", "PRIMARY_SLACK_BELOW", "claim"]

_Pred = Callable[[int], bool]

#: How far (as fractions of the mean) a member's primary count may stray before promotions
#: even it out. Joining members still take exactly their fair share; the slack only spares
#: promotions when a member leaves. Exact balance cost up to 2x the minimum primary changes
#: on a leave, because a departed shard's replicas cannot all absorb its primaries evenly.
PRIMARY_SLACK_ABOVE = 0.1
PRIMARY_SLACK_BELOW = 0.2


def claim(rows: list[list[int]], members: list[int], replicas: int) -> list[list[int]]:
    """Rebalance ``rows`` (modified in place and returned) for sorted ``members``."""
    work = _Claim(rows, members, replicas)
    work.drop_departed()
    work.fill_holes()
    work.move_slots()
    work.balance_primaries()
    return work.rows


def _bounds(total: int, count: int) -> tuple[int, int]:
    """The fair range for one member's share of ``total``: floor and ceiling of the mean."""
    return total // count, -(-total // count)


def _band(total: int, count: int) -> tuple[int, int]:
    """The primary counts tolerated before promotions even them out (see the tolerances)."""
    lo, hi = _bounds(total, count)
    mean = total / count
    below, above = int(mean * (1 - PRIMARY_SLACK_BELOW)), int(mean * (1 + PRIMARY_SLACK_ABOVE))
    return min(lo, below), max(hi, above)


def _outside_and_unled(row: list[int], head: int | None,
                       lead: Counter[tuple[int, int]]) -> _Pred:
    """A predicate: a member not in ``row`` whom ``head`` never led."""
    return lambda s: s not in row and (head is None or not lead.get((head, s)))


def _stable_offset(shard: int, size: int) -> int:
    # Knuth's multiplicative hash: spreads where each taker starts scanning, so that
    # takers do not all pile onto the low partitions. Deterministic on every node.
    return (shard * 2654435761) % size


class _ByLoad:
    """The members in (load, id) order, kept as loads rise by one. A fresh build's fill
    looked at every member for every slot (16,384 partitions x 3 slots x 4,000 members: 37 s
    of its 39 s), where the member it wants is nearly always among the first few here."""

    def __init__(self, members: list[int], loads: Counter[int]) -> None:
        self.loads = {s: loads.get(s, 0) for s in members}
        self.buckets: dict[int, list[int]] = {}
        for s in members:  # sorted, so every bucket is sorted
            self.buckets.setdefault(self.loads[s], []).append(s)

    def first(self, below: int, accept: _Pred) -> int | None:
        """The first member in (load, id) order with a load under ``below`` that ``accept``s."""
        for load in sorted(load for load in self.buckets if load < below):
            for s in self.buckets[load]:
                if accept(s):
                    return s
        return None

    def bump(self, s: int) -> None:
        """One slot more for ``s``."""
        load = self.loads[s]
        bucket = self.buckets[load]
        del bucket[bisect_left(bucket, s)]
        if not bucket:
            del self.buckets[load]
        self.loads[s] = load + 1
        insort(self.buckets.setdefault(load + 1, []), s)


class _Claim:
    """The working state: the table plus its load and co-ownership counters."""

    def __init__(self, rows: list[list[int]], members: list[int], replicas: int) -> None:
        self.rows = rows
        self.members = members
        self.member_set = set(members)
        self.width = min(replicas, len(members))
        present = {s for row in rows for s in row}
        self.joined = {s for s in members if s not in present}
        size = len(rows)
        self.lo, self.hi = _bounds(size * self.width, len(members))
        self.plo, self.phi = _bounds(size, len(members))
        self.pmin, self.pmax = _band(size, len(members))
        self.slots: Counter[int] = Counter()
        self.prims: Counter[int] = Counter()
        self.lead: Counter[tuple[int, int]] = Counter()
        # partition numbers in order, per replica (not primary) shard; kept by _promote,
        # dropped by any other change (see _replicas_index)
        self._replica_of: dict[int, list[int]] | None = None

    def recount(self) -> None:
        self.slots = Counter(s for row in self.rows for s in row)
        self.prims = Counter(row[0] for row in self.rows if row)
        self.lead = Counter((row[0], r) for row in self.rows for r in row[1:])

    def affinity(self, shard: int, row: list[int], pos: int) -> int:
        """How often ``shard`` at ``pos`` of ``row`` would already pair with the same peer.

        Counted as (primary, replica) pairs: what matters when a primary leaves is that its
        partitions' replicas are spread, so that their promotions spread too.
        """
        if pos == 0:
            return max((self.lead[(shard, r)] for r in row[1:]), default=0)
        return self.lead[(row[0], shard)] if row else 0

    def drop_departed(self) -> None:
        """Remove departed shards; an orphaned partition promotes its least busy replica."""
        orphans = []
        for p, row in enumerate(self.rows):
            kept = [s for s in row if s in self.member_set][: self.width]
            if row and row[0] not in self.member_set and kept:
                orphans.append(p)
            self.rows[p] = kept
        self.recount()
        for p in orphans:
            self.prims[self.rows[p][0]] -= 1
        for p in orphans:
            row = self.rows[p]
            best = min(row, key=lambda s: (self.prims[s], s))
            self._unlead(row)
            row.remove(best)
            row.insert(0, best)
            self._relead(row)
            self.prims[best] += 1
        # Re-choosing among the orphans' replicas is free (their primary changes anyway),
        # so even out there before promotions elsewhere are paid for.
        allowed = set(orphans)
        for s in self.members:
            while self.prims[s] > self.phi and self._shift_from(s, self.phi, allowed):
                pass

    def fill_holes(self) -> None:
        """Give every partition ``width`` owners: least loaded, then least co-owning, first."""
        slots, lead, hi = self.slots, self.lead, self.hi
        order = _ByLoad(self.members, slots)
        for row in self.rows:
            while len(row) < self.width:
                head = row[0] if row else None
                # The first member in (load, id) order that is free of this row and never led
                # by its head is the best (a key of (False, 0, load, id)); a full scan only
                # when there is none below the ceiling.
                best = order.first(hi, _outside_and_unled(row, head, lead))
                if best is None:
                    best = self._best_by_scan(row, head)
                row.append(best)
                order.bump(best)
                slots[best] += 1
                if head is None:
                    self.prims[best] += 1
                else:
                    lead[(head, best)] += 1

    def _best_by_scan(self, row: list[int], head: int | None) -> int:
        """The member for a slot of ``row``: below the ceiling, least co-owning with
        ``head``, least loaded, lowest id, in that order; every member looked at."""
        slots, lead, hi = self.slots, self.lead, self.hi
        best, best_key = -1, (True, 0, 0, 0)
        for s in self.members:
            if s in row:
                continue
            load = slots.get(s, 0)
            key = (load >= hi, 0 if head is None else lead.get((head, s), 0), load, s)
            if best < 0 or key < best_key:
                best, best_key = s, key
        return best

    def move_slots(self) -> None:
        """Move replica slots until every member holds between floor and ceiling of its share."""
        for u in sorted(self.members, key=lambda s: (self.slots[s], s)):
            if self.slots[u] < self.lo:
                self.take(u)
        for o in sorted(self.members, key=lambda s: (-self.slots[s], s)):
            self.shed(o)

    def take(self, u: int) -> None:
        """Let ``u`` take slots from members above their share until it reaches the floor."""
        size = len(self.rows)
        start = _stable_offset(u, size)
        order = [(start + i) % size for i in range(size)]
        expected = -(-(self.lo - self.plo) // max(1, len(self.members) - 1))
        for mode, prim_spare in (("primary", self.pmax), ("primary", self.phi),
                                 ("primary", self.plo), ("primary", self.pmin),
                                 ("replica", 0), ("any", self.pmin)):
            for slot_floor in (self.hi, self.lo):
                done = self._take_pass(u, order, mode, self._above(self.slots, slot_floor),
                                       self._above(self.prims, prim_spare),
                                       (expected, expected + 1, expected + 3, size))
                if done:
                    return

    @staticmethod
    def _above(counts: Counter[int], floor: int) -> _Pred:
        """A predicate: does a member's count exceed ``floor``?"""
        return lambda shard: counts[shard] > floor

    def _take_pass(self, u: int, order: list[int], mode: str, donor: _Pred,
                   spare: _Pred, limits: tuple[int, ...]) -> bool:
        """Claim eligible slots, most over-represented pairs first, under rising diversity
        limits; True once ``u`` holds its floor."""
        wants_primary = self.prims[u] < self.plo
        ranked = []
        for rank, p in enumerate(order):
            row = self.rows[p]
            if u not in row:
                for pos in self._positions(row, mode, donor, spare, wants_primary):
                    score = self.affinity(u, row, pos) - self.concentration(row, pos)
                    ranked.append((score, rank, p, pos))
        ranked.sort()
        for limit in limits:
            for _, _, p, pos in ranked:
                if self.slots[u] >= self.lo:
                    return True
                if mode == "primary" and self.prims[u] >= self.plo:
                    return False
                row = self.rows[p]
                if (u not in row and donor(row[pos]) and (pos > 0 or spare(row[0]))
                        and self.affinity(u, row, pos) <= limit):
                    self.replace(p, pos, u)
        return self.slots[u] >= self.lo

    def concentration(self, row: list[int], pos: int) -> int:
        """How over-represented the (primary, replica) pairs that a change at ``pos`` breaks are."""
        if pos == 0:
            return max((self.lead[(row[0], r)] for r in row[1:]), default=0)
        return self.lead[(row[0], row[pos])]

    @staticmethod
    def _positions(row: list[int], mode: str, donor: _Pred, spare: _Pred,
                   wants_primary: bool) -> list[int]:
        """The positions of ``row`` a taker may claim in this pass."""
        if mode == "primary":
            return [0] if wants_primary and spare(row[0]) and donor(row[0]) else []
        first = 1 if mode == "replica" or not spare(row[0]) else 0
        return [pos for pos in range(first, len(row)) if donor(row[pos])]

    def shed(self, o: int) -> None:
        """Hand slots of ``o`` to members below the ceiling until ``o`` is at most there."""
        for p, row in enumerate(self.rows):
            if self.slots[o] <= self.hi:
                return
            if o not in row:
                continue
            takers = [u for u in self.members if u not in row and self.slots[u] < self.hi]
            if takers:
                pos = row.index(o)
                pick = min(takers, key=lambda s: (self.affinity(s, row, pos),
                                                  self.slots[s], s))
                self.replace(p, pos, pick)

    def replace(self, p: int, pos: int, u: int) -> None:
        """Put ``u`` in place of the owner at ``pos`` of partition ``p``."""
        row = self.rows[p]
        old = row[pos]
        self._replica_of = None
        self._unlead(row)
        row[pos] = u
        self._relead(row)
        self.slots[old] -= 1
        self.slots[u] += 1
        if pos == 0:
            self.prims[old] -= 1
            self.prims[u] += 1

    def balance_primaries(self) -> None:
        """Promote replicas along shortest paths until every primary count is fair."""
        self._replica_of = None
        for s in self.members:
            while self.prims[s] > self.pmax and self._shift_from(s, self.pmax):
                pass
        for t in self.members:
            floor = self.plo if t in self.joined else self.pmin
            while self.prims[t] < floor and self._shift_to(t):
                pass

    def _shift_from(self, source: int, room: int, allowed: set[int] | None = None) -> bool:
        """Move one primary from ``source`` to the nearest member below ``room`` primaries."""
        by_primary: dict[int, list[int]] = {}
        for p, row in enumerate(self.rows):
            if row and (allowed is None or p in allowed):
                by_primary.setdefault(row[0], []).append(p)
        parent: dict[int, tuple[int, int] | None] = {source: None}
        queue = deque([source])
        while queue:
            shard = queue.popleft()
            for p in by_primary.get(shard, []):
                for nxt in self.rows[p][1:]:
                    if nxt in parent:
                        continue
                    parent[nxt] = (shard, p)
                    if self.prims[nxt] < room:
                        self._promote(_path_back(parent, nxt))
                        return True
                    queue.append(nxt)
        return False

    def _shift_to(self, target: int) -> bool:
        """Move one primary onto ``target`` along the shortest promotion path."""
        replica_of = self._replicas_index()
        child: dict[int, tuple[int, int] | None] = {target: None}
        queue = deque([target])
        while queue:
            shard = queue.popleft()
            for p in replica_of.get(shard, []):
                prev = self.rows[p][0]
                if prev in child:
                    continue
                child[prev] = (shard, p)
                if self.prims[prev] > self.pmin:
                    self._promote(_path_forward(child, prev))
                    return True
                queue.append(prev)
        return False

    def _replicas_index(self) -> dict[int, list[int]]:
        """Each shard's replica (not primary) partitions, in order. Built once and kept by
        ``_promote``: rebuilt on every ``_shift_to`` it was 51 of a 4,000-shard, 16,384-
        partition build's 77 profiled seconds."""
        if self._replica_of is None:
            self._replica_of = {}
            for p, row in enumerate(self.rows):
                for s in row[1:]:
                    self._replica_of.setdefault(s, []).append(p)
        return self._replica_of

    def _promote(self, steps: list[tuple[int, int]]) -> None:
        """Apply (partition, new primary) steps: each promotes a replica, moving no data."""
        index = self._replica_of
        for p, new in steps:
            row = self.rows[p]
            if index is not None:  # the old primary becomes a replica of p, the new one not
                index[new].remove(p)
                insort(index.setdefault(row[0], []), p)
            self.prims[row[0]] -= 1
            self.prims[new] += 1
            self._unlead(row)
            row.remove(new)
            row.insert(0, new)
            self._relead(row)

    def _unlead(self, row: list[int]) -> None:
        for r in row[1:]:
            self.lead[(row[0], r)] -= 1

    def _relead(self, row: list[int]) -> None:
        for r in row[1:]:
            self.lead[(row[0], r)] += 1


def _path_back(links: dict[int, tuple[int, int] | None], end: int) -> list[tuple[int, int]]:
    """The (partition, new primary) steps that the BFS ``links`` recorded, root first."""
    steps = []
    node = end
    while links[node] is not None:
        prev, p = links[node]  # type: ignore[misc]
        steps.append((p, node))
        node = prev
    return steps[::-1]


def _path_forward(links: dict[int, tuple[int, int] | None], start: int) -> list[tuple[int, int]]:
    """The (partition, new primary) steps from ``start`` down to the BFS root."""
    steps = []
    node = start
    while links[node] is not None:
        nxt, p = links[node]  # type: ignore[misc]
        steps.append((p, nxt))
        node = nxt
    return steps
