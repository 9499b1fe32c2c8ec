"""The partition ring: stable hashing, determinism, balance, and minimal movement."""

from __future__ import annotations

import random

import pytest

from cellframe.errors import ClusterError
from cellframe.store import Ring, Transfer, moved_fraction, partition_of, plan_transfer
from cellframe.store.ring import DEFAULT_PARTITIONS, partitions_for

P = DEFAULT_PARTITIONS
COUNTS = range(2, 65)


@pytest.fixture(scope="module")
def grown() -> dict[int, Ring]:
    """Rings for 1..64 members, each grown from the previous by one join."""
    rings = {1: Ring.build([0])}
    for n in COUNTS:
        rings[n] = rings[n - 1].rebalanced(range(n))
    return rings


def test_partition_of_is_a_stable_hash_not_pythons_salted_one() -> None:
    # fixed values: a different answer on another run or node would scatter every key
    assert [partition_of(k) for k in ("a", "user:42", "é")] == [
        partition_of(b"a"), partition_of(b"user:42"), partition_of("é".encode())]
    assert partition_of("user:42") == 435
    assert partition_of("user:42", 16) == partition_of("user:42") % 16


def test_preference_list_is_distinct_shards_primary_first() -> None:
    ring = Ring.build(range(5))
    for key in ("a", "b", "c", "family/7"):
        prefs = ring.preference_list(key)
        assert len(prefs) == 3 == len(set(prefs))
        assert prefs == list(ring.owners(ring.partition_of(key)))
        assert prefs[0] == ring.owners(ring.partition_of(key))[0]


def test_fewer_members_than_replicas_gives_every_member_every_partition() -> None:
    ring = Ring.build([3, 9])
    assert all(set(ring.owners(p)) == {3, 9} for p in range(P))
    assert ring.primary_counts() == {3: 512, 9: 512}


@pytest.mark.parametrize("replicas", [1, 2, 5])
def test_replica_count_is_configurable(replicas: int) -> None:
    ring = Ring.build(range(8), replicas=replicas, partitions=256)
    assert all(len(set(ring.owners(p))) == replicas for p in range(256))


def test_same_membership_gives_the_same_ring_on_every_node() -> None:
    members = [40, 7, 19, 3, 1000, 65535]
    a = Ring.build(members)
    b = Ring.build(list(reversed(members)))
    assert a == b and a.digest() == b.digest()
    assert a.rebalanced([7, 19, 3, 1000, 12]) == b.rebalanced([12, 1000, 3, 19, 7])


def test_ring_survives_a_round_trip_through_plain_data() -> None:
    ring = Ring.build(range(6)).rebalanced(range(1, 7))
    again = Ring.from_dict(ring.to_dict())
    assert again == ring and again.version == ring.version == 2
    with pytest.raises(ClusterError):
        Ring.from_dict({"owners": [[1, 1, 2]], "replicas": 3, "version": 1})
    with pytest.raises(ClusterError):
        Ring.from_dict({"owners": "nope"})


def test_bad_memberships_are_refused() -> None:
    with pytest.raises(ClusterError):
        Ring.build([])
    with pytest.raises(ClusterError):
        Ring.build([1 << 16])
    with pytest.raises(ValueError):
        Ring.build([1]).owners(P)


def assert_balanced(ring: Ring, n: int) -> None:
    width = min(3, n)
    primaries, slots = ring.primary_counts(), ring.slot_counts()
    assert max(primaries.values()) <= 1.25 * P / n, n
    assert max(slots.values()) <= 1.25 * P * width / n, n
    assert set(primaries) == set(ring.members)  # nobody is left without work


def test_every_shard_count_from_2_to_64_is_balanced(grown: dict[int, Ring]) -> None:
    for n in COUNTS:
        assert_balanced(grown[n], n)


@pytest.mark.parametrize("n", [2, 3, 4, 7, 16, 31, 33, 50, 64])
def test_a_fresh_ring_is_balanced(n: int) -> None:
    assert_balanced(Ring.build(random.Random(n).sample(range(1 << 16), n)), n)


def test_a_join_moves_at_most_1_2_over_n(grown: dict[int, Ring]) -> None:
    for n in COUNTS:
        primaries, slots = moved_fraction(grown[n - 1], grown[n])
        assert primaries <= 1.2 / n, (n, primaries)
        assert slots <= 1.2 / n, (n, slots)


def test_a_leave_moves_at_most_1_2_over_n(grown: dict[int, Ring]) -> None:
    rng = random.Random(2024)
    for n in range(3, 65):
        gone = rng.randrange(n)
        after = grown[n].rebalanced([s for s in range(n) if s != gone])
        primaries, slots = moved_fraction(grown[n], after)
        assert primaries <= 1.2 / n, (n, gone, primaries)
        assert slots <= 1.2 / n, (n, gone, slots)
        assert gone not in after.members


def test_random_churn_stays_balanced_and_cheap() -> None:
    rng = random.Random(7)
    members = set(rng.sample(range(1 << 16), 6))
    ring = Ring.build(members, partitions=512)
    for _ in range(25):
        before = len(members)
        if before > 3 and rng.random() < 0.4:
            members.discard(rng.choice(sorted(members)))
            n = before
        else:
            members.add(rng.randrange(1 << 16))
            n = len(members)
        new = ring.rebalanced(members)
        assert max(moved_fraction(ring, new)) <= 1.2 / n
        assert max(new.primary_counts().values()) <= 1.25 * 512 / len(members)
        ring = new


def test_transfer_plan_names_exactly_the_new_replicas(grown: dict[int, Ring]) -> None:
    old, new = grown[9], grown[10]
    plan = plan_transfer(old, new)
    expected = {(p, s) for p in range(P) for s in new.owners(p) if s not in old.owners(p)}
    assert {(t.partition, t.to_shard) for t in plan} == expected
    assert all(set(t.from_shards) == set(old.owners(t.partition)) for t in plan)
    assert all(t.to_shard == 9 for t in plan)  # only the newcomer receives anything
    assert plan_transfer(new, new) == []


def test_promotion_moves_no_data_and_dead_sources_come_last() -> None:
    old = Ring.build(range(6))
    new = old.rebalanced(range(1, 6))
    plan = plan_transfer(old, new)
    for t in plan:
        assert t.to_shard not in old.owners(t.partition)
        if 0 in t.from_shards:
            assert t.from_shards[-1] == 0  # the departed shard is the last resort
    promoted = [p for p in range(P) if old.owners(p)[0] == 0]
    assert all(new.owners(p)[0] in old.owners(p) for p in promoted)


def test_partition_with_every_owner_gone_has_no_source() -> None:
    old = Ring.build(range(4))
    new = old.rebalanced([3, 10, 11])
    lost = [t for t in plan_transfer(old, new) if t.from_shards and
            all(s not in new.members for s in t.from_shards)]
    assert lost  # partitions owned only by 0, 1 and 2 must be recovered elsewhere
    assert all(isinstance(t, Transfer) for t in lost)


def test_members_without_any_slot_still_belong_to_the_ring() -> None:
    ring = Ring.build(range(30), partitions=8)  # 24 slots for 30 members
    assert ring.members == tuple(range(30))
    assert Ring.from_dict(ring.to_dict()) == ring
    with pytest.raises(ClusterError, match="outside the membership"):
        Ring([[1, 2, 3]], members=[1, 2])


def test_rings_with_different_partition_counts_cannot_be_planned() -> None:
    with pytest.raises(ClusterError):
        plan_transfer(Ring.build([1], partitions=8), Ring.build([1], partitions=16))


# -- 4,096 shards (issue 16): a ring sized by partitions_for, grown by joins ----------------

BIG = 4096
BIG_P = partitions_for(BIG)


def test_partitions_for_gives_every_shard_at_least_4_partitions_and_keeps_the_default() -> None:
    assert partitions_for(1) == partitions_for(64) == partitions_for(256) == P
    assert partitions_for(257) == 2048
    assert partitions_for(BIG) == 16384 and partitions_for(1 << 16) == 1 << 18
    with pytest.raises(ValueError):
        partitions_for(0)


@pytest.fixture(scope="module")
def near_4096() -> dict[int, Ring]:
    """Rings of 4,094, 4,095 and 4,096 shards on ``partitions_for(4096)`` partitions: the
    first built (0.5 s), each next grown from it by one join (0.1 s)."""
    rings = {4094: Ring.build(range(4094), partitions=BIG_P)}
    for n in (4095, BIG):
        rings[n] = rings[n - 1].rebalanced(range(n))
    return rings


def assert_balanced_at(ring: Ring, n: int) -> None:
    primaries, slots = ring.primary_counts(), ring.slot_counts()
    assert max(primaries.values()) <= 1.25 * ring.partitions / n, (n, max(primaries.values()))
    assert max(slots.values()) <= 1.25 * 3 * ring.partitions / n, (n, max(slots.values()))
    assert set(primaries) == set(ring.members)


def test_4096_shards_stay_within_1_25x_of_the_mean(near_4096: dict[int, Ring]) -> None:
    for n, ring in near_4096.items():
        assert ring.partitions == 16384
        assert_balanced_at(ring, n)


def test_at_4096_shards_a_join_moves_at_most_1_2_over_n_of_the_keys(
        near_4096: dict[int, Ring]) -> None:
    """The keys moved are the replica slots newly assigned (a promotion moves no data)."""
    for n in (4095, BIG):
        _, slots = moved_fraction(near_4096[n - 1], near_4096[n])
        assert 0 < slots <= 1.2 / n, (n, slots)
        assert {t.to_shard for t in plan_transfer(near_4096[n - 1], near_4096[n])} == {n - 1}


def test_at_4096_shards_a_leave_moves_at_most_1_2_over_n(near_4096: dict[int, Ring]) -> None:
    ring = near_4096[BIG]
    for gone in (0, BIG - 1):
        after = ring.rebalanced([s for s in range(BIG) if s != gone])
        primaries, slots = moved_fraction(ring, after)
        assert primaries <= 1.2 / BIG and slots <= 1.2 / BIG, (gone, primaries, slots)
        assert_balanced_at(after, BIG - 1)


def test_1024_partitions_cannot_balance_4096_shards() -> None:
    """Why partitions_for exists: the default count gives a quarter of the shards all the work."""
    ring = Ring.build(range(BIG))
    assert max(ring.primary_counts().values()) > 1.25 * P / BIG
