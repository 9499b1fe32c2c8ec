"""Store benchmarks: durable insert throughput against SQLite, and select latency at scale.

``bench_store_inserts`` runs, in one process and one after the other on the same disk:

* ``bare_fsync``: one thread, one ``write`` + ``fsync`` per record (the disk's floor);
* ``sqlite``: ``writers`` threads, one connection each, WAL mode, ``synchronous=FULL``, one
  transaction per insert (each waits for its own fsync);
* ``rocksdb``: ``writers`` threads putting into one RocksDB (``rocksdict``) with synced
  writes (``WriteOptions.sync``: each put returns once its write-ahead log is fsynced);
* ``lmdb``: ``writers`` threads, one synced write transaction per insert (LMDB has one
  writer at a time: each waits for its own commit);
* ``store_blocking``: ``writers`` threads calling ``Store.insert`` (each waits until its
  record is durable before sending the next: group commit batches across threads);
* ``handoff_ceiling``: ``writers`` blocking threads and one committer with no store code
  at all (``_handoff_ceiling``): what thread wake-ups leave to blocking writers here, woken
  as the store wakes them (one lock each waiter takes and hands on);
* ``handoff_ceiling_each``: the same, each writer on its own lock, all released by the
  committer: higher with no store code, slower in the store (docs/data.md says by how much);
* ``store_pipelined``: ``writers`` threads each keeping up to ``window`` inserts in flight
  with ``insert_nowait``; a record counts once its durability callback has run.

RocksDB and LMDB are optional (``pip install cellframe[dev]`` brings ``rocksdict`` and
``lmdb``): without them their figures say they were skipped, and why.

The bare fsync, the blocking store and the hand-over ceiling are taken in turns, four rounds
of a quarter of the records each, and their medians and the medians of each round's ratios
are reported: the shared disk's fsync rate swings by 10x within seconds.

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
import statistics
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


def _handoff_ceiling(directory: Path, writers: int, n: int, *, each: bool = False,
                     sync: bool = True) -> float:
    """What ``writers`` blocking threads reach with no store at all: each hands a 180-byte
    record to one committer thread and waits on a raw lock, the committer writes all that is
    queued with one ``pwritev(RWF_DSYNC)`` into a preallocated file (what the store does,
    without its Python), after waiting up to 2 ms for the batch to be as large as the last.
    The ceiling thread wake-ups and GIL hand-overs leave to blocking writers here.

    The writers of a batch wait on one lock that each takes and hands on, as the store's do;
    ``each``: each writer waits on its own lock, and the committer releases them all.
    ``sync=False`` writes without syncing: what the hand-overs alone cost."""
    fd = os.open(directory / f"ceiling-{each}-{sync}", os.O_RDWR | os.O_CREAT, 0o644)
    flags = getattr(os, "RWF_DSYNC", 0) if sync else 0
    os.posix_fallocate(fd, 0, 256 * n + 4096)
    os.fsync(fd)
    cond = threading.Condition()
    state: dict[str, Any] = {"open": [], "gate": _closed_gate(), "gates": [], "stop": False}

    def committer() -> None:
        offset, previous = 0, 0
        while True:
            with cond:
                while not state["open"] and not state["stop"]:
                    cond.wait()
                if not state["open"]:
                    return
                deadline = time.monotonic() + 0.002
                while len(state["open"]) < previous and time.monotonic() < deadline:
                    cond.wait(0.0002)
                items, gate, gates = state["open"], state["gate"], state["gates"]
                state["open"], state["gate"], state["gates"] = [], _closed_gate(), []
            previous = len(items)
            data = b"".join(items)
            os.pwritev(fd, [data], offset, flags)
            offset += len(data)
            for waiter in gates if each else (gate,):
                waiter.release()

    def work(w: int) -> None:
        own = _closed_gate()
        for _ in range(w, n, writers):
            with cond:
                state["open"].append(_VALUE + _VALUE[:80])
                gate = state["gate"]
                if each:
                    state["gates"].append(own)
                cond.notify()
            if each:
                own.acquire()
            else:
                gate.acquire()
                gate.release()

    thread = threading.Thread(target=committer)
    thread.start()
    try:
        return n / _run_threads(work, writers)
    finally:
        with cond:
            state["stop"] = True
            cond.notify()
        thread.join()
        os.close(fd)


def _closed_gate() -> threading.Lock:
    gate = threading.Lock()
    gate.acquire()
    return gate


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
    with Store(directory) as store:
        def work(w: int) -> None:
            for family, t, value in parts[w]:
                store.insert(family, value, time=t)

        rate = sum(map(len, parts)) / _run_threads(work, len(parts))
        return rate, store.stats()["mean_batch"]


def _in_turns(directory: Path, parts: list[list[tuple[str, int, bytes]]], rounds: int,
              rivals: bool) -> dict[str, Any]:
    """Every variant whose writers wait for each insert, taken in turns over ``rounds``
    rounds of a share of the records each: the shared disk's fsync rate swings by 10x within
    seconds, so each round's ratios come from figures measured seconds apart. The medians
    are reported, with every round's figure."""
    writers, n = len(parts), sum(map(len, parts))
    runs: dict[str, list[float]] = {}
    batches = []
    for r in range(rounds):
        chunk = [part[r::rounds] for part in parts]
        here = directory / f"round-{r}"
        here.mkdir()
        turn: dict[str, float | str] = {
            "bare_fsync": _bare_fsync(here, max(200, n // (4 * rounds))),
            "sqlite_wal_full": _sqlite(here, chunk),
            "rocksdb_sync": _rocksdb(here, chunk) if rivals else "skipped: not asked for",
            "lmdb_sync": _lmdb(here, chunk) if rivals else "skipped: not asked for",
            "handoff_ceiling": _handoff_ceiling(here, writers, n // rounds),
            "handoff_ceiling_each": _handoff_ceiling(here, writers, n // rounds, each=True),
            "handoff_unsynced": _handoff_ceiling(here, writers, n // rounds, sync=False),
        }
        turn["store_blocking"], batch = _store_blocking(here / "store", chunk)
        batches.append(batch)
        for name, rate in turn.items():
            if isinstance(rate, str):
                runs[name] = rate  # type: ignore[assignment]
            else:
                runs.setdefault(name, []).append(rate)
    figures: dict[str, Any] = {"store_blocking_mean_batch": round(statistics.mean(batches), 1)}
    for name, rates in runs.items():
        if isinstance(rates, str):
            figures[f"{name}_per_s"] = rates
            continue
        figures[f"{name}_per_s"] = round(statistics.median(rates))
        figures[f"{name}_runs_per_s"] = [round(rate) for rate in rates]
    blocking = runs["store_blocking"]
    bound = [rate * writers for rate in runs["bare_fsync"]]
    figures["fsync_bound_per_s"] = round(statistics.median(bound))

    def ratio(top: list[float], bottom: list[float]) -> float:
        return round(statistics.median(a / b for a, b in zip(top, bottom, strict=True)), 2)

    figures["blocking_vs_fsync_bound"] = ratio(blocking, bound)
    figures["handoff_ceiling_vs_fsync_bound"] = ratio(runs["handoff_ceiling"], bound)
    figures["blocking_vs_handoff_ceiling"] = ratio(blocking, runs["handoff_ceiling"])
    figures["handoff_ceiling_each_vs_fsync_bound"] = ratio(runs["handoff_ceiling_each"], bound)
    # Blocking writers' next records come only after the sync that woke them, so a cycle is
    # one fsync (f, from the bare rate) plus one hand-over per writer (c, the time a record
    # of the unsynced hand-over): w writers reach at most w / (f + w c), f / (f + w c) of the
    # fsync bound w / f. The hand-over ceiling lands near it; the store's Python comes on top.
    figures["serial_handoff_bound_vs_fsync_bound"] = round(statistics.median(
        1 / (1 + writers * fsync / unsynced)
        for fsync, unsynced in zip(runs["bare_fsync"], runs["handoff_unsynced"], strict=True)), 2)
    rivals_run = [name for name in ("sqlite_wal_full", "rocksdb_sync", "lmdb_sync")
                  if isinstance(runs[name], list)]
    for name in rivals_run:
        figures[f"blocking_vs_{name.split('_')[0]}"] = ratio(blocking, runs[name])
    # against the fastest rival of each round
    fastest = [max(runs[name][r] for name in rivals_run) for r in range(rounds)]
    figures["blocking_vs_best_rival"] = ratio(blocking, fastest)
    return figures


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
        figures = _in_turns(directory, parts, 4, rivals)
        pipelined, pipelined_batch = _store_pipelined(directory, parts, window)
    lite = figures["sqlite_wal_full_per_s"]
    return {
        "writers": writers,
        "records": n,
        "window": window,
        **figures,
        "store_pipelined_per_s": round(pipelined),
        "store_pipelined_mean_batch": round(pipelined_batch, 1),
        "pipelined_vs_sqlite": round(pipelined / lite, 1),
    }


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000, 1)

    return {"p50_us": at(0.50), "p99_us": at(0.99), "max_us": at(1.0)}


_LOADER = """
import os, resource, sys, time
from cellframe.store import Store
directory, stage, first, last, families, every = sys.argv[1], sys.argv[2], \\
    *map(int, sys.argv[3:])
value = b"v" * 64
store = Store(directory, fsync=False, checkpoint_bytes=every if stage == "bulk" else None)
for i in range(first, last - 1):
    store.insert_nowait(f"family-{i % families}", value, time=i)
store.insert(f"family-{(last - 1) % families}", value, time=last - 1)  # all before are in
if stage == "bulk":  # wait for a checkpoint written in the background, and the thread idle
    deadline = time.monotonic() + 120
    while not ((status := store.checkpoint_status())["written"] and status["idle"]):
        if time.monotonic() > deadline:
            sys.exit(f"no checkpoint within 120 s of the load: {status}")
        time.sleep(0.01)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, flush=True)
if stage == "bulk":
    os._exit(0)  # no close, no last checkpoint: as a crash leaves the files
sys.stdin.read()  # until killed
"""


def _load_and_kill(directory: str, n: int, families: int) -> tuple[float, int]:
    """Load ``n`` records without fsync, in two child processes, and leave the files as a
    crash leaves them. Returns the load's seconds and the children's peak RSS in MB.

    The first loads nine tenths with checkpoints written in the background, waits for one to
    be written, and ends without closing the store. The second opens it with no background
    checkpoints, adds the last tenth and is killed (SIGKILL). So an open after it scans at
    least that tenth past the last checkpoint: more than the log a checkpoint is written
    after (8 MiB, about 64,000 records at a million), as when a crash comes just before the
    next one was due. Killed as soon as the load ended, one process could leave a tail of
    anything from none to two checkpoints' worth, and under load no checkpoint at all."""
    # the store's default, or less for a small load (a quick run) so it has a checkpoint
    every = min(DEFAULT_CHECKPOINT_BYTES, 16 * n)
    split = n - n // 10
    start = time.perf_counter()
    peak = 0
    for stage, first, last in (("bulk", 0, split), ("tail", split, n)):
        child = subprocess.Popen([sys.executable, "-c", _LOADER, directory, stage, str(first),
                                  str(last), str(families), str(every)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            if not line.strip().isdigit():
                raise RuntimeError(f"the {stage} loading process failed (exit {child.wait()})")
            peak = max(peak, int(line))
            if stage == "bulk" and child.wait(120):
                raise RuntimeError(f"the bulk loading process failed (exit {child.returncode})")
        finally:
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
                child.wait()
    return time.perf_counter() - start, peak


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
