"""Store benchmarks: durable insert throughput against SQLite, and select latency at scale.

``bench_store_inserts`` runs, in one process and one after the other on the same disk:

* ``bare_fsync``: one thread, one ``write`` + ``fsync`` per record (the disk's floor);
* ``sqlite``: ``writers`` threads, one connection each, WAL mode, ``synchronous=FULL``, one
  transaction per insert (each waits for its own fsync);
* ``store_blocking``: ``writers`` threads calling ``Store.insert`` (each waits until its
  record is durable before sending the next: group commit batches across threads);
* ``store_pipelined``: ``writers`` threads each keeping up to ``window`` inserts in flight
  with ``insert_nowait``; a record counts once its durability callback has run.

Every variant writes the same records (family, time, 100-byte value) and the rate is records
made durable per second of wall-clock time. fsync rates on this shared machine swing by 10x
within minutes (other jobs use the disk), so only figures from the same run compare.

``bench_select`` loads ``n`` records (bulk, without fsync), reopens the store twice, then
times ``select`` newest and ``select(at=...)`` for random families and times, one call at a
time. ``reopen_scan_s`` is an open after a crash (no index snapshot: every record is read);
``reopen_s`` an open after a clean close, from the index snapshot it left;
``peak_rss_mb`` is the process's peak resident memory.
"""

from __future__ import annotations

import json
import os
import random
import resource
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..store import Store
from ..store.snapshot import SNAPSHOT_NAME

__all__ = ["bench_select", "bench_store_inserts", "main"]

_VALUE = b"v" * 100


def _records(n: int, writers: int) -> list[list[tuple[str, int, bytes]]]:
    """The same records for every variant, split between the writers."""
    return [[(f"family-{w}-{i % 500}", i, _VALUE) for i in range(w, n, writers)]
            for w in range(writers)]


def _run_threads(work: Callable[[int], None], writers: int) -> float:
    """Run ``work(w)`` on ``writers`` threads started together; return the wall time."""
    barrier = threading.Barrier(writers + 1)

    def body(w: int) -> None:
        barrier.wait()
        work(w)

    threads = [threading.Thread(target=body, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def _bare_fsync(directory: Path, n: int) -> float:
    fd = os.open(directory / "bare", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        start = time.perf_counter()
        for _ in range(n):
            os.write(fd, _VALUE)
            os.fsync(fd)
        return n / (time.perf_counter() - start)
    finally:
        os.close(fd)


def _sqlite(directory: Path, parts: list[list[tuple[str, int, bytes]]]) -> float:
    path = directory / "bench.sqlite"
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE records (family TEXT, time INTEGER, value BLOB)")
    setup.commit()
    setup.close()

    def work(w: int) -> None:
        db = sqlite3.connect(path, timeout=60, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")
        for family, t, value in parts[w]:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO records VALUES (?, ?, ?)", (family, t, value))
            db.execute("COMMIT")
        db.close()

    return sum(map(len, parts)) / _run_threads(work, len(parts))


def _store_blocking(directory: Path, parts: list[list[tuple[str, int, bytes]]],
                    ) -> tuple[float, float]:
    with Store(directory / "blocking") as store:
        def work(w: int) -> None:
            for family, t, value in parts[w]:
                store.insert(family, value, time=t)

        rate = sum(map(len, parts)) / _run_threads(work, len(parts))
        return rate, store.stats()["mean_batch"]


def _store_pipelined(directory: Path, parts: list[list[tuple[str, int, bytes]]],
                     window: int) -> tuple[float, float]:
    with Store(directory / "pipelined") as store:
        def work(w: int) -> None:
            slots = threading.Semaphore(window)

            def durable(receipt: Any, error: BaseException | None) -> None:
                slots.release()

            for family, t, value in parts[w]:
                slots.acquire()
                store.insert_nowait(family, value, durable, time=t)
            for _ in range(window):  # wait for the last ones to be durable
                slots.acquire()

        rate = sum(map(len, parts)) / _run_threads(work, len(parts))
        return rate, store.stats()["mean_batch"]


def bench_store_inserts(writers: int = 8, n: int = 8000, *, window: int = 32) -> dict[str, Any]:
    """Durable inserts per second: bare fsync, SQLite, and the store (blocking, pipelined)."""
    parts = _records(n, writers)
    with tempfile.TemporaryDirectory(prefix="cellframe-bench-") as tmp:
        directory = Path(tmp)
        bare = _bare_fsync(directory, min(n, 2000))
        lite = _sqlite(directory, parts)
        blocking, blocking_batch = _store_blocking(directory, parts)
        pipelined, pipelined_batch = _store_pipelined(directory, parts, window)
    return {
        "writers": writers,
        "records": n,
        "window": window,
        "bare_fsync_per_s": round(bare),
        "sqlite_wal_full_per_s": round(lite),
        "store_blocking_per_s": round(blocking),
        "store_blocking_mean_batch": round(blocking_batch, 1),
        "store_pipelined_per_s": round(pipelined),
        "store_pipelined_mean_batch": round(pipelined_batch, 1),
        "blocking_vs_sqlite": round(blocking / lite, 1),
        "pipelined_vs_sqlite": round(pipelined / lite, 1),
    }


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000, 1)

    return {"p50_us": at(0.50), "p99_us": at(0.99), "max_us": at(1.0)}


def _bulk_load(directory: str, n: int, families: int) -> None:
    """Insert ``n`` records without fsync (the store is closed and dropped afterwards)."""
    with Store(directory, fsync=False) as store:
        for i in range(n):
            store.insert_nowait(f"family-{i % families}", _VALUE[:64], time=i)


def bench_select(n: int = 1_000_000, *, families: int = 10_000,
                 samples: int = 20_000) -> dict[str, Any]:
    """Latency of select newest and select as-of with ``n`` records in the store."""
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="cellframe-bench-") as tmp:
        start = time.perf_counter()
        _bulk_load(tmp, n, families)
        load = time.perf_counter() - start
        os.remove(os.path.join(tmp, SNAPSHOT_NAME))  # as after a crash
        start = time.perf_counter()
        with Store(tmp, fsync=False) as store:
            reopen_scan = time.perf_counter() - start
            scanned = store.opened_from
        start = time.perf_counter()
        with Store(tmp, fsync=False) as store:
            reopen = time.perf_counter() - start
            if (scanned, store.opened_from) != ("scan", "snapshot"):
                raise RuntimeError(f"opened by {scanned} then {store.opened_from}: the "
                                   "benchmark did not measure what it names")
            newest, as_of = [], []
            for _ in range(samples):
                family = f"family-{rng.randrange(families)}"
                t0 = time.perf_counter_ns()
                store.select(family)
                t1 = time.perf_counter_ns()
                store.select(family, at=rng.randrange(n))
                t2 = time.perf_counter_ns()
                newest.append(t1 - t0)
                as_of.append(t2 - t1)
    return {
        "records": n,
        "families": families,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "load_s": round(load, 1),
        "reopen_scan_s": round(reopen_scan, 1),
        "reopen_s": round(reopen, 2),
        "select_newest": _percentiles(newest),
        "select_as_of": _percentiles(as_of),
    }


def main() -> None:
    print(json.dumps({"inserts": bench_store_inserts(), "select": bench_select()}, indent=2))


if __name__ == "__main__":
    main()
