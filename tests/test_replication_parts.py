"""The pure parts of replication: records on the wire, peers, the ring view, quorums, Merkle
exchange bookkeeping, transfer bookkeeping and the configuration."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe.errors import ConfigError
from cellframe.language.printer import write
from cellframe.language.reader import read
from cellframe.replication import RingView, ShardConfig, ShardPeers, derive_shard_id
from cellframe.replication.antientropy import Exchanges, children, differing
from cellframe.replication.config import DERIVED_SHARD_BASE
from cellframe.replication.quorum import HISTORY, NEWEST, PendingRead, PendingWrite, merge, repairs
from cellframe.replication.transfers import Pulls
from cellframe.replication.wire import (
    MESSAGE_BUDGET,
    ROW_BUDGET,
    chunks,
    digest_hex,
    row_records,
    row_size,
    rows_of,
    rows_to_records,
)
from cellframe.store import Record, Ring, content_digest


def rec(family: str, time: int, value: bytes = b"1", guid: int = 1) -> Record:
    return Record(family, time, value, guid, content_digest(family, time, value))


families = st.text(min_size=1, max_size=30).filter(lambda f: len(f.encode()) < 200)


@settings(deadline=None, max_examples=80)
@given(st.lists(st.tuples(families, st.integers(-(2**63), 2**63 - 1), st.binary(max_size=60),
                          st.integers(0, 2**64 - 1)), max_size=40))
def test_records_survive_the_wire_exactly(fields) -> None:
    records = [rec(f, t, v, g) for f, t, v, g in fields]
    rows = rows_of(records)
    assert rows_to_records(read(write(rows))) == (records, 0)
    assert all(row_size(r) == len(write(r).encode()) + 1 for r in rows)


def test_large_records_go_fewer_to_a_row_so_that_a_row_stays_within_its_budget() -> None:
    small = rows_of([rec("s", t) for t in range(40)])
    assert [len(row_records(r)) for r in small] == [16, 16, 8]
    large = rows_of([rec("l", t, b"x" * 3000) for t in range(40)])
    assert [len(row_records(r)) for r in large] == [2] * 20
    assert all(len(r) <= ROW_BUDGET for r in large)
    huge = rows_of([rec("h", t, b"x" * 20_000) for t in range(3)])
    assert [len(row_records(r)) for r in huge] == [1, 1, 1]  # a longer record goes alone


def test_a_damaged_row_is_counted_and_skipped_without_an_exception() -> None:
    good = rows_of([rec("ok", 1)])[0]
    records, bad = rows_to_records([good, "1 2 3", "x 1 1 1 ab", 5, "1 2 9 1 ab",
                                    "1 99999999999999999999 1 1 ab", "1 -2 1 1 ab",
                                    "99999999999999999999 2 1 1 ab", "1 2 1 1 a", good])
    assert [r.family for r in records] == ["ok", "ok"] and bad == 8
    with pytest.raises(ValueError):
        row_records("1 2 0 1 ab")
    assert rows_to_records("not a list") == ([], 1)


def test_chunks_respect_the_budget_and_keep_every_item_in_order() -> None:
    items = list(range(100))
    parts = list(chunks(items, lambda i: 10, budget=95))
    assert [x for p in parts for x in p] == items
    assert all(len(p) * 10 <= 95 for p in parts)
    assert list(chunks([1], lambda i: 10**9)) == [[1]]  # one oversized item still goes alone
    assert digest_hex("ab" * 16) == bytes.fromhex("ab" * 16)
    assert digest_hex("zz") is None and digest_hex(5) is None and MESSAGE_BUDGET < 64 * 1024


def test_a_late_hello_from_a_node_declared_down_does_not_resurrect_it() -> None:
    peers = ShardPeers(me=1)
    assert peers.hear("n2", "c2", 2, incarnation=10, now=0.0)
    assert peers.down("n2", 10) == [2]
    assert not peers.hear("n2", "c2", 2, incarnation=10, now=1.0)
    assert peers.shards() == {1}
    assert peers.hear("n2", "c2", 2, incarnation=11, now=2.0)  # a new life comes back
    assert peers.live(2) and peers.cell_of(2) == "c2"


def test_a_peer_announcing_a_taken_shard_id_is_refused() -> None:
    peers = ShardPeers(me=1)
    assert not peers.hear("impostor", "c", 1, 1, 0.0)
    assert peers.hear("n2", "c2", 2, 1, 0.0)
    assert not peers.hear("n3", "c3", 2, 1, 0.0)
    assert peers.conflicts == {"impostor", "n3"} and peers.cell_of(2) == "c2"


def test_silent_and_unreachable_peers_are_forgotten() -> None:
    peers = ShardPeers(me=1)
    peers.hear("n2", "c2", 2, 1, 0.0)
    peers.hear("n3", "c3", 3, 1, 5.0)
    assert peers.expire(now=8.0, timeout=4.0) == [2]
    assert peers.unreachable(3) and peers.shards() == {1}


def test_a_move_keeps_old_owners_in_the_replica_set_until_nobody_receives_it() -> None:
    view = RingView(3, partitions=16, replicas=2)
    assert view.install(Ring.build([1, 2], partitions=16, replicas=2)) == []
    plan = view.install(view.successor([1, 2, 3]), now=10.0)
    assert plan and {t.to_shard for t in plan} == {3}
    p = plan[0].partition
    old = set(plan[0].from_shards)
    assert set(view.replica_set(p, lambda s: True)) == old | {3}
    assert view.coordinator(p, lambda s: s != view.owners(p)[0]) == view.owners(p)[1]
    view.settle(11.0, receiving=lambda q: q == p, after=0.5)
    assert p in view.previous  # still received
    view.settle(11.0, receiving=lambda q: False, after=0.5)
    assert p not in view.previous and set(view.replica_set(p, lambda s: True)) == set(
        view.owners(p))


def test_cells_adopt_the_larger_table_for_the_same_members_only() -> None:
    view = RingView(1, partitions=16, replicas=2)
    view.install(Ring.build([1, 2], partitions=16, replicas=2))
    assert view.should_adopt(view.ring.version + 1, "", [1, 2])
    assert not view.should_adopt(view.ring.version + 1, "", [1, 2, 3])
    assert not view.should_adopt(view.ring.version, view.digest, [1, 2])


def test_a_table_built_alone_yields_to_a_clusters_table_which_then_counts_as_the_first() -> None:
    spare = RingView(9, partitions=16, replicas=2)
    assert spare.install(Ring.build([9], partitions=16, replicas=2), alone=True) == []
    cluster = Ring.build([1, 2, 3], partitions=16, replicas=2).rebalanced([1, 2, 3, 9])
    assert spare.should_adopt(cluster.version, cluster.digest(), cluster.members)
    assert spare.install(cluster, now=5.0, afresh=True) == []  # no moves out of its own table
    assert not spare.alone and not spare.moved_at and spare.mine()
    assert not spare.should_adopt(cluster.version + 1, "", [1, 2, 3])  # back to the rule


def test_a_table_built_alone_meets_another_one_members_table_as_before() -> None:
    view = RingView(9, partitions=16, replicas=2)
    view.install(Ring.build([9], partitions=16, replicas=2), alone=True)
    other = Ring.build([4], partitions=16, replicas=2)  # a node that built alone too
    assert not view.should_adopt(other.version + 1, other.digest(), other.members)
    rebalanced = view.successor([4, 9])
    assert view.install(rebalanced, now=1.0) and not view.alone  # its own moves, planned


def test_a_write_is_answered_once_at_w_distinct_copies() -> None:
    write_ = PendingWrite("f", 7, 1, 0, needed=2, deadline=1.0, reply_to="r")
    assert not write_.acknowledge(1)
    assert not write_.acknowledge(1)  # a duplicate ack is not a second copy
    assert write_.acknowledge(2)
    assert not write_.acknowledge(3)  # answered once


def test_a_read_waits_for_r_answers_one_of_them_complete() -> None:
    read_ = PendingRead("id", "f", NEWEST, 0, asked={1, 2, 3}, needed=2, deadline=1.0,
                        reply_to=None)
    read_.answer(1, [], complete=False)
    read_.answer(2, [], complete=False)
    assert not read_.ready  # two answers, but both from replicas still receiving
    read_.answer(3, [], complete=True)
    assert read_.ready and read_.finished


def test_merge_picks_the_newest_or_the_union_and_repairs_name_what_each_lacks() -> None:
    a, b, c = rec("f", 1), rec("f", 2), rec("f", 3)
    answers = {1: [c], 2: [b], 3: []}
    assert merge(NEWEST, answers.values()) == [c]
    assert repairs(answers, [c]) == {2: [c], 3: [c]}
    history = {1: [a, c], 2: [a, b]}
    union = merge(HISTORY, history.values())
    assert union == [a, b, c]
    assert repairs(history, union) == {1: [b], 2: [c]}


def test_merkle_descent_helpers() -> None:
    assert children([0]) == list(range(16)) and children([1])[:2] == [16, 17]
    assert differing([4, 5], [b"a", b"b"], [b"a", b"x"]) == [5]
    exchanges = Exchanges(limit=1, timeout=2.0)
    assert exchanges.begin(2, 7, now=0.0) and not exchanges.begin(2, 7, now=0.0)
    assert not exchanges.begin(3, 1, now=0.0)  # full
    exchanges.expire(now=5.0)
    assert len(exchanges) == 0 and exchanges.expired == 1


def test_pulls_start_up_to_the_limit_and_drop_what_is_no_longer_owned() -> None:
    pulls = Pulls(concurrency=2)
    for p in range(4):
        pulls.want(p, (1,))
    pulls.start()
    assert sorted(pulls.active) == [0, 1] and sorted(pulls.queued) == [2, 3]
    assert pulls.drop(lambda p: p != 1) == [1]
    pulls.start()
    assert sorted(pulls.active) == [0, 2] and pulls.receiving(3)
    assert pulls.done(2) is not None and pulls.finished == 1


def test_settings_come_from_dns_with_node_records_winning() -> None:
    cluster = {"replicas": "3", "shard.write-quorum": "3", "shard.partitions": "64",
               "shard.drop-ms": "250"}
    node = {"shard-id": "7", "shard.write-quorum": "2", "shard.fsync": "false"}
    config = ShardConfig.from_settings(cluster, node)
    assert (config.shard_id, config.write_quorum, config.partitions, config.fsync,
            config.drop_interval) == (7, 2, 64, False, 0.25)
    assert ShardConfig.from_settings({}).drop_interval == 1.0
    for bad in ({"shard.write-quorum": "4"}, {"replicas": "x"}, {"shard.fsync": "maybe"},
                {"shard.partitions": "100000"}, {"shard-id": "70000"}, {"shard.drop-ms": "0"}):
        with pytest.raises(ConfigError):
            ShardConfig.from_settings(bad)


def test_a_derived_shard_id_is_stable_and_above_the_hand_written_ones() -> None:
    ids = {derive_shard_id(f"spare-{i:02d}") for i in range(50)}
    assert len(ids) == 50 and min(ids) >= DERIVED_SHARD_BASE and max(ids) <= 65535
    assert derive_shard_id("spare-01") == derive_shard_id("spare-01")
