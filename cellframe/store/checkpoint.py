"""Index checkpoints: the indexes as of a point in the log, so that an open need not scan it all.

Opening a store by scanning reads every record (9.5 s for a million). A checkpoint holds the
indexes as they stood at a *position*: a log segment and an offset in it, the end of the
last batch published then. An open reads the checkpoint, checks that the files it covers are
still exactly as they were (each file's name, and the CRC-32 of the bytes it covered), and
scans only what the log holds past the position. Segments are append-only and a new one
always gets a new id, so the covered bytes hold the records the checkpoint indexed.

The store writes one in the background every so many bytes of log, and one at a clean close
(covering everything: that open scans nothing). Writing one does not stop inserts: the head
(position, file list, counters) is taken under the store's lock, then each partition in turn
is copied under the lock (tens of microseconds) and written without it. A partition copied
later than the head holds records published after the position: the tail scan meets them
again and skips them, as a full scan skips a digest it already holds, so the indexes equal
those a scan builds (the tests compare them on the hard cases, and crash at every step here).

The file is written whole to a temporary name, fsynced, renamed over ``INDEX.checkpoint``,
and the directory fsynced (``STEPS``): a crash at any step leaves the previous checkpoint or
the new one. Anything amiss (a file gone or changed, a torn or altered checkpoint, another
byte order) makes the open scan instead, after a warning: a checkpoint only ever saves time.

Layout: a magic line; a JSON head; per partition a fixed header, its columns as raw machine
words and its families; an end mark; then a blake2b digest of all that precedes it. Nothing
in it is executed or unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import sys
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .files import fsync_directory
from .index import DIGEST_BYTES, FamilyIndex, PartitionState
from .merkle import MerkleTree

__all__ = ["CHECKPOINT_NAME", "STEPS", "Checkpoint", "Head", "PartitionImage", "capture",
           "fault_point", "read_checkpoint", "write_checkpoint"]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "INDEX.checkpoint"
STEPS = ("captured", "written", "synced", "renamed", "committed")
_MAGIC = b"cellframe index checkpoint 2\n"
_LENGTH_BYTES = 8
_CHECK_BYTES = 16
_LEAF_BYTES = 16
# partition, rows, slots, next_seq, covers, compacted file (+1; 0 for none), fanout, depth,
# families, family name bytes
_PART = struct.Struct("<IQQQQQIIQQ")
_END = 0xFFFFFFFF
_FLUSH_BYTES = 4 << 20


def fault_point(step: str) -> None:
    """Called after each step of writing a checkpoint; tests replace it to crash there."""


@dataclass
class Head:
    """What a checkpoint holds besides the partitions: where its tail starts, and the files."""

    files: dict[str, tuple[int, int]]  # segment name -> (bytes covered, CRC-32 of them)
    log_id: int  # the log segment the tail starts in
    offset: int  # and where in it
    next_batch: int
    log_seqs: dict[int, dict[int, int]]  # log file id -> partition -> highest sequence
    clean: bool = False  # written by a clean close: it covers everything


@dataclass
class PartitionImage:
    """A partition copied under the store's lock, ready to be written without it."""

    state: PartitionState
    names: list[str]
    rows: list[array[int]]


@dataclass
class Checkpoint:
    """A checkpoint as read back: its head, and the indexes as of its position."""

    head: Head
    parts: dict[int, PartitionState] = field(default_factory=dict)
    families: dict[str, FamilyIndex] = field(default_factory=dict)


def capture(part: PartitionState) -> PartitionImage:
    """Copy what a checkpoint needs of ``part`` (call it under the store's lock)."""
    copy = PartitionState(part.partition)
    copy.seqs, copy.locs, copy.times = part.seqs[:], part.locs[:], part.times[:]
    copy.digests, copy.slots = part.digests[:], part.slots[:]
    copy.next_seq, copy.covers, copy.compacted_file = part.next_seq, part.covers, \
        part.compacted_file
    copy.tree = part.tree.copy()
    names = list(part.families)
    return PartitionImage(copy, names, [part.families[name].rows[:] for name in names])


def write_checkpoint(directory: Path, head: Head, images: Iterable[PartitionImage], *,
                     sync: bool) -> int:
    """Write a checkpoint of ``head`` and the partitions ``images`` yields (to a temporary
    file, then renamed over the last one); returns its size in bytes."""
    path = directory / CHECKPOINT_NAME
    tmp = path.with_name(CHECKPOINT_NAME + ".tmp")
    try:
        with open(tmp, "wb") as out:
            size = _write(out, head, images)
            fault_point("written")
            if sync:
                out.flush()
                os.fsync(out.fileno())
            fault_point("synced")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fault_point("renamed")
    if sync:
        fsync_directory(directory)
    fault_point("committed")
    return size


def _write(out: IO[bytes], head: Head, images: Iterable[PartitionImage]) -> int:
    check = hashlib.blake2b(digest_size=_CHECK_BYTES)
    pending: list[bytes | bytearray | memoryview] = []
    size = held = 0

    def put(chunk: bytes | bytearray | memoryview, *, flush: bool = False) -> None:
        """Gather the pieces and hash and write them a few MB at a time: each hash and
        write of a large piece lets go of the GIL, and getting it back behind a busy
        writer thread can take a switch interval (5 ms); written piece by piece, a
        checkpoint of a million records took tens of seconds during a bulk load."""
        nonlocal size, held
        pending.append(chunk)
        held += len(chunk)
        if held >= _FLUSH_BYTES or flush:
            block = b"".join(pending)
            check.update(block)
            out.write(block)
            size += len(block)
            pending.clear()
            held = 0

    encoded = json.dumps({
        "byteorder": sys.byteorder,
        "files": head.files,
        "log_id": head.log_id,
        "offset": head.offset,
        "next_batch": head.next_batch,
        "log_seqs": {str(f): {str(p): s for p, s in seqs.items()}
                     for f, seqs in head.log_seqs.items()},
        "clean": head.clean,
    }).encode()
    put(_MAGIC + len(encoded).to_bytes(_LENGTH_BYTES, "big") + encoded)
    for image in images:
        part = image.state
        names = [name.encode("utf-8", "surrogatepass") for name in image.names]
        compacted = 0 if part.compacted_file is None else part.compacted_file + 1
        put(_PART.pack(part.partition, len(part.seqs), len(part.slots), part.next_seq,
                       part.covers, compacted, part.tree.fanout, part.tree.depth, len(names),
                       sum(map(len, names))))
        for column in (part.seqs, part.locs, part.times, part.slots):
            put(memoryview(column).cast("B"))
        put(part.digests)
        put(part.tree.leaf_bytes())
        put(array("Q", map(len, names)).tobytes())
        put(b"".join(names))
        put(array("Q", map(len, image.rows)).tobytes())
        for rows in image.rows:
            put(memoryview(rows).cast("B"))
    put(_END.to_bytes(4, "little"), flush=True)
    digest = check.digest()
    out.write(digest)
    return size + len(digest)


def read_checkpoint(directory: Path) -> Checkpoint | None:
    """The directory's checkpoint; None if there is none or it is unusable (a warning says
    why). The caller still checks its files against the directory."""
    path = directory / CHECKPOINT_NAME
    try:
        with open(path, "rb") as source:
            return _parse(_Reader(source, os.fstat(source.fileno()).st_size))
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("index checkpoint %s unreadable, scanning instead: %s", path, error)
        return None
    except (ValueError, KeyError, TypeError, IndexError, OverflowError, struct.error) as error:
        log.warning("index checkpoint %s unusable, scanning instead: %s", path, error)
        return None


class _Reader:
    """Reads the checkpoint front to back, hashing what it reads (a piece at a time: the
    whole file in memory beside the arrays made from it would double the open's peak)."""

    def __init__(self, source: IO[bytes], size: int) -> None:
        if size < len(_MAGIC) + _LENGTH_BYTES + _CHECK_BYTES:
            raise ValueError("not an index checkpoint of this version")
        self.source, self.left = source, size - _CHECK_BYTES
        self.check = hashlib.blake2b(digest_size=_CHECK_BYTES)

    def take(self, size: int) -> bytes:
        if size < 0 or size > self.left:
            raise ValueError("checkpoint is shorter than its headers say")
        chunk = self.source.read(size)
        if len(chunk) != size:
            raise ValueError("checkpoint is shorter than its size")
        self.left -= size
        self.check.update(chunk)
        return chunk

    def words(self, typecode: str, count: int) -> array[int]:
        words = array(typecode)
        words.frombytes(self.take(count * words.itemsize))
        return words

    def finish(self) -> None:
        if self.left:
            raise ValueError("checkpoint is longer than its headers say")
        if self.source.read() != self.check.digest():
            raise ValueError("its digest does not match: torn or altered")


def _parse(reader: _Reader) -> Checkpoint:
    if reader.take(len(_MAGIC)) != _MAGIC:
        raise ValueError("not an index checkpoint of this version")
    header = json.loads(reader.take(int.from_bytes(reader.take(_LENGTH_BYTES), "big")))
    if header["byteorder"] != sys.byteorder:
        raise ValueError(f"written on a {header['byteorder']}-endian machine")
    head = Head(files={name: (size, crc) for name, (size, crc) in header["files"].items()},
                log_id=header["log_id"], offset=header["offset"],
                next_batch=header["next_batch"],
                log_seqs={int(f): {int(p): s for p, s in seqs.items()}
                          for f, seqs in header["log_seqs"].items()},
                clean=header["clean"])
    out = Checkpoint(head)
    while (first := reader.take(4)) != _END.to_bytes(4, "little"):
        _read_partition(reader, first, out)
    reader.finish()
    return out


def _read_partition(reader: _Reader, first: bytes, out: Checkpoint) -> None:
    (partition, rows, slots, next_seq, covers, compacted, fanout, depth, count,
     name_bytes) = _PART.unpack(first + reader.take(_PART.size - 4))
    if partition in out.parts:
        raise ValueError(f"partition {partition} appears twice")
    part = PartitionState(partition)
    part.seqs, part.locs = reader.words("Q", rows), reader.words("Q", rows)
    part.times, part.slots = reader.words("q", rows), reader.words("I", slots)
    if slots & (slots - 1) or slots < 2 * rows:
        raise ValueError(f"partition {partition}: a digest table of {slots} slots")
    part.digests = bytearray(reader.take(rows * DIGEST_BYTES))
    part.tree = MerkleTree(fanout=fanout, depth=depth)
    part.tree.restore_leaf_bytes(reader.take(part.tree.buckets * _LEAF_BYTES))
    part.next_seq, part.covers = next_seq, covers
    part.compacted_file = compacted - 1 if compacted else None
    lengths = reader.words("Q", count)
    blob = reader.take(name_bytes)
    sizes = reader.words("Q", count)
    at = 0
    for length, size in zip(lengths, sizes, strict=True):
        name = blob[at:at + length].decode("utf-8", "surrogatepass")
        at += length
        index = part.families[name] = FamilyIndex(part)
        index.rows = reader.words("I", size)
        if size and max(index.rows) >= rows:
            raise ValueError(f"family {name!r} names a row past the partition's end")
        out.families[name] = index
    if at != len(blob):
        raise ValueError(f"partition {partition}: family names do not add up")
    out.parts[partition] = part
