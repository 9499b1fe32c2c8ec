"""Store benchmarks: durable insert throughput against SQLite, and select latency at scale.

``bench_store_inserts`` runs, in one process and one after the other on the same disk:

* ``bare_fsync``: one thread, one ``write`` + ``fsync`` per record (the disk's floor),
  just before and just after the blocking store; the faster is the bound;
* ``sqlite``: ``writers`` threads, one connection each, WAL mode, ``synchronous=FULL``, one
  transaction per insert (each waits for its own fsync);
* ``rocksdb``: ``writers`` threads putting into one RocksDB (``rocksdict``) with synced
  writes (``WriteOptions.sync``: each put returns once its write-ahead log is fsynced);
* ``lmdb``: ``writers`` threads, one synced write transaction per insert (LMDB has one
  writer at a time: each waits for its own commit);
* ``store_blocking``: ``writers`` threads calling ``Store.insert`` (each waits until its
  record is durable before sending the next: group commit batches across threads);
* ``store_pipelined``: ``writers`` threads each keeping up to ``window`` inserts in flight
  with ``insert_nowait``; a record counts once its durability callback has run.

RocksDB and LMDB are optional (``pip install cellframe[dev]`` brings ``rocksdict`` and
``lmdb``): without them their figures say they were skipped, and why.

Every variant writes the same records (family, time, 100-byte value) and the rate is records
made durable per second of wall-clock time. fsync rates on this shared machine swing by 10x
within minutes (other jobs use the disk), so only figures from the same run compare.

``bench_select`` loads ``n`` records (bulk, without fsync) in a child process and SIGKILLs
it, then opens the store three times and times ``select`` newest and ``select(at=...)`` for
random families and times, one call at a time. ``reopen_crash_s`` is the open after the
crash (the last background checkpoint, and the log written after it: the records it read are
``reopen_crash_tail_records``); ``reopen_scan_s`` an open that reads every record (no
checkpoint), in the same run; ``reopen_s`` an open after a clean close. ``peak_rss_mb`` is
the larger peak resident memory of the two processes: the one that loaded the records and
the one that opened them three times and selected.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..store import Store
from ..store.checkpoint import CHECKPOINT_NAME
from ..store.store import DEFAULT_CHECKPOINT_BYTES

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


def _key(family: str, t: int) -> bytes:
    """A rival's key for a record: family and time, as the store indexes it."""
    return b"%s\0%d" % (family.encode(), t)


def _rocksdb(directory: Path, parts: list[list[tuple[str, int, bytes]]]) -> float | str:
    try:
        import rocksdict
    except ImportError:
        return "skipped: rocksdict is not installed (a dev extra)"
    db = rocksdict.Rdict(str(directory / "rocksdb"), rocksdict.Options(raw_mode=True))
    synced = rocksdict.WriteOptions()
    synced.sync = True
    try:
        def work(w: int) -> None:
            for family, t, value in parts[w]:
                db.put(_key(family, t), value, synced)

        return sum(map(len, parts)) / _run_threads(work, len(parts))
    finally:
        db.close()


def _lmdb(directory: Path, parts: list[list[tuple[str, int, bytes]]]) -> float | str:
    try:
        import lmdb
    except ImportError:
        return "skipped: lmdb is not installed (a dev extra)"
    env = lmdb.open(str(directory / "lmdb"), map_size=1 << 30, sync=True, metasync=True)
    try:
        def work(w: int) -> None:
            for family, t, value in parts[w]:
                with env.begin(write=True) as txn:
                    txn.put(_key(family, t), value)

        return sum(map(len, parts)) / _run_threads(work, len(parts))
    finally:
        env.close()


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


def bench_store_inserts(writers: int = 8, n: int = 8000, *, window: int = 32,
                        rivals: bool = True) -> dict[str, Any]:
    """Durable inserts per second: bare fsync, SQLite, RocksDB, LMDB, and the store
    (blocking, pipelined). ``rivals=False`` leaves out RocksDB and LMDB."""
    parts = _records(n, writers)
    with tempfile.TemporaryDirectory(prefix="cellframe-bench-") as tmp:
        directory = Path(tmp)
        lite = _sqlite(directory, parts)
        rocks = _rocksdb(directory, parts) if rivals else "skipped: not asked for"
        mdb = _lmdb(directory, parts) if rivals else "skipped: not asked for"
        # The disk's fsync rate here swings by 10x within seconds: measured just before and
        # just after the blocking writers, and the faster of the two is the bound.
        bare_runs = [_bare_fsync(directory, min(n, 1000))]
        blocking, blocking_batch = _store_blocking(directory, parts)
        bare_runs.append(_bare_fsync(directory, min(n, 1000)))
        bare = max(bare_runs)
        pipelined, pipelined_batch = _store_pipelined(directory, parts, window)
    figures: dict[str, Any] = {
        "writers": writers,
        "records": n,
        "window": window,
        "bare_fsync_per_s": round(bare),
        "bare_fsync_runs_per_s": [round(rate) for rate in bare_runs],
        "fsync_bound_per_s": round(bare * writers),
        "sqlite_wal_full_per_s": round(lite),
        "store_blocking_per_s": round(blocking),
        "store_blocking_mean_batch": round(blocking_batch, 1),
        "store_pipelined_per_s": round(pipelined),
        "store_pipelined_mean_batch": round(pipelined_batch, 1),
        "blocking_vs_fsync_bound": round(blocking / (bare * writers), 2),
        "blocking_vs_sqlite": round(blocking / lite, 1),
        "pipelined_vs_sqlite": round(pipelined / lite, 1),
    }
    rates = {"sqlite": lite}
    for name, rate in (("rocksdb", rocks), ("lmdb", mdb)):
        if isinstance(rate, str):
            figures[f"{name}_sync_per_s"] = rate
        else:
            figures[f"{name}_sync_per_s"] = round(rate)
            figures[f"blocking_vs_{name}"] = round(blocking / rate, 1)
            rates[name] = rate
    best = max(rates, key=rates.__getitem__)
    figures["best_rival"] = best
    figures["blocking_vs_best_rival"] = round(blocking / rates[best], 2)
    return figures


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000, 1)

    return {"p50_us": at(0.50), "p99_us": at(0.99), "max_us": at(1.0)}


_LOADER = """
import resource, sys
from cellframe.store import Store
directory, n, families, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
value = b"v" * 64
store = Store(directory, fsync=False, checkpoint_bytes=every)
for i in range(n - 1):
    store.insert_nowait(f"family-{i % families}", value, time=i)
store.insert(f"family-{(n - 1) % families}", value, time=n - 1)  # every one before is in
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, flush=True)
sys.stdin.read()  # until killed
"""


def _load_and_kill(directory: str, n: int, families: int) -> tuple[float, int]:
    """Load ``n`` records in a child process without fsync (its checkpoints are written in
    the background as it goes), then SIGKILL it: the files are as a crash leaves them.
    Returns the load's seconds and the child's peak RSS in MB."""
    # the store's default, or less for a small load (a quick run) so it has a checkpoint
    every = min(DEFAULT_CHECKPOINT_BYTES, 16 * n)
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", _LOADER, directory, str(n), str(families),
                              str(every)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        load = time.perf_counter() - start
        if not line.strip().isdigit():
            raise RuntimeError(f"the loading process failed (exit {child.poll()})")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return load, int(line)


_OPENER = """
import json, random, resource, sys, time
from cellframe.store import Store
directory, select, n, families, samples = sys.argv[1], sys.argv[2] == "select", \\
    int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
start = time.perf_counter()
store = Store(directory, fsync=False, checkpoint_bytes=None)
took = time.perf_counter() - start
out = {"s": took, "from": store.opened_from, "read": store.tail_records}
if select:
    rng, newest, as_of = random.Random(1), [], []
    for _ in range(samples):
        family = f"family-{rng.randrange(families)}"
        t0 = time.perf_counter_ns()
        store.select(family)
        t1 = time.perf_counter_ns()
        store.select(family, at=rng.randrange(n))
        t2 = time.perf_counter_ns()
        newest.append(t1 - t0)
        as_of.append(t2 - t1)
    out["newest"], out["as_of"] = newest, as_of
store.close()  # leaves a checkpoint of everything
out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps(out))
"""


def _open_in_child(directory: str, *, select: bool = False, n: int = 0, families: int = 0,
                   samples: int = 0) -> dict[str, Any]:
    """Open the store in a fresh process (its peak RSS is then the open's alone), time it,
    optionally time selects, close it."""
    done = subprocess.run([sys.executable, "-c", _OPENER, directory,
                           "select" if select else "open", str(n), str(families),
                           str(samples)], capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"opening the store failed: {done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def bench_select(n: int = 1_000_000, *, families: int = 10_000,
                 samples: int = 20_000) -> dict[str, Any]:
    """Opening ``n`` records after a crash (SIGKILL) from the last checkpoint and the log
    after it, by a full scan, and after a clean close, each in a process of its own; peak
    memory; then the latency of select newest and select as-of, one call at a time."""
    with tempfile.TemporaryDirectory(prefix="cellframe-bench-") as tmp:
        load, loader_rss = _load_and_kill(tmp, n, families)
        crash = _open_in_child(tmp)  # its close leaves a checkpoint of everything
        kept = os.path.join(tmp, "kept")
        os.rename(os.path.join(tmp, CHECKPOINT_NAME), kept)
        scan = _open_in_child(tmp)
        os.replace(kept, os.path.join(tmp, CHECKPOINT_NAME))
        clean = _open_in_child(tmp, select=True, n=n, families=families, samples=samples)
    opened = (crash["from"], scan["from"], clean["from"])
    if opened != ("checkpoint", "scan", "snapshot"):
        raise RuntimeError(f"opened by {opened}: the benchmark did not measure what it names")
    rss = {"loader": loader_rss, "crash_open": crash["rss_mb"], "scan_open": scan["rss_mb"],
           "clean_open_and_selects": clean["rss_mb"]}
    return {
        "records": n,
        "families": families,
        "peak_rss_mb": max(rss.values()),
        "peak_rss_mb_by_process": rss,
        "load_s": round(load, 1),
        "reopen_crash_s": round(crash["s"], 2),
        "reopen_crash_tail_records": crash["read"],
        "reopen_scan_s": round(scan["s"], 2),
        "reopen_scan_records": scan["read"],
        "reopen_s": round(clean["s"], 2),
        "crash_vs_scan": round(scan["s"] / crash["s"], 1),
        "select_newest": _percentiles(clean["newest"]),
        "select_as_of": _percentiles(clean["as_of"]),
    }


def main() -> None:
    print(json.dumps({"inserts": bench_store_inserts(), "select": bench_select()}, indent=2))


if __name__ == "__main__":
    main()
