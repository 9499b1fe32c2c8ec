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

__all__ = ["bench_durable_cell", "bench_durable_recovery"]


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
        ref = _DurableCounter.start("bench", journal=CellJournal(store))
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
