"""Merkle trees over a partition's record digests, kept up to date as records arrive.

The leaves are ``fanout ** depth`` buckets; a record falls in the bucket named by the top bits
of its digest. A leaf's hash is the XOR of its records' digests, so adding a record is one
XOR and marks one root-to-leaf path stale; an inner node hashes its children (blake2b) when
it is next read. No full rebuild ever happens except after compaction (``MerkleTree.build``).
A subtree with no records hashes to 16 zero bytes, so empty regions compare equal for free.

XOR is a sound set hash here because a partition never holds the same digest twice.

Two replicas compare roots, then only the children of nodes that differ, level by level:
``diff`` takes a callback that fetches the remote hashes of a list of nodes, so the walk maps
onto request/response messages (one round per level).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

__all__ = ["EMPTY", "MerkleTree", "RemoteFetch", "diff"]

EMPTY = bytes(16)
#: ``remote_fetch(level, indices)`` returns the remote node hashes for those indices.
RemoteFetch = Callable[[int, Sequence[int]], Sequence[bytes]]


class MerkleTree:
    """A fixed-shape hash tree: level 0 is the root, level ``depth`` the leaf buckets."""

    __slots__ = ("fanout", "depth", "_bits", "_held", "_raw", "_nodes", "_stale", "_touched")

    def __init__(self, *, fanout: int = 16, depth: int = 2) -> None:
        if fanout < 2 or fanout & (fanout - 1):
            raise ValueError(f"fanout must be a power of two >= 2, got {fanout}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.fanout = fanout
        self.depth = depth
        self._bits = (fanout.bit_length() - 1) * depth
        self._held: list[int] | None = [0] * (fanout ** depth)
        self._raw = b""  # the leaves as restored, until first used (``_leaves``)
        # inner levels 0..depth-1; a stale node is recomputed from its children on read
        self._nodes = [[EMPTY] * (fanout ** level) for level in range(depth)]
        self._stale: list[set[int]] = [set() for _ in range(depth)]
        self._touched: set[int] = set()  # leaves changed since the inner levels were marked

    @classmethod
    def build(cls, digests: Iterable[bytes], *, fanout: int = 16, depth: int = 2) -> MerkleTree:
        """A tree over ``digests`` (compaction's one full rebuild)."""
        tree = cls(fanout=fanout, depth=depth)
        for digest in digests:
            tree.add(digest)
        return tree

    @property
    def _leaves(self) -> list[int]:
        """The leaves as ints. A restored tree keeps the bytes it was given until then: an
        open from a checkpoint restores 256 leaves for each of 1024 partitions, and turning
        them all into ints took 0.14 s of an open that had nothing else to do with them."""
        if self._held is None:
            raw = self._raw
            self._held = [int.from_bytes(raw[i:i + 16], "big") for i in range(0, len(raw), 16)]
            self._raw = b""
        return self._held

    @property
    def buckets(self) -> int:
        return self.fanout ** self.depth

    def bucket_of(self, digest: bytes) -> int:
        """The leaf bucket ``digest`` falls in: the top bits of the digest."""
        return int.from_bytes(digest[:8], "big") >> (64 - self._bits)

    def add(self, digest: bytes) -> None:
        """Account for one more record: one XOR, one path marked stale (once per record a
        replica receives, hence one ``int.from_bytes`` and no helper call)."""
        whole = int.from_bytes(digest, "big")
        bucket = whole >> (8 * len(digest) - self._bits)
        leaves = self._held if self._held is not None else self._leaves
        leaves[bucket] ^= whole
        self._touched.add(bucket)

    def remove(self, digest: bytes) -> None:
        """Forget a record (XOR is its own inverse)."""
        self.add(digest)

    def _mark_stale(self) -> None:
        """Mark the ancestors of the touched leaves (deferred from ``add``: one set.add each)."""
        for bucket in self._touched:
            index = bucket
            for level in range(self.depth - 1, -1, -1):
                index //= self.fanout
                self._stale[level].add(index)
        self._touched.clear()

    def root(self) -> bytes:
        return self.node(0, 0)

    def node(self, level: int, index: int) -> bytes:
        """The hash of one node; leaves (``level == depth``) are XORs of their digests."""
        if not 0 <= level <= self.depth:
            raise ValueError(f"level {level} is outside 0..{self.depth}")
        if level == self.depth:
            return self._leaves[index].to_bytes(16, "big")
        if self._touched:
            self._mark_stale()
        if index in self._stale[level]:
            self._refresh(level, index)
        return self._nodes[level][index]

    def nodes(self, level: int, indices: Iterable[int]) -> list[bytes]:
        """The hashes of several nodes of one level (what a remote fetch answers)."""
        return [self.node(level, i) for i in indices]

    def children(self, level: int, index: int) -> range:
        """Indices, at ``level + 1``, of the children of node ``index`` of ``level``."""
        return range(index * self.fanout, (index + 1) * self.fanout)

    def _refresh(self, level: int, index: int) -> None:
        kids = [self.node(level + 1, i) for i in self.children(level, index)]
        if any(k != EMPTY for k in kids):
            value = hashlib.blake2b(b"".join(kids), digest_size=16, person=b"cf-merkle").digest()
        else:
            value = EMPTY
        self._nodes[level][index] = value
        self._stale[level].discard(index)

    def leaves(self) -> list[int]:
        """The leaf buckets' XORs, which determine every node (what a checkpoint keeps)."""
        return list(self._leaves)

    def leaf_bytes(self) -> bytes:
        """The leaves, 16 bytes each, big-endian: ``restore_leaf_bytes`` takes them back."""
        if self._held is None:
            return self._raw
        return b"".join(leaf.to_bytes(16, "big") for leaf in self._held)

    def restore_leaves(self, leaves: list[int]) -> None:
        """Take the leaves ``leaves()`` gave; the inner nodes are recomputed when read."""
        if len(leaves) != self.buckets:
            raise ValueError(f"{len(leaves)} leaves for a tree of {self.buckets}")
        self._held, self._raw = list(leaves), b""
        self._touched = set(range(len(leaves)))

    def restore_leaf_bytes(self, raw: bytes) -> None:
        """Take the leaves ``leaf_bytes()`` gave, turned into ints only when first used."""
        if len(raw) != 16 * self.buckets:
            raise ValueError(f"{len(raw)} bytes of leaves for a tree of {self.buckets}")
        self._held, self._raw = None, raw
        self._touched = set()
        # every inner node stale: 17 set entries, not 256 touched leaves (8 KB a partition)
        self._stale = [set(range(self.fanout ** level)) for level in range(self.depth)]

    def copy(self) -> MerkleTree:
        """An independent snapshot (the store hands these out so callers never race it)."""
        twin = MerkleTree(fanout=self.fanout, depth=self.depth)
        twin._held = None if self._held is None else list(self._held)
        twin._raw = self._raw
        twin._nodes = [list(level) for level in self._nodes]
        twin._stale = [set(s) for s in self._stale]
        twin._touched = set(self._touched)
        return twin


def diff(local: MerkleTree, remote_fetch: RemoteFetch) -> set[int]:
    """The leaf buckets whose content differs between ``local`` and the remote tree.

    Descends only into nodes whose hashes differ, fetching one level's worth of remote
    hashes per call (``depth + 1`` calls at most, none past the root when the trees agree).
    """
    frontier = [0]
    for level in range(local.depth + 1):
        remote = list(remote_fetch(level, frontier))
        if len(remote) != len(frontier):
            raise ValueError(f"remote answered {len(remote)} hashes for {len(frontier)} nodes")
        differing = [i for i, h in zip(frontier, remote, strict=True) if local.node(level, i) != h]
        if level == local.depth or not differing:
            return set(differing) if level == local.depth else set()
        frontier = [c for i in differing for c in local.children(level, i)]
    return set()
