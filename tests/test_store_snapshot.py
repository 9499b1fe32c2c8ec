"""The index snapshot: a clean close lets the next open skip the scan, and only then."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from cellframe.store import Record, Store, content_digest
from cellframe.store.compaction import Retention
from cellframe.store.guid import encode
from cellframe.store.snapshot import SNAPSHOT_NAME
from tests.store_support import flip_byte, log_segments, read_lines_until, spawn_python

PARTITIONS = 16


def _fill(directory: Path) -> None:
    """A store that went through what changes its indexes: inserts out of time order, an odd
    name, replicated records (one twice), rolled segments, a compaction, a drop."""
    with Store(directory, partitions=PARTITIONS, fsync=False, segment_bytes=4096) as store:
        for i in range(400):
            store.insert(f"family-{i % 37}", b"v%d" % i, time=1_000 + (i * 7919) % 5_000)
        store.insert("naïve ☃\n\0", b"odd name", time=5)
        for i in range(20):
            value = b"from afar %d" % i
            record = Record(f"remote-{i % 3}", 2_000 + i, value, encode(9, i + 1),
                            content_digest(f"remote-{i % 3}", 2_000 + i, value))
            store.apply(record)
            if i == 7:
                store.apply(record)  # delivered twice
        store.compact(store.partition_of("family-3"), Retention(newest=1))
        store.drop_partition(store.partition_of("family-5"))
        store.insert("after-the-drop", b"x", time=9_000)


def _indexes(store: Store) -> dict[str, object]:
    """Everything the open rebuilds, in comparable form."""
    parts = {p: (dict(part.digests), list(part.seqs), list(part.locs), part.next_seq,
                 part.covers, part.compacted_file, part.tree.root())
             for p, part in store._parts.items()}
    families = {name: (index.partition, list(index.times), list(index.ties), list(index.locs))
                for name, index in store._families.items()}
    return {"parts": parts, "families": families, "log_seqs": store._log_seqs,
            "next_batch": store._next_batch, "log_ids": store._log_ids,
            "files": sorted(store._files), "stats": store.stats()}


def test_a_clean_close_lets_the_next_open_take_the_indexes_a_scan_would_build(
        tmp_path: Path) -> None:
    _fill(tmp_path / "a")
    assert (tmp_path / "a" / SNAPSHOT_NAME).exists()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / SNAPSHOT_NAME).unlink()
    with Store(tmp_path / "a", partitions=PARTITIONS, fsync=False) as snapped, \
            Store(tmp_path / "b", partitions=PARTITIONS, fsync=False) as scanned:
        assert (snapped.opened_from, scanned.opened_from) == ("snapshot", "scan")
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


def test_the_open_deletes_the_snapshot_so_a_crash_after_writes_means_a_scan(
        tmp_path: Path) -> None:
    _fill(tmp_path)
    child = spawn_python("""
        import os, sys
        from cellframe.store import Store
        store = Store(sys.argv[1], partitions=16)
        print(store.opened_from, os.path.exists(os.path.join(sys.argv[1], "INDEX.snapshot")))
        store.insert("written-then-crashed", b"kept")
        print("inserted")
        os._exit(0)  # no close: as if killed
    """, str(tmp_path))
    assert read_lines_until(child, 2) == ["snapshot False", "inserted"]
    child.wait(30)
    with Store(tmp_path, partitions=PARTITIONS, fsync=False) as store:
        assert store.opened_from == "scan"
        assert store.select("written-then-crashed").value == b"kept"


def test_a_snapshot_older_than_the_files_is_refused_and_the_open_scans(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _fill(tmp_path)
    old = (tmp_path / SNAPSHOT_NAME).read_bytes()
    with Store(tmp_path, partitions=PARTITIONS, fsync=False) as store:
        store.insert("newer", b"than the old snapshot")
    (tmp_path / SNAPSHOT_NAME).write_bytes(old)
    with caplog.at_level(logging.WARNING), \
            Store(tmp_path, partitions=PARTITIONS, fsync=False) as store:
        assert store.opened_from == "scan"
        assert store.select("newer").value == b"than the old snapshot"
    assert "does not match its files" in caplog.text


def test_a_segment_damaged_since_the_close_is_found_by_the_scan_as_before(
        tmp_path: Path) -> None:
    _fill(tmp_path)
    sealed = log_segments(tmp_path)[0]
    flip_byte(sealed, sealed.stat().st_size - 3)  # same size, other bytes
    from cellframe.errors import CorruptSegmentError

    with pytest.raises(CorruptSegmentError, match="damaged record"):
        Store(tmp_path, partitions=PARTITIONS, fsync=False)


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_torn_or_altered_snapshot_is_ignored_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    _fill(tmp_path)
    path = tmp_path / SNAPSHOT_NAME
    if damage == "flip":
        flip_byte(path, path.stat().st_size // 2)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    else:
        path.write_bytes(b"not a snapshot at all")
    with caplog.at_level(logging.WARNING), \
            Store(tmp_path, partitions=PARTITIONS, fsync=False) as store:
        assert store.opened_from == "scan"
        assert store.select("after-the-drop").value == b"x"
    assert "unusable, scanning instead" in caplog.text
    assert not path.exists() or path.read_bytes() != b"not a snapshot at all"
