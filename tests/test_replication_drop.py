"""Old owners drop the partitions a move took from them, once the new owners hold what they
hold: reads through the cluster never miss, N copies remain, a write that reached only an old
owner survives the drop, and a partition that comes back is received again in full (in one
process, on the embedded transport)."""

from __future__ import annotations

import time

from cellframe.store.handoff import transfer_key
from cellframe.store.merkle import EMPTY
from cellframe.testing import wait_for
from tests.replication_support import (
    FAMILIES,
    agreed_ring,
    cells,
    fill,
    holders,
    lost,
    read_everything,
    record,
    rings_held,
    roots_agree,
    settled,
    shard_cluster,
)

NODES = ["shard-01", "shard-02", "shard-03"]
STALE = 10**6  # a checkpoint past every record: a transfer resuming there would get nothing


def plant_stale_checkpoints(cluster) -> None:
    """A checkpoint on every shard for every partition it holds, far past its records (as if
    the transfer that brought it had stopped there): a drop must forget those of the
    partitions it drops."""
    for cell in cells(cluster).values():
        cell.checkpoints.update({transfer_key(p, source, cell.me): STALE
                                 for p in cell.view.mine() for source in (1, 2, 3)
                                 if source != cell.me})


def fill_then_add_a_spare(cluster):
    """Fill the cluster, plant stale checkpoints, then start a spare that joins as a shard;
    return the shard client and the ring from before the spare joined."""
    shards = fill(cluster)
    plant_stale_checkpoints(cluster)
    before = cells(cluster)["shard-01"].view.ring
    cluster.start_node("spare-01", role="shard")
    return shards, before


def test_after_a_shard_joins_old_owners_drop_what_moved_and_every_record_stays_readable(
    tmp_path,
) -> None:
    with shard_cluster(tmp_path, nodes=NODES, replicas=2, intent=4, handoff_rate=8_000,
                       drop_interval=0.1) as cluster:
        shards, before = fill_then_add_a_spare(cluster)
        wait_for(lambda: cells(cluster).get("spare-01"), 20)
        misses: list[tuple[str, str, object]] = []
        reads, deadline = 0, time.monotonic() + 30
        while not settled(cluster, 4):  # reads while partitions move and are dropped
            assert time.monotonic() < deadline, "the move and the drops did not finish"
            misses += read_everything(shards, FAMILIES[reads % 120:reads % 120 + 10])
            reads += 10
        assert reads >= 10 and misses == []
        found = cells(cluster)
        after = found["spare-01"].view.ring
        by_shard = {c.me: c for c in found.values()}
        taken = lost(before, after)
        assert taken and all(s != by_shard[s].me or s in by_shard for s, _ in taken)
        for shard, p in taken:
            cell = by_shard[shard]
            assert cell.store.merkle_nodes(p, 0, [0])[0] == EMPTY
            assert all(cell.store.select(f) is None for f in FAMILIES
                       if after.partition_of(f) == p)
            assert not any(cell.checkpoints.get(transfer_key(p, s, shard)) for s in (1, 2, 3))
        kept = [(c.me, p) for c in found.values() if c.me in (1, 2, 3) for p in c.view.mine()]
        assert all(by_shard[s].checkpoints.get(transfer_key(p, 1 if s != 1 else 2, s)) == STALE
                   for s, p in kept)  # a drop forgets only its own partition's checkpoints
        assert sum(c.stats.get("partitions_dropped", 0) for c in found.values()) == len(taken)
        assert all(len(holders(cluster, f)) == 2 for f in FAMILIES)  # N copies, no more
        assert read_everything(shards, FAMILIES) == []
        assert roots_agree(cluster)


def test_a_record_only_an_old_owner_holds_reaches_the_new_owners_before_the_drop(
    tmp_path,
) -> None:
    # Anti-entropy is off (a minute between rounds): only the drop's check can move it.
    with shard_cluster(tmp_path, nodes=NODES, replicas=2, intent=4, handoff_rate=8_000,
                       anti_entropy_interval=60, drop_interval=0.1) as cluster:
        shards = fill(cluster)
        before = cells(cluster)["shard-01"].view.ring
        cluster.start_node("spare-01", role="shard")
        # The table all four hold, not the newcomer's first: a newcomer that heard no peer in
        # time holds a table of its own for a moment, and a partition picked from it may stay
        # with the old owner (which then never drops it, and anti-entropy is off).
        agreed = wait_for(lambda: agreed_ring(cluster, 4), 30, what="one table on all four shards",
                          show=lambda: rings_held(cluster))
        newcomer = cells(cluster)["spare-01"]
        shard, p = sorted(lost(before, agreed))[0]
        old = {c.me: c for c in cells(cluster).values()}[shard]
        family = next(f for f in (f"only-old/{i}" for i in range(10_000))
                      if before.partition_of(f) == p)
        # a write that reached only the old owner while the partition moved
        old.store.apply(record(family, 5, '"only here"', (shard << 48) + 7))
        wait_for(lambda: settled(cluster, 4), 30)
        after = newcomer.view.ring
        owners = {c.cell_host.name for c in cells(cluster).values() if c.me in after.owners(p)}
        assert set(holders(cluster, family)) == owners and old.cell_host.name not in owners
        assert old.stats.get("drop_check_pushed", 0) >= 1  # the guard, not anti-entropy
        verb, fields = shards.call(f'(select "{family}")')
        assert verb == "selected" and fields["found"] is True and fields["value"] == "only here"
        assert read_everything(shards, FAMILIES) == []


def test_a_shard_that_dropped_a_partition_receives_it_again_in_full_when_it_comes_back(
    tmp_path,
) -> None:
    # Anti-entropy is off: the transfer alone must bring the partition back, from the start.
    with shard_cluster(tmp_path, nodes=NODES, replicas=2, intent=4, anti_entropy_interval=60,
                       drop_interval=0.1) as cluster:
        shards, before = fill_then_add_a_spare(cluster)
        wait_for(lambda: settled(cluster, 4), 30)
        dropped = lost(before, cells(cluster)["spare-01"].view.ring)
        cluster.kill("spare-01")  # its partitions go back to the three
        wait_for(lambda: settled(cluster, 3), 30)
        found = {c.me: c for c in cells(cluster).values()}
        final = found[1].view.ring
        back = [(s, p) for s, p in dropped if s in final.owners(p)]
        assert back  # some shard owns again a partition it dropped
        for shard, p in back:
            expected = {f for f in FAMILIES if final.partition_of(f) == p}
            assert {f for f in expected if found[shard].store.select(f) is not None} == expected
        assert all(len(holders(cluster, f)) == 2 for f in FAMILIES)
        assert read_everything(shards, FAMILIES) == []
        assert roots_agree(cluster)
