"""Segments on disk: a torn tail is dropped, damage to acknowledged data is an error."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe.errors import CorruptSegmentError
from cellframe.store import Store, content_digest, partition_of
from cellframe.store import segment as segment_module
from cellframe.store.records import Record, encode_frame
from cellframe.store.segment import (
    HEADER_SIZE,
    KIND_LOG,
    LAST_IN_BATCH,
    SegmentFile,
    file_crc,
    scan,
)
from tests.store_support import first_log_with_records, flip_byte, frame_ends, log_segments

PARTITIONS = 64
RECORDS = 40


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed store of RECORDS records, one group commit each, in one log segment."""
    path = tmp_path_factory.mktemp("pristine")
    with Store(path, partitions=PARTITIONS, fsync=False) as store:
        for i in range(RECORDS):
            store.insert(f"family-{i % 7}", f"value {i}".encode() * (i % 5 + 1), time=i)
    return path


def copy_of(pristine: Path, tmp: Path) -> tuple[Path, Path, list[tuple[int, int, bytes]]]:
    target = tmp / "copy"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(pristine, target)
    segment = first_log_with_records(target)
    return target, segment, frame_ends(segment)


def stored_digests(path: Path) -> set[bytes]:
    with Store(path, partitions=PARTITIONS, fsync=False) as store:
        return {r.digest for p in range(PARTITIONS) for r in store.records_since(p, 0, 10**6)}


@settings(deadline=None, max_examples=60)
@given(cut_fraction=st.floats(0.0, 1.0))
def test_truncation_keeps_every_record_written_before_the_cut(
        pristine: Path, tmp_path_factory: pytest.TempPathFactory, cut_fraction: float) -> None:
    directory, segment, frames = copy_of(pristine, tmp_path_factory.mktemp("cut"))
    cut = int(cut_fraction * segment.stat().st_size)
    os.truncate(segment, cut)
    present = stored_digests(directory)
    assert present == {digest for _, end, digest in frames if end <= cut}
    assert stored_digests(directory) == present  # and the repaired file reopens the same


@settings(deadline=None, max_examples=40)
@given(victim=st.integers(0, RECORDS - 2), where=st.floats(0.0, 0.999))
def test_damage_before_a_later_batch_raises(pristine: Path,
                                            tmp_path_factory: pytest.TempPathFactory,
                                            victim: int, where: float) -> None:
    directory, segment, frames = copy_of(pristine, tmp_path_factory.mktemp("rot"))
    start, end, _ = frames[victim]
    flip_byte(segment, start + int(where * (end - start)))
    with pytest.raises(CorruptSegmentError, match="damaged record"):
        Store(directory, partitions=PARTITIONS, fsync=False)


def test_damage_in_the_last_batch_is_taken_for_a_torn_tail(pristine: Path,
                                                           tmp_path: Path) -> None:
    directory, segment, frames = copy_of(pristine, tmp_path)
    start, end, lost = frames[-1]
    flip_byte(segment, start + (end - start) // 2)
    present = stored_digests(directory)
    assert present == {digest for _, _, digest in frames} - {lost}


def test_damage_in_an_older_segment_raises_even_at_its_end(pristine: Path,
                                                          tmp_path: Path) -> None:
    directory, segment, frames = copy_of(pristine, tmp_path)
    with Store(directory, partitions=PARTITIONS, fsync=False) as store:
        store.insert("newer", b"segment")
    assert len(log_segments(directory)) >= 2
    start, end, _ = frames[-1]
    flip_byte(segment, end - 1)
    with pytest.raises(CorruptSegmentError):
        Store(directory, partitions=PARTITIONS, fsync=False)


def test_damaged_segment_header_raises(pristine: Path, tmp_path: Path) -> None:
    directory, segment, _ = copy_of(pristine, tmp_path)
    flip_byte(segment, 3)
    with pytest.raises(CorruptSegmentError, match="header"):
        Store(directory, partitions=PARTITIONS, fsync=False)


def record(i: int) -> Record:
    family, value = f"f{i}", b"v%d" % i
    return Record(family, i, value, i + 1, content_digest(family, i, value),
                  partition_of(family, PARTITIONS), i + 1)


def write_log(directory: Path, batches: list[list[int]]) -> tuple[Path, list[int]]:
    """A log segment holding ``batches`` (lists of record numbers); returns frame offsets."""
    directory.mkdir(exist_ok=True)
    path = directory / "log-00000001.seg"
    segment = SegmentFile.create(path, file_id=1, kind=KIND_LOG, sync=False)
    offsets = []
    for number, members in enumerate(batches, start=1):
        for j, i in enumerate(members):
            flag = LAST_IN_BATCH if j == len(members) - 1 else 0
            offsets.append(segment.append(encode_frame(number | flag, record(i))))
    segment.close()
    return path, offsets


def present_numbers(directory: Path) -> set[int]:
    digests = stored_digests(directory)
    return {i for i in range(100) if record(i).digest in digests}


def test_a_torn_batch_persisted_out_of_order_is_dropped_without_error(tmp_path: Path) -> None:
    # the kernel wrote pages of the last batch out of order: frame 3 lost, 4 and 5 present
    path, offsets = write_log(tmp_path, [[0, 1], [2, 3, 4, 5]])
    flip_byte(path, offsets[3] + 12)
    assert present_numbers(tmp_path) == {0, 1, 2}


def test_a_damaged_frame_followed_by_a_later_batch_raises(tmp_path: Path) -> None:
    path, offsets = write_log(tmp_path, [[0, 1], [2, 3], [4]])
    flip_byte(path, offsets[3] + 12)
    with pytest.raises(CorruptSegmentError, match="later batch"):
        Store(tmp_path, partitions=PARTITIONS, fsync=False)


def test_a_segment_cut_inside_its_header_holds_nothing(tmp_path: Path) -> None:
    path, _ = write_log(tmp_path, [[0]])
    os.truncate(path, HEADER_SIZE - 5)
    assert present_numbers(tmp_path) == set()
    assert not path.exists()


@pytest.mark.parametrize("window", [23, 64, 200, 1 << 20])
@pytest.mark.parametrize("cut_fraction", [1.0, 0.61, 0.37])
def test_a_scan_reads_the_same_records_whatever_its_read_window(
        pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int,
        cut_fraction: float) -> None:
    """Frames cross the window's edge, and some are larger than the window itself."""
    directory, segment, frames = copy_of(pristine, tmp_path)
    cut = int(cut_fraction * segment.stat().st_size)
    os.truncate(segment, cut)
    monkeypatch.setattr(segment_module, "_WINDOW", window)
    assert stored_digests(directory) == {digest for _, end, digest in frames if end <= cut}
    opened = SegmentFile.open(segment)
    try:
        assert len(list(scan(opened, tolerate_torn_tail=False))) == \
            sum(1 for _, end, _ in frames if end <= cut)
        assert opened.crc == file_crc(segment)  # kept on the way, window by window
    finally:
        opened.close()


def test_the_zeros_a_log_segment_was_preallocated_with_end_it_quietly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, offsets = write_log(tmp_path, [[0, 1], [2]])
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(bytes(10_000))  # space allocated ahead, never written: a crash left it
    with caplog.at_level(logging.WARNING):
        assert present_numbers(tmp_path) == {0, 1, 2}
    assert "torn" not in caplog.text
    assert path.stat().st_size == size  # trimmed back to its last frame


def test_a_torn_frame_before_the_preallocated_zeros_is_dropped_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, offsets = write_log(tmp_path, [[0, 1], [2, 3]])
    with open(path, "r+b") as f:
        f.truncate(offsets[3] + 20)  # the last frame cut short...
        f.seek(0, os.SEEK_END)
        f.write(bytes(5_000))  # ...and the allocated space after it
    with caplog.at_level(logging.WARNING):
        assert present_numbers(tmp_path) == {0, 1, 2}
    assert "dropping a torn tail" in caplog.text


def test_a_durable_log_segment_is_preallocated_with_zeros_and_appends_within_them(
        tmp_path: Path) -> None:
    segment = SegmentFile.create(tmp_path / "log.seg", file_id=1, kind=KIND_LOG,
                                 preallocate=1 << 16)
    try:
        size = (tmp_path / "log.seg").stat().st_size
        assert size == HEADER_SIZE + (1 << 16) == segment.allocated
        assert os.pread(segment.fd, size, HEADER_SIZE) == bytes(size - HEADER_SIZE)
        record = Record("family", 1, b"value", 7, content_digest("family", 1, b"value"))
        offset = segment.append(encode_frame(1 | LAST_IN_BATCH, record), sync=True)
        assert (tmp_path / "log.seg").stat().st_size == size  # no size change, no journal
        assert segment.read(offset)[1] == record
    finally:
        segment.close()


def test_a_segment_whose_zeros_cannot_be_written_appends_instead(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, start: int, end: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(segment_module, "_write_zeros", full)
    segment = SegmentFile.create(tmp_path / "log.seg", file_id=1, kind=KIND_LOG,
                                 preallocate=1 << 16)
    try:
        assert segment.preallocate == 0 and segment.allocated == HEADER_SIZE
        record = Record("family", 1, b"value", 7, content_digest("family", 1, b"value"))
        offset = segment.append(encode_frame(1 | LAST_IN_BATCH, record), sync=True)
        assert segment.read(offset)[1] == record
        assert (tmp_path / "log.seg").stat().st_size == segment.size
    finally:
        segment.close()
