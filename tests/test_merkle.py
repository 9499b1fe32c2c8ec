"""Merkle trees: incremental upkeep equals a rebuild, and diff finds exactly what differs."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe.store import MerkleTree, Store, diff, reconcile
from cellframe.store.merkle import EMPTY

# blake2b never yields sixteen zero bytes in practice; XOR could not see such a record
digests = st.lists(st.binary(min_size=16, max_size=16).filter(any), unique=True, max_size=200)


def h(i: int) -> bytes:
    return hashlib.blake2b(b"%d" % i, digest_size=16).digest()


@settings(deadline=None, max_examples=100)
@given(digests, st.randoms())
def test_incremental_tree_equals_a_rebuild_in_any_order(items: list[bytes],
                                                        rng: random.Random) -> None:
    tree = MerkleTree()
    for d in items:
        tree.root()  # interleave reads, so stale marks are exercised between adds
        tree.add(d)
    shuffled = list(items)
    rng.shuffle(shuffled)
    assert tree.root() == MerkleTree.build(shuffled).root()


@settings(deadline=None, max_examples=50)
@given(digests, digests)
def test_remove_undoes_add(base: list[bytes], extra: list[bytes]) -> None:
    extra = [d for d in extra if d not in set(base)]
    tree = MerkleTree.build(base)
    before = tree.root()
    for d in extra:
        tree.add(d)
    for d in extra:
        tree.remove(d)
    assert tree.root() == before


def test_an_empty_tree_hashes_to_zeros_and_any_record_changes_the_root() -> None:
    tree = MerkleTree()
    assert tree.root() == EMPTY
    tree.add(h(1))
    assert tree.root() != EMPTY


@settings(deadline=None, max_examples=60)
@given(digests, digests, digests)
def test_diff_returns_exactly_the_buckets_that_differ(common: list[bytes], only_a: list[bytes],
                                                      only_b: list[bytes]) -> None:
    only_a = [d for d in only_a if d not in set(common)]
    only_b = [d for d in only_b if d not in set(common) | set(only_a)]
    a, b = MerkleTree.build(common + only_a), MerkleTree.build(common + only_b)
    got = diff(a, lambda level, idx: b.nodes(level, idx))
    assert got == {a.bucket_of(d) for d in only_a + only_b}


def test_diff_of_equal_trees_asks_for_the_root_only() -> None:
    a = MerkleTree.build(h(i) for i in range(500))
    b = MerkleTree.build(h(i) for i in reversed(range(500)))
    asked: list[tuple[int, int]] = []

    def fetch(level: int, indices: Sequence[int]) -> list[bytes]:
        asked.extend((level, i) for i in indices)
        return b.nodes(level, indices)

    assert diff(a, fetch) == set() and asked == [(0, 0)]


def test_one_missing_record_is_found_by_touching_few_nodes() -> None:
    a = MerkleTree.build(h(i) for i in range(2000))
    b = MerkleTree.build(h(i) for i in range(2000) if i != 1234)
    asked: list[int] = []

    def fetch(level: int, indices: Sequence[int]) -> list[bytes]:
        asked.extend(indices)
        return b.nodes(level, indices)

    assert diff(a, fetch) == {a.bucket_of(h(1234))}
    total = 1 + a.fanout + a.fanout ** 2
    assert len(asked) == 1 + a.fanout + a.fanout <= total // 8


def test_a_remote_that_answers_the_wrong_count_is_an_error() -> None:
    a = MerkleTree.build([h(1)])
    with pytest.raises(ValueError, match="answered"):
        diff(a, lambda level, idx: [])


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError):
        MerkleTree(fanout=12)
    with pytest.raises(ValueError):
        MerkleTree(depth=0)


def test_two_stores_with_overlapping_records_exchange_exactly_the_missing_ones(
        tmp_path: Path) -> None:
    a = Store(tmp_path / "a", partitions=4, fsync=False, shard=1)
    b = Store(tmp_path / "b", partitions=4, fsync=False, shard=2)
    try:
        family = next(f"f{i}" for i in range(100) if a.partition_of(f"f{i}") == 2)
        shared = [a.insert(family, b"%d" % i, time=i) for i in range(300)]
        for r in a.select_history(family):
            b.apply(r)
        only_a = {a.insert(family, b"a%d" % i, time=1000 + i).digest for i in range(3)}
        only_b = {b.insert(family, b"b%d" % i, time=2000 + i).digest for i in range(2)}
        assert a.merkle(2).root() != b.merkle(2).root()

        result = reconcile(a, b, 2)
        assert result.pulled == 2 and result.pushed == 3
        assert result.buckets == {a.merkle(2).bucket_of(d) for d in only_a | only_b}
        assert result.fetches <= a.merkle(2).depth + 1
        assert a.merkle(2).root() == b.merkle(2).root()
        everything = {r.digest for r in shared} | only_a | only_b
        assert {r.digest for r in a.select_history(family)} == everything
        assert {r.digest for r in b.select_history(family)} == everything
        assert reconcile(a, b, 2).buckets == frozenset()  # nothing left to exchange
    finally:
        a.close()
        b.close()


def test_store_tree_is_maintained_as_records_arrive_and_survives_reopen(tmp_path: Path) -> None:
    with Store(tmp_path, partitions=2, fsync=False) as s:
        for i in range(50):
            s.insert(f"f{i}", b"v", time=i)
        roots = [s.merkle(p).root() for p in range(2)]
        for p in range(2):
            digests = {r.digest for r in s.records_since(p, 0, 1000)}
            assert roots[p] == MerkleTree.build(digests).root()
            assert set().union(*(s.bucket(p, b) for b in range(256))) == digests
    with Store(tmp_path, partitions=2, fsync=False) as s:
        assert [s.merkle(p).root() for p in range(2)] == roots
