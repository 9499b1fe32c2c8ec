"""Merkle anti-entropy over messages: the state of each exchange and the comparisons it makes.

Between two replicas A and B of a partition (A the lower shard id, or A holding a partition it
no longer owns), one exchange is::

    A -> B  (merkle-roots :roots '((p root) ...))          every partition of a round at once
    B -> A  (merkle-nodes :queries '((p level (i ...)) ...))  children of the differing roots
    A -> B  (merkle-nodes-are :answers '((p level (i ...) (hash ...)) ...))
            ... B descends one level per round trip, only into nodes that differ ...
    B -> A  (bucket-digests :partition p :buckets '((b digest ...) ...))  at the leaves
    A -> B  (records :partition p :rows '(...))              what B lacks
    A -> B  (fetch :partition p :digests '(...))             what A lacks (A an owner only)
    B -> A  (records :partition p :rows '(...))

When many buckets differ (``ESCALATE_BUCKETS``: a replica back from a long absence) between
two owners, B instead asks for the whole partition both ways (``pull-partition``): a
resumable transfer (``transfers``) moves it in far fewer messages than the bucket walk. A
cell offering a partition it no longer owns (its copy may hold writes that reached only it)
always takes the bucket walk: it only pushes, and its owner is usually a superset.

No side waits: B keeps one entry per (peer, partition) exchange in progress (``Exchanges``)
and continues when the next answer arrives; the walk itself needs no state beyond the level
and indices that every answer repeats. An exchange that stalls (a message lost, a peer gone)
expires. Records are applied with ``Store.apply``, which ignores what is already there, so a
duplicated or late message changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..cell.statemachine import transition
from ..language.symbols import Keyword, Symbol
from ..store import MerkleTree, Record
from ..store.merkle import EMPTY
from .base import ShardBase, _int
from .wire import chunks, digest_hex, quoted, row_size, rows_of, rows_to_records

__all__ = ["DEPTH", "ESCALATE_BUCKETS", "FANOUT", "AntiEntropy", "Exchanges", "children",
           "differing"]

_SHAPE = MerkleTree()
#: The shape of every partition's tree (the store's default): fanout 16, depth 2.
FANOUT, DEPTH = _SHAPE.fanout, _SHAPE.depth
#: Differing leaf buckets (of 256) past which two replicas stream the partition instead.
ESCALATE_BUCKETS = 32


def children(indices: Sequence[int]) -> list[int]:
    """The indices, one level down, of the children of ``indices``."""
    return [c for i in indices for c in range(i * FANOUT, (i + 1) * FANOUT)]


def differing(indices: Sequence[int], local: Sequence[bytes],
              remote: Sequence[bytes | None]) -> list[int]:
    """The indices whose local and remote hashes differ (an unreadable remote hash differs)."""
    return [i for i, mine, theirs in zip(indices, local, remote, strict=True) if mine != theirs]


class Exchanges:
    """The exchanges in progress, at most ``limit``, each forgotten after ``timeout`` s."""

    def __init__(self, limit: int, timeout: float) -> None:
        self.limit = limit
        self.timeout = timeout
        self._started: dict[tuple[int, int], float] = {}
        self.completed = 0
        self.expired = 0

    def begin(self, peer: int, partition: int, now: float) -> bool:
        """Start an exchange with ``peer`` about ``partition`` unless one runs or we are full."""
        key = (peer, partition)
        if key in self._started or len(self._started) >= self.limit:
            return False
        self._started[key] = now
        return True

    def active(self, peer: int, partition: int) -> bool:
        return (peer, partition) in self._started

    def end(self, peer: int, partition: int) -> None:
        if self._started.pop((peer, partition), None) is not None:
            self.completed += 1

    def expire(self, now: float) -> None:
        stale = [k for k, t in self._started.items() if now - t > self.timeout]
        for key in stale:
            del self._started[key]
        self.expired += len(stale)

    def __len__(self) -> int:
        return len(self._started)


class AntiEntropy(ShardBase):
    """The anti-entropy part of the shard cell: rounds on the tick, exchanges by message."""

    #: The exchanges of a round, between shard cells only.
    node_verbs: ClassVar[Mapping[str, str | None]] = dict.fromkeys(
        ("merkle-roots", "merkle-nodes", "merkle-nodes-are", "pull-partition", "bucket-digests",
         "fetch", "records"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exchanges = Exchanges(self.config.max_exchanges, self.config.stall_timeout)
        self.next_round = time.monotonic() + self.config.anti_entropy_interval
        self.cursor = 0
        self.offered: dict[int, tuple[bytes, float]] = {}

    # -- rounds (the initiator, A) ------------------------------------------------------------

    def on_tick(self, now: float) -> None:
        super().on_tick(now)
        if now >= self.next_round and self.view.ring is not None and self.store is not None:
            self.next_round = now + self.config.anti_entropy_interval
            self.exchanges.expire(now)
            self.anti_entropy_round(now)

    def anti_entropy_round(self, now: float) -> None:
        """Offer the roots of a slice of this cell's partitions to their other replicas."""
        roots: dict[int, list[list[Any]]] = {}
        for p in self._round_slice():
            if not self.is_receiving(p):
                self._offer(p, roots, lambda peer: self.me < peer)
        for p in self._orphans(now):
            self._offer(p, roots, lambda peer: True)
        self.count("anti_entropy_rounds")
        for peer, entries in roots.items():
            for chunk in chunks(entries, lambda e: 40):
                self.send_to(peer, self._from("merkle-roots", Keyword("roots"), quoted(chunk)))

    def _round_slice(self) -> list[int]:
        mine = self.view.mine()
        if not mine:
            return []
        size = min(len(mine), self.config.anti_entropy_partitions)
        start = self.cursor % len(mine)
        self.cursor = start + size
        return (mine[start:] + mine[:start])[:size]

    def _orphans(self, now: float) -> list[int]:
        """Partitions this cell holds records of but no longer owns, whose root changed since
        it last offered them (or long ago): their owners must get whatever only it holds."""
        out = []
        owned = set(self.view.mine())
        for p in range(self.config.partitions):
            if p in owned:
                continue
            root = self._root(p)
            if root == EMPTY:
                continue
            offered = self.offered.get(p)
            if offered and offered[0] == root and now - offered[1] < self.config.reoffer_interval:
                continue
            self.offered[p] = (root, now)
            out.append(p)
        return out

    def _offer(self, p: int, roots: dict[int, list[list[Any]]], initiate: Any) -> None:
        root = None
        for peer in self.view.owners(p):
            if peer != self.me and self.live(peer) and initiate(peer):
                root = root or self._root(p)
                roots.setdefault(peer, []).append([p, root.hex()])

    def _root(self, p: int) -> bytes:
        assert self.store is not None
        return self.store.merkle_nodes(p, 0, [0])[0]

    # -- the descent (the responder, B) -----------------------------------------------------

    @transition("merkle-roots")
    def merkle_roots(self, shard: int, roots: Any, **extra: Any) -> None:
        if self.store is None or not _int(shard) or not isinstance(roots, list):
            return
        now, queries = time.monotonic(), []
        for entry in roots:
            p, theirs = self._entry(entry, 2)
            if p is None or self.is_receiving(p):
                continue
            remote = digest_hex(theirs)
            if remote is not None and remote != self._root(p) and \
                    self.exchanges.begin(shard, p, now):
                queries.append([p, 1, list(range(FANOUT))])
        self._query(shard, queries)

    def _query(self, shard: int, queries: list[list[Any]]) -> None:
        for chunk in chunks(queries, lambda q: 8 + 4 * len(q[2])):
            self.send_to(shard, self._from("merkle-nodes", Keyword("queries"), quoted(chunk)))

    @transition("merkle-nodes")
    def merkle_nodes(self, shard: int, queries: Any, **extra: Any) -> None:
        """A's side: answer the hashes B asks for."""
        if self.store is None or not _int(shard) or not isinstance(queries, list):
            return
        answers: list[list[Any]] = []
        for query in queries:
            p, level, indices = self._node_query(query)
            if p is not None:
                hashes = self.store.merkle_nodes(p, level, indices)
                answers.append([p, level, indices, [h.hex() for h in hashes]])
        for chunk in chunks(answers, lambda a: 12 + 38 * len(a[2])):
            self.send_to(shard, self._from("merkle-nodes-are", Keyword("answers"), quoted(chunk)))

    @transition("merkle-nodes-are")
    def merkle_nodes_are(self, shard: int, answers: Any, **extra: Any) -> None:
        """B's side: descend into the nodes that differ, or list the differing buckets."""
        if self.store is None or not _int(shard) or not isinstance(answers, list):
            return
        queries = []
        for answer in answers:
            p, level, indices, remote = self._node_answer(answer)
            if p is None or not self.exchanges.active(shard, p):
                continue
            diff = differing(indices, self.store.merkle_nodes(p, level, indices), remote)
            if diff and level < DEPTH:
                queries.append([p, level + 1, children(diff)])
                continue
            if len(diff) >= ESCALATE_BUCKETS and shard in self.view.owners(p):
                self._escalate(shard, p)
            elif diff:
                self._send_buckets(shard, p, diff)
            self.exchanges.end(shard, p)
        self._query(shard, queries)

    def _escalate(self, shard: int, p: int) -> None:
        """Replicas this far apart (a node back from a long absence) are cheaper to repair by
        streaming the partition than bucket by bucket: each side pulls the other's copy."""
        self.count("anti_entropy_escalated")
        if self.view.owns(p):
            self.pull_partition(p, (shard,))
        self.send_to(shard, self._from("pull-partition", Keyword("partition"), p))

    @transition("pull-partition")
    def pull_partition_verb(self, shard: int, partition: int, **extra: Any) -> None:
        p = self._valid_partition(partition)
        if p is not None and _int(shard) and self.view.owns(p) and self.live(shard):
            self.pull_partition(p, (shard,))

    def _send_buckets(self, shard: int, p: int, buckets: list[int]) -> None:
        assert self.store is not None
        entries = []
        for b in buckets:
            digests = [d.hex() for d in sorted(self.store.bucket(p, b))]
            entries += [[b, *part] for part in chunks(digests, lambda d: 35)] or [[b]]
        for chunk in chunks(entries, lambda e: 8 + 35 * len(e)):
            self.send_to(shard, self._from("bucket-digests", Keyword("partition"), p,
                                           Keyword("buckets"), quoted(chunk)))

    # -- the exchange of records ------------------------------------------------------------

    @transition("bucket-digests")
    def bucket_digests(self, shard: int, partition: int, buckets: Any, **extra: Any) -> None:
        """A's side: push what B lacks; fetch what A lacks if A holds the partition."""
        p = self._valid_partition(partition)
        if self.store is None or p is None or not _int(shard) or not isinstance(buckets, list):
            return
        push: set[bytes] = set()
        want: set[bytes] = set()
        for entry in buckets:
            if not isinstance(entry, list) or not entry or not _int(entry[0]):
                continue
            theirs = {d for d in map(digest_hex, entry[1:]) if d is not None}
            if not 0 <= entry[0] < FANOUT ** DEPTH:
                continue
            mine = self.store.bucket(p, entry[0])
            push |= mine - theirs
            want |= theirs - mine
        self._push(shard, p, self.store.fetch(p, push))
        if want and (self.view.owns(p) or self.is_receiving(p)):
            for chunk in chunks(sorted(d.hex() for d in want), lambda d: 35):
                self.send_to(shard, self._from("fetch", Keyword("partition"), p,
                                               Keyword("digests"), quoted(chunk)))

    @transition("fetch")
    def fetch(self, shard: int, partition: int, digests: Any, **extra: Any) -> None:
        p = self._valid_partition(partition)
        if self.store is None or p is None or not _int(shard) or not isinstance(digests, list):
            return
        wanted = [d for d in map(digest_hex, digests) if d is not None]
        self._push(shard, p, self.store.fetch(p, wanted))

    def _push(self, shard: int, p: int, records: list[Record]) -> None:
        if not records:
            return
        self.count("anti_entropy_pushed", len(records))
        for chunk in chunks(rows_of(records), row_size):
            self.send_to(shard, self._from("records", Keyword("partition"), p,
                                           Keyword("rows"), quoted(chunk)))

    @transition("records")
    def records(self, rows: Any, shard: Any = None, **extra: Any) -> None:
        """Records a replica lacked, pushed by its peer: apply them (idempotent; what
        retention drops here is skipped, see ``when_durable``)."""
        records, bad = rows_to_records(rows)
        if bad:
            self.count("bad_rows", bad)
        self.count("anti_entropy_applied", len(records))
        self.when_durable(records, lambda failures: None, source=shard if _int(shard) else None)

    # -- helpers ----------------------------------------------------------------------------

    def _from(self, verb: str, *rest: Any) -> list[Any]:
        return [Symbol(verb), Keyword("shard"), self.me, *rest]

    def _valid_partition(self, value: Any) -> int | None:
        return value if _int(value) and 0 <= value < self.config.partitions else None

    def _entry(self, entry: Any, width: int) -> tuple[int | None, Any]:
        if not isinstance(entry, list) or len(entry) != width:
            return None, None
        return self._valid_partition(entry[0]), entry[1]

    def _node_query(self, query: Any) -> tuple[int | None, int, list[int]]:
        if not isinstance(query, list) or len(query) != 3:
            return None, 0, []
        p, level, indices = self._valid_partition(query[0]), query[1], query[2]
        if p is None or not _int(level) or not 0 <= level <= DEPTH or \
                not isinstance(indices, list) or not indices:
            return None, 0, []
        if not all(_int(i) and 0 <= i < FANOUT ** level for i in indices):
            return None, 0, []
        return p, level, indices

    def _node_answer(self, answer: Any) -> tuple[int | None, int, list[int], list[bytes | None]]:
        if not isinstance(answer, list) or len(answer) != 4:
            return None, 0, [], []
        p, level, indices = self._node_query(answer[:3])
        hashes = answer[3]
        if p is None or not isinstance(hashes, list) or len(hashes) != len(indices):
            return None, 0, [], []
        return p, level, indices, [digest_hex(h) for h in hashes]
