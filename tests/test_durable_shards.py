"""A durable cell whose journal is the cluster's shard tier (``shard_journal``): its state lives
on the shard cells' replicated stores, not on its node's disk, so a spare on another node, which
shares no folder with it, resumes it and applies no message twice."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cellframe import Envelope
from cellframe.cell.durable import CellJournal
from cellframe.config.resolvers import ZoneFileResolver
from cellframe.errors import StoreError
from cellframe.language.plist import from_plist
from cellframe.language.reader import read
from cellframe.node.shard_journal import ShardStore, shard_journal
from cellframe.roles.registry import RoleRegistry
from cellframe.roles.shard import ShardCell
from cellframe.testing import running_cluster, wait_for
from cellframe.transports.base import RESENT_HEADER
from tests.cell_support import message
from tests.durable_node import DurableCounter
from tests.replication_support import SHARD_HEALING, converged, shard_cluster, shard_zone


def _zone(path: Path, settings: str = "", spares: int = 1, counters: int = 1) -> Path:
    """Three shard nodes, ``counters`` nodes playing the durable counter, and spares."""
    others = {f"counter-{n:02d}": '"role=counter"' for n in range(1, counters + 1)}
    return shard_zone(path, spares=spares, others=others,
                      extra=f'_cluster    IN TXT  "counter={counters}" {settings}')


def _counter(cluster: Any, name: str) -> DurableCounter | None:
    node = cluster.nodes.get(name)
    cells = [c for c in node.cells().values() if isinstance(c, DurableCounter)] if node else []
    return cells[0] if cells else None


def _count(cluster: Any, name: str) -> int:
    cell = _counter(cluster, name)
    return -1 if cell is None else cell.count


def _live_counter(cluster: Any) -> DurableCounter | None:
    """The durable counter of whichever node plays the role now."""
    return next((c for name in list(cluster.nodes) if (c := _counter(cluster, name))), None)


@pytest.mark.parametrize("shard_lost_too", [False, True],
                         ids=["its-node-lost", "its-node-and-a-shard-lost"])
def test_a_spare_resumes_a_durable_cell_from_the_shard_tier_and_applies_no_message_twice(
        tmp_path: Path, shard_lost_too: bool) -> None:
    shard = ShardCell.configured(data_dir=str(tmp_path / "data"), anti_entropy_interval=0.2,
                                 ring_wait=0.3)
    registry = RoleRegistry({"shard": [shard], "counter": [DurableCounter]})
    rng = random.Random(14)
    ids = [f"inc-{n}" for n in range(400)]
    sends = [i for i in ids for _ in range(rng.randint(1, 3))]
    rng.shuffle(sends)
    zone = _zone(tmp_path / "cluster.zone", spares=2 if shard_lost_too else 1)
    with running_cluster(resolver=ZoneFileResolver(zone), registry=registry,
                         healing=SHARD_HEALING, workdir=tmp_path, journal=shard_journal,
                         ready=lambda c: converged(c, 3) and _counter(c, "counter-01")) as cluster:
        publisher = cluster.broker.connect(name="publisher")
        for message_id in sends[: len(sends) // 2]:
            publisher.publish("role.counter", Envelope(b"(inc)", message_id=message_id),
                              persistent=True)
        wait_for(lambda: _count(cluster, "counter-01") > 100, 30,
                 what="counter-01 counting", show=lambda: _count(cluster, "counter-01"))
        lost = _counter(cluster, "counter-01")
        cluster.kill("counter-01")  # its disk holds nothing of the counter: there is none
        if shard_lost_too:  # W = R = 2 of the two replicas left, until a spare takes it
            cluster.kill("shard-03")
        for message_id in sends[len(sends) // 2:]:
            publisher.publish("role.counter", Envelope(b"(inc)", message_id=message_id),
                              persistent=True)
        wait_for(lambda: getattr(_live_counter(cluster), "count", -1) == len(ids), 90,
                 what=f"a spare counting {len(ids)} distinct messages",
                 show=lambda: (getattr(_live_counter(cluster), "count", -1), cluster.roles()))
        spare = _live_counter(cluster)
        assert lost is not None and spare is not None and spare is not lost
        # it resumed what counter-01 recorded: it applied only the rest itself
        assert 0 < spare.cell_counters.applied < len(ids)
        assert spare.cell_counters.duplicates > 0  # copies of what was applied before it
        assert spare.count == len(ids)  # nothing more arrived meanwhile
        assert not any((tmp_path / name).exists() for name in ("counter-01", "spare-01", "spare-02"))


def test_dns_durable_journal_shards_puts_a_durable_cells_records_on_every_replica(tmp_path: Path) -> None:
    shard = ShardCell.configured(data_dir=str(tmp_path / "data"), anti_entropy_interval=0.2,
                                 ring_wait=0.3)
    registry = RoleRegistry({"shard": [shard], "counter": [DurableCounter]})
    zone = _zone(tmp_path / "cluster.zone", '"durable.journal=shards"')  # no journal given
    with running_cluster(resolver=ZoneFileResolver(zone), registry=registry,
                         healing=SHARD_HEALING, workdir=tmp_path,
                         nodes=["shard-01", "shard-02", "shard-03", "counter-01"],
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
    store = ShardStore(wire.connect(), target="role.nobody-plays-this", timeout=0.3,
                       patience=0.5)
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


def _recorded_ids(store: ShardStore, family: str) -> Counter[str]:
    """How many records of ``family`` name each message id."""
    return Counter(i for record in store.select_history(family)
                   for i in json.loads(record.value)["ids"])


def test_a_message_a_dead_instance_recorded_is_not_applied_again_by_the_live_one(
        tmp_path: Path) -> None:
    """Two live instances of a durable role share its family on the shard tier. counter-01 is
    killed mid-stream: what it applied and recorded, but had not acknowledged, comes back to
    the role queue marked redelivered, and membership soon says counter-01 is down, so
    counter-02 no longer asks it. It reads the role's records on the shard tier instead."""
    shard = ShardCell.configured(data_dir=str(tmp_path / "data"), anti_entropy_interval=0.2,
                                 ring_wait=0.3)
    registry = RoleRegistry({"shard": [shard], "counter": [DurableCounter]})
    _zone(tmp_path / "cluster.zone", spares=0, counters=2)
    ids = [f"inc-{n}" for n in range(1500)]
    with running_cluster(resolver=ZoneFileResolver(tmp_path / "cluster.zone"), registry=registry,
                         healing=SHARD_HEALING, workdir=tmp_path, journal=shard_journal,
                         ready=lambda c: converged(c, 3) and _counter(c, "counter-01")
                         and _counter(c, "counter-02")) as cluster:
        publisher = cluster.broker.connect(name="publisher")
        for message_id in ids:
            publisher.publish("role.counter", Envelope(b"(inc)", message_id=message_id),
                              persistent=True)
        wait_for(lambda: _count(cluster, "counter-01") > 150, 30, what="counter-01 counting",
                 show=lambda: _count(cluster, "counter-01"))
        cluster.kill("counter-01")
        survivor = _counter(cluster, "counter-02")
        assert survivor is not None
        family = CellJournal.family_for("counter-02", "counter", "DurableCounter")
        store = ShardStore(cluster.broker.connect(name="reader"))
        try:
            wait_for(lambda: set(_recorded_ids(store, family)) == set(ids), 60,
                     what="every id recorded by one instance or the other",
                     show=lambda: len(_recorded_ids(store, family)))
            twice = {i: n for i, n in _recorded_ids(store, family).items() if n > 1}
            assert twice == {}, f"{len(twice)} ids recorded twice, e.g. {sorted(twice)[:5]}"
            assert survivor.cell_counters.duplicates > 0  # it found some of those records
        finally:
            store.close()


def test_on_the_shard_tier_a_snapshot_keeps_its_ids_in_chunks_and_recovery_reads_them_all(
        tmp_path: Path) -> None:
    """Ids long enough that a snapshot's do not fit one record: each snapshot writes the ids
    recorded since the last one, in chunks, and names the chunks of earlier snapshots that
    hold the rest of the ids its cell remembers."""
    ids = [f"{n:04d}-" + "x" * 600 for n in range(400)]
    family = CellJournal.family_for("c", "counter", "DurableCounter")
    with shard_cluster(tmp_path) as cluster:
        stores = [ShardStore(cluster.broker.connect(name=f"journal-{n}")) for n in range(2)]
        try:
            cell = DurableCounter.start("c", journal=CellJournal(stores[0], snapshot_every=40),
                                        dedup_capacity=300)

            def head() -> dict[str, Any]:
                found = stores[1].select(family + "/snapshot")
                return json.loads(found.value) if found is not None else {}

            for batch in range(40, len(ids) + 1, 40):  # each batch ends with a snapshot
                for message_id in ids[batch - 40:batch]:
                    cell.tell(message("(inc)", id=message_id))
                wait_for(lambda batch=batch: head().get("fields") == {"count": batch}, 30,
                         what=f"the snapshot at {batch}", show=head)
            cell.stop()
            refs = head()["refs"]
            assert len(refs) > 1 and all(chunks >= 2 for _, chunks, _ in refs), refs
            assert 300 <= sum(count for _, _, count in refs) < len(ids)  # only what is kept
            state, fields, recovered = CellJournal(stores[1]).recover(family, 300)
            assert (state, fields, recovered) == ("ready", {"count": len(ids)}, ids[-300:])
        finally:
            for store in stores:
                store.close()


def test_a_copy_marked_resent_is_looked_for_in_the_role_records_and_a_plain_one_is_not(
        tmp_path: Path) -> None:
    """Another instance of the role recorded two message ids on the shard tier. A first
    delivery of one is applied without a look (the check is paid only where another copy may
    have come first); a copy of the other that its publisher marked as sent again
    (``RESENT_HEADER``) is found there and not applied."""
    shard = ShardCell.configured(data_dir=str(tmp_path / "data"), anti_entropy_interval=0.2,
                                 ring_wait=0.3)
    registry = RoleRegistry({"shard": [shard], "counter": [DurableCounter]})
    zone = _zone(tmp_path / "cluster.zone")
    with running_cluster(resolver=ZoneFileResolver(zone), registry=registry,
                         healing=SHARD_HEALING, workdir=tmp_path, journal=shard_journal,
                         nodes=["shard-01", "shard-02", "shard-03", "counter-01"],
                         ready=lambda c: converged(c, 3) and _counter(c, "counter-01")) as cluster:
        counter = _counter(cluster, "counter-01")
        assert counter is not None
        assert counter.actor_ref.proxy().count.get(timeout=60) == 0  # it has recovered
        family = CellJournal.family_for("counter-01", "counter", "DurableCounter")
        store = ShardStore(cluster.broker.connect(name="the-other-instance"))
        try:
            recorded: list[BaseException | None] = []
            body = json.dumps({"ids": ["resent-1", "plain-1"], "state": "ready",
                               "fields": {"count": 2}}).encode()
            store.insert_nowait(family, body, lambda fields, error: recorded.append(error),
                                time=time.time_ns() // 1000)
            wait_for(lambda: recorded == [None], 30, what="the other instance's record")
        finally:
            store.close()
        publisher = cluster.broker.connect(name="publisher")
        publisher.publish("role.counter", Envelope(b"(inc)", message_id="plain-1"),
                          persistent=True)
        wait_for(lambda: counter.cell_counters.received == 1, 30, what="the plain one",
                 show=lambda: counter.cell_counters.as_dict())
        assert counter.count == 1  # applied: it read nothing first
        publisher.publish("role.counter", Envelope(b"(inc)", message_id="resent-1",
                                                   headers={RESENT_HEADER: "1"}), persistent=True)
        wait_for(lambda: counter.cell_counters.received == 2, 30, what="the resent one",
                 show=lambda: counter.cell_counters.as_dict())
        assert (counter.count, counter.cell_counters.duplicates) == (1, 1)


def test_a_durable_cell_recovers_whole_after_the_shard_tier_compacts_by_newest(
        tmp_path: Path) -> None:
    """``shard.retention=newest=N`` with N at least what a recovery reads (the records after
    the last snapshot, the chunks it names): the compaction drops older records and chunks,
    and a recovery still gives the whole state and every id the cell remembers."""
    ids = [f"{n:04d}-" + "x" * 600 for n in range(800)]
    family = CellJournal.family_for("c", "counter", "DurableCounter")
    with shard_cluster(tmp_path, retention="newest=20") as cluster:
        stores = [ShardStore(cluster.broker.connect(name=f"journal-{n}")) for n in range(2)]
        try:
            cell = DurableCounter.start("c", journal=CellJournal(stores[0], snapshot_every=40),
                                        dedup_capacity=300)
            for batch in range(40, len(ids) + 1, 40):  # each batch ends with a snapshot
                for message_id in ids[batch - 40:batch]:
                    cell.tell(message("(inc)", id=message_id))
                wait_for(lambda batch=batch: _snapshot_count(stores[1], family) == batch, 30,
                         what=f"the snapshot at {batch}")
            cell.stop()
            records_before = len(stores[1].select_history(family))
            client = cluster.client()
            request = client.send("each.shard", read("(compact)"))
            wait_for(lambda: len(_compacted(client, request)) == 3, 30, what="three compactions")
            assert sum(r["dropped"] for r in _compacted(client, request)) > 0
            assert len(stores[1].select_history(family)) < records_before
            state, fields, recovered = CellJournal(stores[1]).recover(family, 300)
            assert (state, fields, recovered) == ("ready", {"count": len(ids)}, ids[-300:])
        finally:
            for store in stores:
                store.close()


def _snapshot_count(store: ShardStore, family: str) -> int | None:
    found = store.select(family + "/snapshot")
    return json.loads(found.value)["fields"]["count"] if found is not None else None


def _compacted(client: Any, request: str) -> list[dict[str, Any]]:
    return [from_plist(r.expr[1:]) for r in list(client.replies)
            if r.expr and str(r.expr[0]) == "compacted"
            and from_plist(r.expr[1:]).get("request") == request]
