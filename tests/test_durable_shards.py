"""A durable cell whose journal is the cluster's shard tier (``shard_journal``): its state lives
on the shard cells' replicated stores, not on its node's disk, so a spare on another node, which
shares no folder with it, resumes it and applies no message twice."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from cellframe import Envelope
from cellframe.cell.durable import CellJournal
from cellframe.config.resolvers import ZoneFileResolver
from cellframe.errors import StoreError
from cellframe.node.shard_journal import ShardStore, shard_journal
from cellframe.roles.registry import RoleRegistry
from cellframe.roles.shard import ShardCell
from cellframe.testing import running_cluster, wait_for
from tests.durable_node import DurableCounter
from tests.replication_support import SHARD_HEALING, converged


def _zone(path: Path) -> Path:
    path.write_text("""$ORIGIN cluster.test.
$TTL 5
@           IN SOA  ns.cluster.test. hostmaster.cluster.test. ( 1 60 30 600 5 )
            IN NS   ns
ns          IN A    127.0.0.1
_cluster    IN TXT  "shard=3" "counter=1" "spares=spare-01" "replicas=3"
_cluster    IN TXT  "heartbeat-ms=50" "failure-timeout-ms=500"
_cluster    IN TXT  "shard.partitions=16" "shard.fsync=false"
_nodes      IN TXT  "shard-01 shard-02 shard-03 counter-01 spare-01"
shard-01    IN TXT  "role=shard" "shard-id=1"
shard-02    IN TXT  "role=shard" "shard-id=2"
shard-03    IN TXT  "role=shard" "shard-id=3"
counter-01  IN TXT  "role=counter"
spare-01    IN TXT  "rack=r1"
""", encoding="utf-8")
    return path


def _counter(cluster: Any, name: str) -> DurableCounter | None:
    node = cluster.nodes.get(name)
    cells = [c for c in node.cells().values() if isinstance(c, DurableCounter)] if node else []
    return cells[0] if cells else None


def _count(cluster: Any, name: str) -> int:
    cell = _counter(cluster, name)
    return -1 if cell is None else cell.count


def test_a_spare_resumes_a_durable_cell_from_the_shard_tier_and_applies_no_message_twice(
        tmp_path: Path) -> None:
    shard = ShardCell.configured(data_dir=str(tmp_path / "data"), anti_entropy_interval=0.2,
                                 ring_wait=0.3)
    registry = RoleRegistry({"shard": [shard], "counter": [DurableCounter]})
    rng = random.Random(14)
    ids = [f"inc-{n}" for n in range(400)]
    sends = [i for i in ids for _ in range(rng.randint(1, 3))]
    rng.shuffle(sends)
    with running_cluster(resolver=ZoneFileResolver(_zone(tmp_path / "cluster.zone")),
                         registry=registry, healing=SHARD_HEALING, workdir=tmp_path,
                         journal=shard_journal,
                         ready=lambda c: converged(c, 3) and _counter(c, "counter-01")) as cluster:
        publisher = cluster.broker.connect(name="publisher")
        for message_id in sends[: len(sends) // 2]:
            publisher.publish("role.counter", Envelope(b"(inc)", message_id=message_id),
                              persistent=True)
        wait_for(lambda: _count(cluster, "counter-01") > 100, 30,
                 what="counter-01 counting", show=lambda: _count(cluster, "counter-01"))
        lost = _counter(cluster, "counter-01")
        cluster.kill("counter-01")  # its disk holds nothing of the counter: there is none
        for message_id in sends[len(sends) // 2:]:
            publisher.publish("role.counter", Envelope(b"(inc)", message_id=message_id),
                              persistent=True)
        wait_for(lambda: _count(cluster, "spare-01") == len(ids), 60,
                 what=f"the spare counting {len(ids)} distinct messages",
                 show=lambda: (_count(cluster, "spare-01"), cluster.roles()))
        spare = _counter(cluster, "spare-01")
        assert lost is not None and spare is not None
        # it resumed what counter-01 recorded: it applied only the rest itself
        assert 0 < spare.cell_counters.applied < len(ids)
        assert spare.cell_counters.duplicates > 0  # copies of what was applied before it
        assert _count(cluster, "spare-01") == len(ids)  # nothing more arrived meanwhile
        assert not (tmp_path / "counter-01").exists() and not (tmp_path / "spare-01").exists()


def test_a_durable_cells_records_are_on_every_replica_of_the_shard_tier(tmp_path: Path) -> None:
    shard = ShardCell.configured(data_dir=str(tmp_path / "data"), anti_entropy_interval=0.2,
                                 ring_wait=0.3)
    registry = RoleRegistry({"shard": [shard], "counter": [DurableCounter]})
    with running_cluster(resolver=ZoneFileResolver(_zone(tmp_path / "cluster.zone")),
                         registry=registry, healing=SHARD_HEALING, workdir=tmp_path,
                         journal=shard_journal, nodes=["shard-01", "shard-02", "shard-03",
                                                       "counter-01"],
                         ready=lambda c: converged(c, 3) and _counter(c, "counter-01")) as cluster:
        client = cluster.client()
        for _ in range(5):
            client.send("role.counter", "(inc)")
        wait_for(lambda: _count(cluster, "counter-01") == 5, 30, what="a count of 5",
                 show=lambda: _count(cluster, "counter-01"))
        family = CellJournal.family_for("counter-01", "counter", "DurableCounter")

        def holders() -> list[str]:
            return sorted(name for name, node in cluster.nodes.items()
                          for cell in node.cells().values()
                          if isinstance(cell, ShardCell) and cell.store is not None
                          and cell.store.select(family) is not None)

        wait_for(lambda: holders() == ["shard-01", "shard-02", "shard-03"], 30,
                 what="the counter's records on all three replicas", show=holders)
        store = ShardStore(cluster.broker.connect(name="reader"))
        try:
            newest = store.select(family)
            assert newest is not None and '"count":5' in newest.value
        finally:
            store.close()


def test_a_shard_store_with_no_shard_tier_fails_its_calls_with_a_clear_error(wire) -> None:
    store = ShardStore(wire.connect(), target="role.nobody-plays-this", timeout=0.3)
    errors: list[BaseException | None] = []
    try:
        store.insert_nowait("cell/x", b'{"ids":[]}', lambda fields, error: errors.append(error),
                            time=1)
        with pytest.raises(StoreError, match="no shard cell answered select"):
            store.select("cell/x")
        wait_for(lambda: errors, 5, what="the insert's time-out")
        assert isinstance(errors[0], StoreError) and "no shard cell answered" in str(errors[0])
        with pytest.raises(StoreError, match="at most"):
            store.insert_nowait("cell/x", b"x" * (store.max_value_bytes + 1), time=2)
    finally:
        store.close()
