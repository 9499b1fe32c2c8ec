"""Durable cells: applying messages against the store's own pipelined inserts, and recovery.

``bench_durable_cell`` tells a durable counter ``n`` messages, at most ``window`` of them
unsettled at a time (a role queue's prefetch), each settled once its record is durable; the
baseline is one writer inserting ``n`` records of the same size with ``window`` in flight,
into the same kind of store, in the same run. ``bench_durable_recovery`` times a durable
cell's start over a family of ``n`` applied messages: the newest snapshot plus the ids of
the tail, as many as its dedup memory holds.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..cell.cell import Cell, Inbound
from ..cell.durable import CellJournal
from ..cell.statemachine import transition
from ..language.symbols import Symbol
from ..store.store import Store
from ..wire.envelope import Message

__all__ = ["bench_durable_cell", "bench_durable_cell_on_shards", "bench_durable_recovery"]


class _DurableCounter(Cell):
    durable = True
    fields = ("count",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.count = 0
        super().__init__(*args, **kwargs)

    @transition("inc")
    def inc(self) -> None:
        self.count += 1


def _store_rate(directory: Path, n: int, window: int, value: bytes) -> float:
    with Store(directory) as store:
        slots = threading.Semaphore(window)

        def durable(receipt: Any, error: BaseException | None) -> None:
            slots.release()

        start = time.perf_counter()
        for _ in range(n):
            slots.acquire()
            store.insert_nowait("cell/bench/counter", value, durable)
        for _ in range(window):
            slots.acquire()
        return n / (time.perf_counter() - start)


def _cell_rate(directory: Path, n: int, window: int) -> float:
    with Store(directory) as store:
        return _rate_of_cell(CellJournal(store), n, window)


def bench_durable_cell(n: int = 20_000, window: int = 256, rounds: int = 3) -> dict[str, Any]:
    """Messages/s a durable cell applies and settles, against the store's pipelined inserts
    of records of the same size; best of ``rounds`` each, taken in turns."""
    value = b'{"id":"m12345","state":"ready","fields":{"count":12345}}'
    store_best = cell_best = 0.0
    with tempfile.TemporaryDirectory(prefix="cellframe-bench-") as tmp:
        for round_ in range(rounds):
            store_best = max(store_best, _store_rate(Path(tmp) / f"s{round_}", n, window, value))
            cell_best = max(cell_best, _cell_rate(Path(tmp) / f"c{round_}", n, window))
    return {"store_pipelined_per_s": round(store_best), "durable_cell_per_s": round(cell_best),
            "ratio": round(cell_best / store_best, 2)}


def bench_durable_recovery(n: int = 100_000) -> dict[str, Any]:
    """Seconds for a durable cell with ``n`` applied messages to start and answer."""
    with tempfile.TemporaryDirectory(prefix="cellframe-bench-") as tmp:
        with Store(Path(tmp), fsync=False) as store:  # the history, written as a cell would
            journal, done = CellJournal(store), threading.Semaphore(0)
            for number in range(n):
                journal.claim("cell/bench", f"m{number}", n)
                journal.record("cell/bench", [f"m{number}"], "ready", {"count": number + 1},
                               lambda error: done.release())
            for _ in range(n):
                done.acquire()
        with Store(Path(tmp)) as store:
            start = time.perf_counter()
            ref = _DurableCounter.start("bench", journal=CellJournal(store),
                                        dedup_capacity=n)
            try:
                count = ref.proxy().count.get(timeout=60)
                seconds = time.perf_counter() - start
            finally:
                ref.stop()
    assert count == n, f"recovered a count of {count}, not {n}"
    return {"applied": n, "recovery_s": round(seconds, 3), "ratio": round(seconds, 3)}


def bench_durable_cell_on_shards(n: int = 20_000, window: int = 256) -> dict[str, Any]:
    """A durable cell whose journal is the shard tier (three shard cells, N=3, W=2, fsync, in
    this process on the embedded transport): messages/s it applies and settles, against the
    same tier's pipelined inserts (``ShardStore``, ``window`` in flight) of records of the same
    size; then the seconds a new cell takes to recover the ``n`` messages from the tier."""
    from ..config.resolvers import ZoneFileResolver
    from ..node.cluster import LocalCluster, wait_for
    from ..node.shard_journal import ShardStore
    from ..roles.registry import RoleRegistry
    from ..roles.shard import ShardCell
    from .replication import restore_zone

    value = b'{"ids":["m12345"],"state":"ready","fields":{"count":12345}}'
    with tempfile.TemporaryDirectory(prefix="cellframe-bench-") as tmp:
        work = Path(tmp)
        registry = RoleRegistry({"shard": [ShardCell.configured(data_dir=str(work / "data"))]})
        cluster = LocalCluster(resolver=ZoneFileResolver(restore_zone(work / "zone", 3,
                                                                      partitions=64)),
                               registry=registry, workdir=work,
                               nodes=["shard-01", "shard-02", "shard-03"])
        cluster.start()
        stores: list[ShardStore] = []

        def store() -> ShardStore:
            stores.append(ShardStore(cluster.broker.connect(name=f"bench-{len(stores)}")))
            return stores[-1]

        try:
            probe = store()
            wait_for(lambda: _takes_a_write(probe), 60, what="the shard tier taking a write")
            slots = threading.Semaphore(window)
            start = time.perf_counter()
            for number in range(n):
                slots.acquire()
                probe.insert_nowait(f"bench/{number % 64}", value,
                                    lambda fields, error: slots.release())
            for _ in range(window):
                slots.acquire()
            tier_rate = n / (time.perf_counter() - start)
            cell_rate = _rate_of_cell(CellJournal(store(), snapshot_every=1_000), n, window,
                                      dedup_capacity=n)
            start = time.perf_counter()
            ref = _DurableCounter.start("bench", journal=CellJournal(store()), dedup_capacity=n)
            try:
                count = ref.proxy().count.get(timeout=120)
                recovery = time.perf_counter() - start
            finally:
                ref.stop()
        finally:
            for each in stores:
                each.close()
            cluster.stop()
    assert count == n, f"recovered a count of {count}, not {n}"
    return {"shard_tier_pipelined_per_s": round(tier_rate), "durable_cell_per_s": round(cell_rate),
            "ratio": round(cell_rate / tier_rate, 2), "applied": n,
            "recovery_s": round(recovery, 3)}


def _takes_a_write(store: Any) -> bool:
    answered: list[BaseException | None] = []
    done = threading.Event()

    def durable(fields: Any, error: BaseException | None) -> None:
        answered.append(error)
        done.set()

    store.insert_nowait("bench/probe", b"1", durable)
    return done.wait(10) and answered[0] is None


def _rate_of_cell(journal: CellJournal, n: int, window: int, **options: Any) -> float:
    """Messages/s a durable counter on ``journal`` applies and settles, ``window`` unsettled."""
    ref = _DurableCounter.start("bench", journal=journal, **options)
    slots = threading.Semaphore(window)
    inc = [Symbol("inc")]
    try:
        start = time.perf_counter()
        for number in range(n):
            slots.acquire()
            ref.tell(Inbound(Message(inc, id=f"m{number}"), slots.release))
        for _ in range(window):
            slots.acquire()
        return n / (time.perf_counter() - start)
    finally:
        ref.stop()
