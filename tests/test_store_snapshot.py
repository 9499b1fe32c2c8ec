"""Index checkpoints: an open takes the indexes from one and scans only the log after it, and
what it builds equals what a full scan builds, after a clean close, after a crash, and after
a crash at any step of writing a checkpoint."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from cellframe.errors import CorruptSegmentError
from cellframe.store import Record, Store, checkpoint, content_digest
from cellframe.store.checkpoint import CHECKPOINT_NAME, STEPS
from cellframe.store.compaction import Retention
from cellframe.store.guid import encode
from cellframe.testing import wait_for
from tests.store_support import (
    SimulatedCrash,
    crash_at,
    flip_byte,
    log_segments,
    read_lines_until,
    spawn_python,
)

PARTITIONS = 16


def _hard_cases(store: Store, *, shift: int = 0) -> None:
    """What changes the indexes in ways a checkpoint must keep: inserts out of time order,
    an odd name, replicated records (one delivered twice), rolled segments, a compaction, a
    drop."""
    _tail_cases(store, shift=shift)
    store.compact(store.partition_of("family-3"), Retention(newest=1))
    store.drop_partition(store.partition_of("family-5"))
    store.insert("after-the-drop", b"x%d" % shift, time=9_000 + shift)


def _tail_cases(store: Store, *, shift: int = 0) -> None:
    """The hard cases but compaction: those a log written after a checkpoint can hold (a
    compaction replaces files, and the next open then scans unless a newer checkpoint
    names them)."""
    for i in range(400):
        store.insert(f"family-{i % 37}", b"v%d" % (i + shift),
                     time=1_000 + (i * 7919) % 5_000)
    store.insert("naïve ☃\n\0", b"odd name %d" % shift, time=5)
    for i in range(20):
        value = b"from afar %d" % (i + shift)
        record = Record(f"remote-{i % 3}", 2_000 + i, value, encode(9, i + 1 + shift),
                        content_digest(f"remote-{i % 3}", 2_000 + i, value))
        store.apply(record)
        if i == 7:
            store.apply(record)  # delivered twice


def _open(directory: Path, **options: object) -> Store:
    return Store(directory, partitions=PARTITIONS, fsync=False, segment_bytes=4096,
                 **options)  # type: ignore[arg-type]


def _fill(directory: Path) -> None:
    with _open(directory) as store:
        _hard_cases(store)


def _indexes(store: Store) -> dict[str, object]:
    """Everything the open rebuilds, in comparable form."""
    parts = {p: ({part.digest(row): row for row in range(len(part))}, list(part.seqs),
                 list(part.locs), list(part.times), part.next_seq, part.covers,
                 part.compacted_file, part.tree.leaves(), part.tree.root(),
                 sorted(part.families))
             for p, part in store._parts.items()}
    for p, part in store._parts.items():  # the digest table finds every row
        assert all(part.find(part.digest(row)) == row for row in range(len(part))), p
    families = {name: (index.partition, list(index.rows))
                for name, index in store._families.items()}
    return {"parts": parts, "families": families, "log_seqs": store._log_seqs,
            "next_batch": store._next_batch, "log_ids": store._log_ids,
            "files": sorted(store._files), "stats": store.stats()}


def _scanned(directory: Path, copy: Path) -> Store:
    """A store opened by a full scan of a copy of ``directory`` (open it before the store
    it is compared with: an open adds a log segment)."""
    shutil.copytree(directory, copy)
    (copy / CHECKPOINT_NAME).unlink(missing_ok=True)
    store = _open(copy, checkpoint_bytes=None)
    assert store.opened_from == "scan"
    return store


def test_a_clean_close_lets_the_next_open_take_the_indexes_a_scan_would_build(
        tmp_path: Path) -> None:
    _fill(tmp_path / "a")
    assert (tmp_path / "a" / CHECKPOINT_NAME).exists()
    with _scanned(tmp_path / "a", tmp_path / "b") as scanned, _open(tmp_path / "a") as snapped:
        assert (snapped.opened_from, snapped.tail_records) == ("snapshot", 0)
        assert _indexes(snapped) == _indexes(scanned)
        newest = max((1_000 + (i * 7919) % 5_000, i) for i in range(400) if i % 37 == 3)
        for store in (snapped, scanned):
            assert store.select("family-3").value == b"v%d" % newest[1]
            assert store.select("family-5") is None
        # and both go on alike: the same sequences, the same roots
        receipts = [store.insert("family-3", b"next", time=10_000) for store in (snapped,
                                                                                scanned)]
        assert receipts[0].sequence == receipts[1].sequence
        assert _indexes(snapped)["parts"] == _indexes(scanned)["parts"]


def test_after_a_crash_the_open_takes_the_checkpoint_and_scans_only_the_log_after_it(
        tmp_path: Path) -> None:
    with _open(tmp_path / "a", checkpoint_bytes=None) as store:
        _hard_cases(store)
        store.checkpoint()
        _tail_cases(store, shift=1_000)  # the tail: the hard cases again, after it
        store.insert("family-1", b"early", time=1)  # out of order, in the tail
        store.insert("family-5", b"after the drop", time=2)  # the dropped partition
        shutil.copytree(tmp_path / "a", tmp_path / "crashed")  # the files as a crash leaves them
    with _scanned(tmp_path / "crashed", tmp_path / "b") as scanned, \
            _open(tmp_path / "crashed") as reopened:
        assert reopened.opened_from == "checkpoint"
        assert 0 < reopened.tail_records < scanned.tail_records
        assert _indexes(reopened) == _indexes(scanned)
    with _open(tmp_path / "crashed") as again:  # and its close left one that serves in turn
        assert (again.opened_from, again.tail_records) == ("snapshot", 0)


def test_a_checkpoint_taken_while_inserts_go_on_restores_what_a_scan_builds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records published between the checkpoint's head and the copy of their partition are
    in the checkpoint and in its tail: the open must count them once."""
    with _open(tmp_path / "a", checkpoint_bytes=None) as store:
        _hard_cases(store)
        copied = []

        def insert_between(step: str) -> None:
            if step == "captured":  # after the head, before any partition is copied
                for i in range(50):
                    copied.append(store.insert(f"family-{i % 7}", b"during %d" % i,
                                               time=3_000 + i))

        monkeypatch.setattr(checkpoint, "fault_point", insert_between)
        store.checkpoint()
        monkeypatch.undo()
        shutil.copytree(tmp_path / "a", tmp_path / "crashed")
    with _scanned(tmp_path / "crashed", tmp_path / "b") as scanned, \
            _open(tmp_path / "crashed") as reopened:
        assert reopened.opened_from == "checkpoint"
        assert reopened.tail_records >= len(copied)
        assert _indexes(reopened) == _indexes(scanned)
        assert all(reopened.select(f"family-{i % 7}", at=3_000 + i).value == b"during %d" % i
                   for i in range(50))


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_of_writing_a_checkpoint_leaves_one_that_restores_the_scan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    with _open(tmp_path / "a", checkpoint_bytes=None) as store:
        _hard_cases(store)
        store.checkpoint()  # the previous one
        _tail_cases(store, shift=1_000)
        with crash_at(step, monkeypatch, checkpoint), pytest.raises(SimulatedCrash):
            store.checkpoint()
        shutil.copytree(tmp_path / "a", tmp_path / "crashed")  # as the process dies there
    assert not list((tmp_path / "crashed").glob("*.tmp")) or step in ("written", "synced")
    with _scanned(tmp_path / "crashed", tmp_path / "b") as scanned, \
            _open(tmp_path / "crashed") as reopened:
        assert reopened.opened_from == "checkpoint"
        assert _indexes(reopened) == _indexes(scanned)
        assert not list((tmp_path / "crashed").glob("*.tmp"))


def test_a_compaction_is_followed_by_a_checkpoint_that_names_the_new_files(
        tmp_path: Path) -> None:
    with _open(tmp_path / "a") as store:
        _tail_cases(store)
        store.checkpoint()
        checkpointer = store._checkpointer
        assert checkpointer is not None
        written = checkpointer.written
        store.compact(store.partition_of("family-3"), Retention(newest=1))
        wait_for(lambda: checkpointer.written > written, 30,
                 what="a checkpoint after the compaction", show=lambda: checkpointer.written)
        shutil.copytree(tmp_path / "a", tmp_path / "crashed")
    with _scanned(tmp_path / "crashed", tmp_path / "b") as scanned, \
            _open(tmp_path / "crashed") as reopened:
        assert reopened.opened_from in ("checkpoint", "snapshot")
        assert _indexes(reopened) == _indexes(scanned)


def test_checkpoints_are_written_in_the_background_as_the_log_grows(tmp_path: Path) -> None:
    with Store(tmp_path, partitions=PARTITIONS, fsync=False,
               checkpoint_bytes=32 << 10) as store:
        checkpointer = store._checkpointer
        assert checkpointer is not None
        for round_ in range(2):  # each round grows the log by more than checkpoint_bytes
            for i in range(1_000 * round_, 1_000 * (round_ + 1)):
                store.insert_nowait(f"family-{i % 50}", b"x" * 100, time=i)
            store.insert("last", b"x")
            wait_for(lambda done=round_: checkpointer.written > done, 30,
                     what=f"{round_ + 1} background checkpoint(s)",
                     show=lambda: checkpointer.written)
        wait_for(lambda: store.checkpoint_status()["idle"], 30,
                 what="the checkpoint thread idle", show=store.checkpoint_status)
        status = store.checkpoint_status()
        assert status["written"] >= 2 and status["failures"] == 0
        # idle: whatever the log grew by since the last one began, less than a checkpoint's worth
        assert 0 <= status["log_bytes_since"] < 32 << 10
    with Store(tmp_path, partitions=PARTITIONS, fsync=False, checkpoint_bytes=None) as store:
        assert store.opened_from == "snapshot" and store.stats()["records"] == 2_002
        assert store.checkpoint_status() == {}


def test_a_crashed_child_reopens_from_its_checkpoint_with_every_acknowledged_record(
        tmp_path: Path) -> None:
    child = spawn_python("""
        import os, sys, time
        from cellframe.store import Store
        store = Store(sys.argv[1], partitions=16, checkpoint_bytes=16 << 10)
        for i in range(300):
            store.insert(f"family-{i % 13}", b"value %d" % i, time=i)
        deadline = time.monotonic() + 30
        while not store._checkpointer.written and time.monotonic() < deadline:
            time.sleep(0.01)
        for i in range(300, 600):  # the tail, after the checkpoint
            store.insert(f"family-{i % 13}", b"value %d" % i, time=i)
        print("inserted", store._checkpointer.written >= 1)
        os._exit(0)  # no close: as if killed
    """, str(tmp_path))
    assert read_lines_until(child, 1, timeout=60) == ["inserted True"]
    child.wait(30)
    with Store(tmp_path, partitions=PARTITIONS) as store:
        assert store.opened_from == "checkpoint"
        assert [store.select(f"family-{i % 13}", at=i).value for i in range(600)] == \
            [b"value %d" % i for i in range(600)]


def test_a_checkpoint_naming_files_a_compaction_replaced_is_refused_and_the_open_scans(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _fill(tmp_path)
    old = (tmp_path / CHECKPOINT_NAME).read_bytes()
    with _open(tmp_path, checkpoint_bytes=None) as store:
        store.insert("family-3", b"newer", time=99_999)
        store.compact(store.partition_of("family-3"), Retention(newest=1))
    (tmp_path / CHECKPOINT_NAME).write_bytes(old)
    with caplog.at_level(logging.WARNING), _open(tmp_path) as store:
        assert store.opened_from == "scan"
        assert store.select("family-3").value == b"newer"
    assert "does not match its files" in caplog.text


def test_an_older_checkpoint_still_serves_when_only_log_was_added_since(
        tmp_path: Path) -> None:
    _fill(tmp_path)
    old = (tmp_path / CHECKPOINT_NAME).read_bytes()
    with _open(tmp_path, checkpoint_bytes=None) as store:
        store.insert("newer", b"than the old checkpoint")
    (tmp_path / CHECKPOINT_NAME).write_bytes(old)
    with _open(tmp_path) as store:
        assert (store.opened_from, store.tail_records) == ("checkpoint", 1)
        assert store.select("newer").value == b"than the old checkpoint"


def test_a_segment_damaged_since_the_close_is_found_by_the_scan_as_before(
        tmp_path: Path) -> None:
    _fill(tmp_path)
    sealed = log_segments(tmp_path)[0]
    flip_byte(sealed, sealed.stat().st_size - 3)  # same size, other bytes
    with pytest.raises(CorruptSegmentError, match="damaged record"):
        _open(tmp_path)


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_torn_or_altered_checkpoint_is_ignored_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    _fill(tmp_path)
    path = tmp_path / CHECKPOINT_NAME
    if damage == "flip":
        flip_byte(path, path.stat().st_size // 2)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    else:
        path.write_bytes(b"not a checkpoint at all")
    with caplog.at_level(logging.WARNING), _open(tmp_path) as store:
        assert store.opened_from == "scan"
        assert store.select("after-the-drop").value == b"x0"
    assert "unusable, scanning instead" in caplog.text
    assert path.read_bytes() != b"not a checkpoint at all"  # the close wrote a good one


def test_the_index_snapshot_an_older_version_left_is_deleted_at_open(tmp_path: Path) -> None:
    _fill(tmp_path)
    (tmp_path / "INDEX.snapshot").write_bytes(b"cellframe index snapshot 1\n" + bytes(100))
    with _open(tmp_path) as store:
        assert store.opened_from == "snapshot"  # from the checkpoint: the old file is not read
    assert not (tmp_path / "INDEX.snapshot").exists()
