"""The append-only store: insert and select, dedup, durability, group commit, replication."""

from __future__ import annotations

import hashlib
import re
import signal
import struct
import threading
import time as clock
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe.errors import StoreError
from cellframe.store import Receipt, Record, Store, content_digest, pack, unpack
from cellframe.store.commit import GroupCommitter
from cellframe.store.guid import decode
from cellframe.testing import wait_for
from tests.store_support import read_lines_until, spawn_python

DOC = Path(__file__).resolve().parent.parent / "docs" / "data.md"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "s", partitions=64, fsync=False) as s:
        yield s


def test_select_gives_newest_as_of_and_history(store: Store) -> None:
    for t, v in [(10, b"a"), (30, b"c"), (20, b"b")]:  # out of time order on purpose
        store.insert("k", v, time=t)
    assert store.select("k").value == b"c"
    assert store.select("k", at=25).value == b"b"
    assert store.select("k", at=20).value == b"b"
    assert store.select("k", at=9) is None
    assert [r.value for r in store.select_history("k")] == [b"a", b"b", b"c"]
    assert [r.time for r in store.select_history("k", since=15, until=30)] == [20, 30]
    assert store.select("unknown") is None and store.select_history("unknown") == []


def test_identical_content_is_stored_once_and_returns_the_same_receipt(store: Store) -> None:
    first = store.insert("k", b"v", time=5)
    again = store.insert("k", b"v", time=5)
    assert again == first and isinstance(first, Receipt)
    assert len(store.select_history("k")) == 1
    other = store.insert("k", b"v", time=6)
    assert other.guid != first.guid and other.sequence == first.sequence + 1


def test_equal_times_order_the_same_way_on_every_replica(tmp_path: Path) -> None:
    values = [b"x", b"y", b"z"]
    histories, newest = [], []
    for name, order in (("one", values), ("two", values[::-1])):
        with Store(tmp_path / name, partitions=8, fsync=False) as s:
            for v in order:
                s.insert("k", v, time=7)
            histories.append([r.value for r in s.select_history("k")])
            newest.append(s.select("k").value)
    assert histories[0] == histories[1] and sorted(histories[0]) == values
    assert newest[0] == newest[1] == histories[0][-1]


def test_records_survive_reopening(tmp_path: Path) -> None:
    with Store(tmp_path, partitions=16) as s:
        receipts = [s.insert(f"f{i % 3}", b"%d" % i, time=i) for i in range(30)]
    with Store(tmp_path, partitions=16) as s:
        assert s.select("f0").value == b"27"
        assert {r.guid for f in ("f0", "f1", "f2") for r in s.select_history(f)} == {
            r.guid for r in receipts}
        later = s.insert("f0", b"later")
        assert later.sequence > max(r.sequence for r in receipts if r.partition == later.partition)
        assert later.guid > max(r.guid for r in receipts)


def test_bad_input_is_refused_and_the_store_stays_usable(store: Store) -> None:
    with pytest.raises(TypeError):
        store.insert(42, b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.insert("k", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.insert("k", b"v", time=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.insert("", b"v")
    with pytest.raises(ValueError):
        store.insert("k", b"v", time=1 << 63)
    assert store.insert("k", b"fine").sequence == 1


def test_one_open_store_per_directory(tmp_path: Path) -> None:
    with Store(tmp_path, partitions=8, fsync=False):
        with pytest.raises(StoreError, match="already open"):
            Store(tmp_path, partitions=8)
    Store(tmp_path, partitions=8).close()


def test_reopening_with_another_partition_count_is_refused(tmp_path: Path) -> None:
    Store(tmp_path, partitions=8, fsync=False).close()
    with pytest.raises(StoreError, match="partitions"):
        Store(tmp_path, partitions=16)


def test_closed_store_refuses_inserts(tmp_path: Path) -> None:
    s = Store(tmp_path, partitions=8, fsync=False)
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.insert("k", b"v")


def test_concurrent_inserts_share_fsyncs_and_all_land(tmp_path: Path) -> None:
    s = Store(tmp_path, partitions=64)  # real fsync
    barrier = threading.Barrier(8)
    receipts: list[list[Receipt]] = [[] for _ in range(8)]

    def writer(w: int) -> None:
        barrier.wait()
        receipts[w] = [s.insert(f"w{w}", b"%d" % i, time=i) for i in range(40)]

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = s.stats()
    s.close()
    assert stats["records"] == 320
    assert stats["batches"] < 320  # group commit: fewer fsyncs than records
    with Store(tmp_path, partitions=64) as again:
        for w in range(8):
            assert [r.guid for r in again.select_history(f"w{w}")] == [r.guid for r in receipts[w]]


def test_a_lone_record_after_a_group_waits_about_one_write_not_the_whole_linger() -> None:
    """The sync thread sleeps until as many records as the last batch held are in, but only
    about as long as the linger would last (the last write's time and the wait for its first
    record): a writer left alone is not held for the group that is gone."""
    committer = GroupCommitter(lambda batch: clock.sleep(0.002), lambda batch, written: None,
                               max_batch_bytes=1 << 20, linger=1.0)
    try:
        barrier = threading.Barrier(8)

        def writer() -> None:
            barrier.wait()
            for i in range(5):
                committer.submit(i, 1).wait()

        threads = [threading.Thread(target=writer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        start = clock.monotonic()
        committer.submit("alone", 1).wait()
        assert clock.monotonic() - start < 0.5  # far below the linger of 1 s
    finally:
        committer.close()


def test_insert_nowait_calls_back_once_durable(tmp_path: Path) -> None:
    done: list[tuple[Receipt, BaseException | None]] = []
    with Store(tmp_path, partitions=8) as s:
        receipt = s.insert_nowait("k", b"v", lambda r, e: done.append((r, e)), time=3)
        wait_for(lambda: done, 30)
        assert done == [(receipt, None)]
        assert s.select("k").guid == receipt.guid
        again = s.insert_nowait("k", b"v", lambda r, e: done.append((r, e)), time=3)
        assert again == receipt and done[-1] == (receipt, None)  # already durable: at once


def test_a_killed_writer_loses_no_acknowledged_record(tmp_path: Path) -> None:
    child = spawn_python("""
        import sys
        from cellframe.store import Store
        store = Store(sys.argv[1], partitions=64)
        i = 0
        while True:
            r = store.insert(f"family-{i % 13}", b"value %d" % i, time=i)
            print(r.guid, i, flush=True)
            i += 1
    """, str(tmp_path))
    try:
        acked = read_lines_until(child, 300)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with Store(tmp_path, partitions=64) as s:
        for line in acked:
            guid, i = map(int, line.split())
            found = s.select(f"family-{i % 13}", at=i)
            assert found is not None and found.guid == guid and found.value == b"value %d" % i


def test_records_since_streams_a_partition_in_append_order(store: Store) -> None:
    families = [f for f in (f"f{i}" for i in range(200)) if store.partition_of(f) == 5][:6]
    receipts = [store.insert(f, b"v%d" % i, time=i) for i, f in enumerate(families * 3)]
    stream = store.records_since(5, 0, 100)
    assert [r.guid for r in stream] == [r.guid for r in receipts]
    assert [r.sequence for r in stream] == list(range(1, len(receipts) + 1))
    assert store.records_since(5, 4, 3) == stream[4:7]
    assert store.last_position(5) == len(receipts)
    assert store.records_since(6, 0) == [] and store.last_position(6) == 0


@pytest.mark.parametrize("partition", [3.0, 2.5, "3", None, -1, 8])
def test_a_partition_that_is_not_one_of_the_stores_is_refused_and_the_store_stays_whole(
        tmp_path: Path, partition: object) -> None:
    """merkle(3.5) made a partition 3.5, which the store kept: every checkpoint failed from
    then on (struct.error), and close() raised it."""
    with Store(tmp_path, partitions=8, fsync=False) as s:
        s.insert("k", b"v", time=1)
        for ask in (s.merkle, s.holdings, lambda p: s.merkle_nodes(p, 0, [0]),
                    lambda p: s.bucket(p, 0), lambda p: s.fetch(p, [])):
            with pytest.raises((TypeError, ValueError), match="partition"):
                ask(partition)  # type: ignore[operator]
        assert sorted(s._parts) == [s.partition_of("k")]
    assert (tmp_path / "CHECKPOINT").exists() or any(tmp_path.glob("*checkpoint*"))
    with Store(tmp_path, partitions=8, fsync=False) as s:
        assert s.select("k").value == b"v"


def test_apply_keeps_the_origin_guid_and_is_idempotent(tmp_path: Path) -> None:
    with Store(tmp_path / "a", partitions=16, fsync=False, shard=1) as a, \
            Store(tmp_path / "b", partitions=16, fsync=False, shard=2) as b:
        original = a.insert("k", b"v", time=9)
        record = a.select("k")
        for _ in range(3):
            applied = b.apply(unpack(pack(record)))
        assert applied.guid == original.guid and decode(applied.guid).shard == 1
        assert len(b.select_history("k")) == 1
        assert b.apply_many([record, record]) == [applied, applied]


def test_apply_refuses_a_record_whose_digest_does_not_match(store: Store) -> None:
    forged = Record("k", 1, b"changed", 5, bytes(16))
    with pytest.raises(StoreError, match="digest"):
        store.apply(forged)


def test_a_negative_or_too_large_guid_is_refused_and_the_store_stays_usable(store: Store) -> None:
    # A negative guid once passed the check, then failed the commit, and with it the store.
    for guid in (-5, 1 << 64):
        with pytest.raises(ValueError, match="guid"):
            store.apply(record("k", 1, b"v", guid))
    assert store.insert("k", b"fine").sequence == 1


def record(family: str, time: int, value: bytes, guid: int = 7) -> Record:
    return Record(family, time, value, guid, content_digest(family, time, value))


class ManyCalls:
    """Records the call-backs of ``apply_many_nowait``."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, BaseException | None]] = []
        self.done = threading.Event()

    def __call__(self, failed: int, error: BaseException | None) -> None:
        self.calls.append((failed, error))
        self.done.set()


@pytest.mark.parametrize("group_commit", [True, False])
def test_apply_many_nowait_calls_back_once_when_every_record_is_durable(
    tmp_path: Path, group_commit: bool,
) -> None:
    rows = [record(f"f{i % 7}", i, b"v%d" % i, guid=100 + i) for i in range(60)]
    with Store(tmp_path, partitions=4, group_commit=group_commit) as s:  # real fsync
        s.apply(rows[0])  # durable already
        back = ManyCalls()
        s.apply_many_nowait([*rows, rows[5], rows[0]], back)
        assert back.done.wait(10)
        assert back.calls == [(0, None)]
        for p in range(4):  # in the order given, each record once
            mine = [r for r in rows if s.partition_of(r.family) == p]
            assert [(r.guid, r.digest) for r in s.records_since(p, 0, 1000)] == \
                [(r.guid, r.digest) for r in mine]
        assert s.stats()["records"] == 60
    with Store(tmp_path, partitions=4) as again:  # and on disk
        assert again.select("f3", at=3).guid == 103


def test_apply_many_nowait_counts_the_refused_records_and_applies_the_rest(store: Store) -> None:
    good = [record("a", 1, b"x"), record("b", 2, b"y")]
    forged = Record("c", 3, b"changed", 5, bytes(16))
    back = ManyCalls()
    store.apply_many_nowait([good[0], forged, record("d", 4, b"z", guid=-1), good[1]], back)
    assert back.done.wait(10)
    [(failed, error)] = back.calls
    assert failed == 2 and "digest" in str(error)
    assert store.select("a").value == b"x" and store.select("b").value == b"y"
    assert store.select("c") is None and store.select("d") is None
    assert store.insert("e", b"fine").guid  # still usable


def test_apply_many_nowait_waits_for_records_already_on_their_way_to_disk(
    tmp_path: Path,
) -> None:
    with Store(tmp_path, partitions=8) as s:
        assert s._committer is not None
        gate, write = threading.Event(), s._committer._write
        s._committer._write = lambda batch: (gate.wait(10), write(batch))[1]  # type: ignore[method-assign]
        rows = [record("k", i, b"v") for i in range(3)]
        s.apply_nowait(rows[0])  # queued, held at the gate
        back = ManyCalls()
        s.apply_many_nowait(rows, back)
        assert back.calls == []  # nothing is durable yet: no call-back
        gate.set()
        assert back.done.wait(10) and back.calls == [(0, None)]
        assert [r.time for r in s.select_history("k")] == [0, 1, 2]


def test_apply_many_nowait_reports_a_failed_commit(tmp_path: Path) -> None:
    with Store(tmp_path, partitions=8) as s:
        assert s._committer is not None

        def failing(batch: object) -> None:
            raise OSError("disk full")

        s._committer._write = failing  # type: ignore[method-assign]
        back = ManyCalls()
        s.apply_many_nowait([record("k", i, b"v") for i in range(4)], back)
        assert back.done.wait(10)
        [(failed, error)] = back.calls
        assert failed == 4 and "disk full" in str(error)


@settings(deadline=None, max_examples=200)
@given(st.text(min_size=1, max_size=40), st.integers(-(2**63), 2**63 - 1),
       st.binary(max_size=80))
def test_content_digest_is_the_same_for_any_bytes_like_value(family: str, time: int,
                                                            value: bytes) -> None:
    digest = content_digest(family, time, value)
    raw = family.encode("utf-8", "surrogatepass")
    reference = hashlib.blake2b(digest_size=16, person=b"cf-record")
    reference.update(struct.pack(">Hq", len(raw), time) + raw + value)
    assert digest == reference.digest()
    assert content_digest(family, time, bytearray(value)) == digest
    assert content_digest(family, time, memoryview(value)) == digest


def test_content_digest_refuses_what_cannot_be_stored() -> None:
    for family, time, value, error in [
        ("", 1, b"v", ValueError), ("k" * 70_000, 1, b"v", ValueError),
        ("k", 1 << 63, b"v", ValueError), ("k", True, b"v", TypeError),
        ("k", 1.0, b"v", TypeError), (5, 1, b"v", TypeError), ("k", 1, "v", TypeError),
    ]:
        with pytest.raises(error):
            content_digest(family, time, value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lone surrogate '\\\\udcff' at index 3"):
        content_digest("web\udcff", 1, b"v")


def test_unpack_refuses_damaged_bytes() -> None:
    good = pack(Record("k", 1, b"v", 5, content_digest("k", 1, b"v")))
    with pytest.raises(ValueError):
        unpack(good[:-1] + b"w")
    with pytest.raises(ValueError):
        unpack(good[:5])


def test_without_group_commit_each_insert_is_its_own_fsync(tmp_path: Path) -> None:
    with Store(tmp_path, partitions=8, group_commit=False) as s:
        for i in range(5):
            s.insert("k", b"%d" % i, time=i)
        assert s.stats()["batches"] == 5
        assert [r.value for r in s.select_history("k")] == [b"0", b"1", b"2", b"3", b"4"]


def test_segments_roll_over_and_stay_readable(tmp_path: Path) -> None:
    with Store(tmp_path, partitions=8, fsync=False, segment_bytes=8192) as s:
        for i in range(300):
            s.insert(f"f{i % 5}", b"x" * 100, time=i)
        assert s.stats()["files"] > 3
    with Store(tmp_path, partitions=8, fsync=False) as s:
        assert len(s.select_history("f0")) == 60


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_data_design_doc_examples_run(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(DOC.read_text())
    assert blocks, "docs/data.md has no python examples"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {"__name__": "docs_example"})
