"""Segment files: append-only files of checksummed record frames, and their recovery scan.

A segment starts with a 32-byte header (magic, kind, file id, partition, covered sequence,
crc32) followed by frames (see ``records``). Two kinds exist: the shared *log* that group
commit appends to, and per-partition *compacted* files written whole by compaction.

Recovery tells a torn tail from damage. Group commit writes one batch per write+fsync and
starts the next batch only after that fsync returned, so only the last batch can be torn, and
within it the kernel may have persisted pages in any order. Every frame carries its batch
number and the last frame of a batch is flagged. A damaged frame is a torn tail when no valid
frame of a *later* batch follows it: the file is truncated there. Damage followed by a later
batch is damage to acknowledged data and raises ``CorruptSegmentError``; so does any damage
in a compacted file or in a log segment other than the newest.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from ..errors import CorruptSegmentError, StoreError
from .files import fsync_directory
from .records import FRAME_HEAD, FRAME_MAGIC, Record, decode_body, frame_crc

__all__ = [
    "HEADER_SIZE",
    "KIND_COMPACTED",
    "KIND_LOG",
    "LAST_IN_BATCH",
    "NO_PARTITION",
    "SegmentFile",
    "file_crc",
    "scan",
]

log = logging.getLogger(__name__)

KIND_LOG = 0
KIND_COMPACTED = 1
#: Set in a frame's batch field on the last frame of a group-commit batch.
LAST_IN_BATCH = 1 << 63
NO_PARTITION = 0xFFFFFFFF
_MAGIC = b"CFSEG\x00\x01\x00"
_HEADER = struct.Struct(">8sB3xIIQ")
HEADER_SIZE = _HEADER.size + 4
_READ_AHEAD = 4096


class SegmentFile:
    """One open segment file: appended to by one writer, read by position from any thread.

    A log segment is *preallocated* (``posix_fallocate``) ahead of what is written, and
    synced with ``fdatasync``: a write into space already allocated to the file changes no
    size, so the sync flushes the data without the journal commit a growing file needs
    (150 us against 200 us for append + fsync, measured here). The file then ends in zeros
    past its last frame; ``trim`` cuts them off when the segment is sealed, and the scan
    after a crash takes a run of zeros to the end of the file for unused space.
    """

    def __init__(self, path: Path, fd: int, *, file_id: int, kind: int, partition: int,
                 covers: int, size: int, preallocate: int = 0) -> None:
        self.path = path
        self.fd = fd
        self.file_id = file_id
        self.kind = kind
        self.partition = partition
        self.covers = covers
        #: Bytes written (the end of the last frame); the file may be longer (preallocated).
        self.size = size
        self.allocated = size
        self.preallocate = preallocate
        #: CRC-32 of the file's bytes as written, when known (kept for the index snapshot).
        self.crc: int | None = None

    @classmethod
    def create(cls, path: Path, *, file_id: int, kind: int, partition: int = NO_PARTITION,
               covers: int = 0, sync: bool = True, preallocate: int = 0) -> SegmentFile:
        """Create ``path`` with its header, durably (file and directory fsynced), then
        allocate ``preallocate`` bytes past it (a header never follows zeros on disk)."""
        head = _HEADER.pack(_MAGIC, kind, file_id, partition, covers)
        head += zlib.crc32(head).to_bytes(4, "big")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            os.pwrite(fd, head, 0)
            if sync:
                os.fsync(fd)
                fsync_directory(path.parent)
        except OSError as exc:
            raise StoreError(f"cannot create segment {path}: {exc}") from exc
        segment = cls(path, fd, file_id=file_id, kind=kind, partition=partition,
                      covers=covers, size=HEADER_SIZE, preallocate=preallocate)
        segment.crc = zlib.crc32(head)
        if preallocate:
            segment._allocate(HEADER_SIZE)
        return segment

    @classmethod
    def open(cls, path: Path) -> SegmentFile:
        """Open an existing segment and check its header."""
        try:
            fd = os.open(path, os.O_RDWR)
            head = os.pread(fd, HEADER_SIZE, 0)
            size = os.fstat(fd).st_size
        except OSError as exc:
            raise StoreError(f"cannot open segment {path}: {exc}") from exc
        if len(head) < HEADER_SIZE or zlib.crc32(head[:-4]) != int.from_bytes(head[-4:], "big"):
            os.close(fd)
            raise CorruptSegmentError(f"{path}: damaged or incomplete segment header")
        magic, kind, file_id, partition, covers = _HEADER.unpack_from(head)
        if magic != _MAGIC:
            os.close(fd)
            raise CorruptSegmentError(f"{path}: not a cellframe segment (magic {magic!r})")
        return cls(path, fd, file_id=file_id, kind=kind, partition=partition, covers=covers,
                   size=size)

    def append(self, data: bytes, *, sync: bool = False) -> int:
        """Append ``data`` (durably if ``sync``); return the offset it starts at."""
        offset = self.size
        end = offset + len(data)
        if end > self.allocated and self.preallocate:
            self._allocate(end)
        view, at = memoryview(data), offset
        while view:
            written = os.pwrite(self.fd, view, at)
            view, at = view[written:], at + written
        self.size = end
        self.allocated = max(self.allocated, end)
        if self.crc is not None:
            self.crc = zlib.crc32(data, self.crc)
        if sync:
            os.fdatasync(self.fd)
        return offset

    def _allocate(self, end: int) -> None:
        """Allocate the file up to ``end`` plus one more step; if the file system cannot,
        stop trying (writes past the end grow the file, and the syncs flush its size)."""
        want = end + self.preallocate
        try:
            os.posix_fallocate(self.fd, self.allocated, want - self.allocated)
        except OSError as error:
            log.info("%s: no preallocation (%s); appending instead", self.path, error)
            self.preallocate = 0
            return
        self.allocated = want

    def sync(self) -> None:
        """Make what was written durable (data and size: ``fdatasync`` flushes both)."""
        os.fdatasync(self.fd)

    def trim(self) -> None:
        """Cut the preallocated space past the last frame, durably (sealing the segment)."""
        self.preallocate = 0
        if self.allocated > self.size:
            os.ftruncate(self.fd, self.size)
            os.fsync(self.fd)
            self.allocated = self.size

    def read(self, offset: int) -> tuple[int, Record]:
        """(batch field, record) of the frame at ``offset``, checksum verified."""
        chunk = os.pread(self.fd, _READ_AHEAD, offset)
        if len(chunk) < FRAME_HEAD.size:
            raise CorruptSegmentError(f"{self.path}: no record at offset {offset}")
        magic, length, crc = FRAME_HEAD.unpack_from(chunk)
        end = FRAME_HEAD.size + length
        if len(chunk) < end:
            chunk += os.pread(self.fd, end - len(chunk), offset + len(chunk))
        body = chunk[FRAME_HEAD.size:end]
        if magic != FRAME_MAGIC or len(body) != length or frame_crc(length, body) != crc:
            raise CorruptSegmentError(f"{self.path}: damaged record at offset {offset}")
        return decode_body(body)

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes, durably."""
        os.ftruncate(self.fd, size)
        os.fsync(self.fd)
        self.size = self.allocated = size
        self.crc = None

    def checksum(self) -> int:
        """Read the whole file and remember, and return, the CRC-32 of its bytes."""
        self.crc = file_crc(self.path)
        return self.crc

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __repr__(self) -> str:
        return f"SegmentFile({self.path.name}, size={self.size})"


def file_crc(path: Path, chunk: int = 1 << 20) -> int:
    """CRC-32 of a file's bytes, read a megabyte at a time."""
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


def scan(segment: SegmentFile, *, tolerate_torn_tail: bool,
         next_batch: int = 0) -> Iterator[tuple[int, int, Record]]:
    """Yield (offset, batch field, record) for every frame; handle a damaged one as above.

    ``next_batch`` is the lowest batch number the file can start with (one past the last
    complete batch of the files before it).
    """
    if segment.size <= HEADER_SIZE:
        return
    # One read of the whole file: segments are capped (64 MiB by default), and plain bytes
    # cannot pin the file the way an mmap's exported buffers do when a scan raises.
    data = os.pread(segment.fd, segment.size, 0)
    segment.crc = zlib.crc32(data)  # the bytes are here: the index snapshot needs their CRC
    yield from _frames(segment, data, tolerate_torn_tail, next_batch)


def _frames(segment: SegmentFile, view: bytes, tolerate: bool,
            current_batch: int) -> Iterator[tuple[int, int, Record]]:
    pos, size = HEADER_SIZE, len(view)
    while pos < size:
        parsed = _parse(view, pos)
        if parsed is None:
            _damaged(segment, view, pos, current_batch, tolerate)
            return
        end, body = parsed
        batch, record = decode_body(body)
        number = batch & ~LAST_IN_BATCH
        current_batch = number + 1 if batch & LAST_IN_BATCH else number
        yield pos, batch, record
        pos = end


def _parse(view: bytes, pos: int) -> tuple[int, bytes] | None:
    """(end offset, body) of a valid frame at ``pos``, or None if it is damaged or cut."""
    if pos + FRAME_HEAD.size > len(view):
        return None
    magic, length, crc = FRAME_HEAD.unpack_from(view, pos)
    end = pos + FRAME_HEAD.size + length
    if magic != FRAME_MAGIC or end > len(view):
        return None
    body = view[pos + FRAME_HEAD.size:end]
    if frame_crc(length, body) != crc:
        return None
    return end, body


def _damaged(segment: SegmentFile, view: bytes, pos: int, batch: int,
             tolerate: bool) -> None:
    """Truncate a torn tail at ``pos`` or raise: see the module docstring for the rule."""
    if tolerate and _zeros_from(view, pos):
        log.debug("%s: %d preallocated bytes unused at offset %d",
                  segment.path, len(view) - pos, pos)
    else:
        later = _later_batch_after(view, pos, batch)
        if not tolerate or later is not None:
            where = f" (a later batch starts at offset {later})" if later is not None else ""
            raise CorruptSegmentError(f"{segment.path}: damaged record at offset {pos}{where}")
        log.warning("%s: dropping a torn tail of %d bytes at offset %d",
                    segment.path, len(view) - pos, pos)
    segment.truncate(pos)
    segment.crc = zlib.crc32(memoryview(view)[:pos])


def _zeros_from(view: bytes, pos: int, chunk: int = 1 << 20) -> bool:
    """Whether every byte from ``pos`` to the end is zero (space preallocated, never
    written), checked a megabyte at a time."""
    for start in range(pos, len(view), chunk):
        block = view[start:start + chunk]
        if block.count(0) != len(block):
            return False
    return True


def _later_batch_after(view: bytes, pos: int, batch: int) -> int | None:
    """Offset of the first valid frame after ``pos`` from a batch after ``batch``, if any."""
    needle = FRAME_MAGIC.to_bytes(2, "big")
    start = pos + 1
    while True:
        hit = view.find(needle, start)
        if hit < 0:
            return None
        parsed = _parse(view, hit)
        if parsed is not None:
            number = int.from_bytes(parsed[1][:8], "big") & ~LAST_IN_BATCH
            if number > batch:
                return hit
        start = hit + 1
