"""Guid leases: a shard's id counter, reserved on disk in blocks so that no id is ever reissued.

Before any id of a block is handed out, the block's upper end (the *high-water mark*) is
written and fsynced. After a restart, clean or not, counting resumes from the last recorded
mark, so every new id is larger than every id issued before; a crash wastes at most the rest
of one block. The allocator never reads the clock: ids are ordered by the counter alone, so a
clock stepping back cannot cause a collision.

Counter 0 is never issued, so guid 0 is free to mean "no id".
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path

from ..errors import GuidExhaustedError, StoreError
from .files import fsync_directory
from .guid import COUNTER_BITS, MAX_COUNTER, MAX_SHARD, encode

__all__ = ["DEFAULT_LEASE_BLOCK", "GuidAllocator"]

#: Ids reserved per fsync of the lease file. A lease costs three fsyncs (about 1 ms here), so
#: 65,536 ids per lease make it negligible at any insert rate, and a crash wastes at most
#: 65,535 of a shard's 2**48 ids.
DEFAULT_LEASE_BLOCK = 1 << 16

_MAGIC = b"CFLEASE1"
_LAYOUT = struct.Struct(">8sHQ")  # magic, shard, high-water mark
_FILE = struct.Struct(">8sHQI")  # ... plus crc32 of the fields before it


class GuidAllocator:
    """Issue the guids of one shard, durably leased in blocks; safe to share between threads.

    ``path`` is the lease file (created if missing); ``block`` is how many ids one fsync
    reserves.
    """

    def __init__(self, shard: int, path: str | os.PathLike[str], *,
                 block: int = DEFAULT_LEASE_BLOCK) -> None:
        if not 0 <= shard <= MAX_SHARD:
            raise ValueError(f"shard id {shard} is outside 0..{MAX_SHARD}")
        if block < 1:
            raise ValueError(f"lease block must be at least 1, got {block}")
        self.shard = shard
        self.path = Path(path)
        self.block = block
        self._lock = threading.Lock()
        self._base = shard << COUNTER_BITS  # encode(shard, c) is _base | c for c in range
        self._limit = _read_lease(self.path, shard)
        self._next = max(self._limit, 1)

    @property
    def high_water(self) -> int:
        """The recorded mark: every counter below it may have been issued."""
        return self._limit

    def allocate(self) -> int:
        """A fresh guid of this shard, larger than any it issued before (even before a crash).

        Once per insert: ``encode``'s range checks are left out, since a counter below the
        lease's limit is in range (``_lease`` refuses a limit past ``MAX_COUNTER + 1``).
        """
        with self._lock:
            counter = self._next
            if counter >= self._limit:
                self._lease(counter)
            self._next = counter + 1
            return self._base | counter

    def allocate_many(self, count: int) -> list[int]:
        """``count`` fresh guids in increasing order, with at most one lease write per block."""
        with self._lock:
            out = []
            for _ in range(count):
                if self._next >= self._limit:
                    self._lease(self._next)
                out.append(encode(self.shard, self._next))
                self._next += 1
            return out

    def skip_to(self, counter: int) -> None:
        """Never issue a counter below ``counter`` (e.g. after restoring from a backup)."""
        with self._lock:
            if counter > self._next:
                self._next = counter
                if counter > self._limit:
                    self._lease(counter, block=0)

    def _lease(self, start: int, *, block: int | None = None) -> None:
        """Durably move the high-water mark to cover ``start`` plus one block."""
        if start > MAX_COUNTER:
            raise GuidExhaustedError(
                f"shard {self.shard} has issued all {MAX_COUNTER} of its ids")
        limit = min(start + (self.block if block is None else block), MAX_COUNTER + 1)
        _write_lease(self.path, self.shard, limit)
        self._limit = limit

    def __repr__(self) -> str:
        return f"GuidAllocator(shard={self.shard}, next={self._next}, high_water={self._limit})"


def _read_lease(path: Path, shard: int) -> int:
    """The high-water mark recorded in ``path`` (0 if the file does not exist)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise StoreError(f"cannot read guid lease {path}: {exc}") from exc
    if len(data) != _FILE.size:
        raise StoreError(f"guid lease {path} has {len(data)} bytes, expected {_FILE.size}")
    magic, owner, mark, crc = _FILE.unpack(data)
    if magic != _MAGIC or crc != zlib.crc32(data[: _LAYOUT.size]):
        raise StoreError(f"guid lease {path} is damaged (bad magic or checksum)")
    if owner != shard:
        raise StoreError(f"guid lease {path} belongs to shard {owner}, not shard {shard}")
    return int(mark)


def _write_lease(path: Path, shard: int, mark: int) -> None:
    """Replace the lease file atomically: write a temporary file, fsync, rename, fsync dir."""
    fields = _LAYOUT.pack(_MAGIC, shard, mark)
    data = fields + struct.pack(">I", zlib.crc32(fields))
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except OSError as exc:
        raise StoreError(f"cannot record guid lease in {path}: {exc}") from exc
