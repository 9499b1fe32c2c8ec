"""The index snapshot: what a clean close leaves so that the next open need not scan.

Opening a store rebuilds its indexes from every record in its files, about 10 us a record
(11 s for a million). On a clean close the store writes its indexes to ``INDEX.snapshot``
instead; the next open takes them from there if the snapshot is whole and the segment files
are exactly those it names, at exactly the sizes it names. Segments are append-only and
never rewritten in place, so the same files at the same sizes hold the same records. The
open deletes the snapshot as soon as it has read it: once the store writes again it would
be stale, and after a crash the next open scans, as it always did. Anything amiss (a missing
or extra file, a size that moved, a torn or altered snapshot, another byte order) makes the
open scan as well, after a warning: the snapshot only ever saves time.

Layout: a magic line; a JSON header (lengths, counters, the file list); then the arrays, in
the header's order, as raw machine words; then a blake2b digest of all that precedes it.
Nothing in it is executed or unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import fsync_directory
from .index import FamilyIndex, PartitionState
from .merkle import MerkleTree

__all__ = ["SNAPSHOT_NAME", "IndexImage", "take_snapshot", "write_snapshot"]

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "INDEX.snapshot"
_MAGIC = b"cellframe index snapshot 1\n"
_LENGTH_BYTES = 8
_CHECK_BYTES = 16
_DIGEST_BYTES = 16  # a record's content digest (records.py)
_LEAF_BYTES = 16  # a Merkle leaf (merkle.py)


@dataclass
class IndexImage:
    """Everything ``Store`` rebuilds by scanning, and the files it was rebuilt from."""

    files: dict[str, tuple[int, int | None]]  # segment file name -> (size, CRC-32 of its bytes)
    next_batch: int
    log_seqs: dict[int, dict[int, int]]  # log file id -> partition -> highest sequence
    parts: dict[int, PartitionState]
    families: dict[str, FamilyIndex]


def write_snapshot(directory: Path, image: IndexImage, *, sync: bool) -> None:
    """Write ``image`` as the directory's snapshot (to a temporary file, then renamed)."""
    if any(crc is None for _, crc in image.files.values()):
        raise ValueError("a segment's checksum is not known")
    path = directory / SNAPSHOT_NAME
    tmp = path.with_name(SNAPSHOT_NAME + ".tmp")
    parts = [image.parts[p] for p in sorted(image.parts)]
    names = list(image.families)
    header = {
        "byteorder": sys.byteorder,
        "files": image.files,
        "next_batch": image.next_batch,
        "log_seqs": {str(f): {str(p): s for p, s in seqs.items()}
                     for f, seqs in image.log_seqs.items()},
        "parts": [[p.partition, len(p.seqs), len(p.digests), p.next_seq, p.covers,
                   p.compacted_file, p.tree.fanout, p.tree.depth] for p in parts],
        "families": len(names),
    }
    check = hashlib.blake2b(digest_size=_CHECK_BYTES)
    with open(tmp, "wb") as out:
        for chunk in _chunks(header, parts, names, image.families):
            check.update(chunk)
            out.write(chunk)
        out.write(check.digest())
        if sync:
            out.flush()
            os.fsync(out.fileno())
    os.replace(tmp, path)
    if sync:
        fsync_directory(directory)


def _chunks(header: dict[str, Any], parts: list[PartitionState], names: list[str],
            families: dict[str, FamilyIndex]) -> Iterator[bytes]:
    encoded = json.dumps(header).encode()
    yield _MAGIC + len(encoded).to_bytes(_LENGTH_BYTES, "big") + encoded
    for part in parts:
        keys = b"".join(part.digests)
        if len(keys) != _DIGEST_BYTES * len(part.digests):
            raise ValueError(f"partition {part.partition} holds a digest not {_DIGEST_BYTES} bytes")
        yield part.seqs.tobytes()
        yield part.locs.tobytes()
        yield keys
        yield array("Q", part.digests.values()).tobytes()
        yield b"".join(leaf.to_bytes(_LEAF_BYTES, "big") for leaf in part.tree.leaves())
    encoded_names = [name.encode("utf-8", "surrogatepass") for name in names]
    indexes = [families[name] for name in names]
    yield array("Q", map(len, encoded_names)).tobytes()
    yield b"".join(encoded_names)
    yield array("Q", (index.partition for index in indexes)).tobytes()
    yield array("Q", map(len, indexes)).tobytes()
    for index in indexes:
        yield index.times.tobytes()
        yield index.ties.tobytes()
        yield index.locs.tobytes()


def take_snapshot(directory: Path) -> IndexImage | None:
    """Read the directory's snapshot and delete it; None if there is none or it is unusable
    (a warning says why). The caller still checks ``files`` against the directory."""
    path = directory / SNAPSHOT_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("index snapshot %s unreadable, scanning instead: %s", path, error)
        data = b""
    try:
        path.unlink()
        fsync_directory(directory)
    except OSError as error:  # the open goes on scanning, but the snapshot must not stay
        log.warning("index snapshot %s could not be deleted, scanning instead: %s", path, error)
        return None
    try:
        return _parse(data)
    except (ValueError, KeyError, TypeError, IndexError, OverflowError) as error:
        log.warning("index snapshot %s unusable, scanning instead: %s", path, error)
        return None


class _Reader:
    """Consumes the snapshot's bytes front to back."""

    def __init__(self, data: memoryview) -> None:
        self.data, self.at = data, 0

    def take(self, size: int) -> memoryview:
        if size < 0 or self.at + size > len(self.data):
            raise ValueError("snapshot is shorter than its header says")
        chunk = self.data[self.at:self.at + size]
        self.at += size
        return chunk

    def words(self, typecode: str, count: int) -> array[int]:
        words = array(typecode)
        words.frombytes(self.take(count * words.itemsize))
        return words


def _parse(data: bytes) -> IndexImage:
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + _LENGTH_BYTES + _CHECK_BYTES:
        raise ValueError("not an index snapshot of this version")
    body, check = memoryview(data)[:-_CHECK_BYTES], data[-_CHECK_BYTES:]
    if hashlib.blake2b(body, digest_size=_CHECK_BYTES).digest() != check:
        raise ValueError("its digest does not match: torn or altered")
    reader = _Reader(body)
    reader.take(len(_MAGIC))
    header = json.loads(bytes(reader.take(int.from_bytes(reader.take(_LENGTH_BYTES), "big"))))
    if header["byteorder"] != sys.byteorder:
        raise ValueError(f"written on a {header['byteorder']}-endian machine")
    parts = {}
    for partition, count, digests, next_seq, covers, compacted, fanout, depth in header["parts"]:
        part = PartitionState(partition)
        part.seqs = reader.words("Q", count)
        part.locs = reader.words("Q", count)
        keys = bytes(reader.take(digests * _DIGEST_BYTES))
        part.digests = dict(zip((keys[i:i + _DIGEST_BYTES]
                                 for i in range(0, len(keys), _DIGEST_BYTES)),
                                reader.words("Q", digests), strict=True))
        part.tree = MerkleTree(fanout=fanout, depth=depth)
        leaves = bytes(reader.take(part.tree.buckets * _LEAF_BYTES))
        part.tree.restore_leaves([int.from_bytes(leaves[i:i + _LEAF_BYTES], "big")
                                  for i in range(0, len(leaves), _LEAF_BYTES)])
        part.next_seq, part.covers, part.compacted_file = next_seq, covers, compacted
        parts[partition] = part
    count = header["families"]
    name_lengths = reader.words("Q", count)
    names_blob = bytes(reader.take(sum(name_lengths)))
    partitions = reader.words("Q", count)
    versions = reader.words("Q", count)
    families, at = {}, 0
    for length, partition, size in zip(name_lengths, partitions, versions, strict=True):
        index = FamilyIndex(partition)
        index.times = reader.words("q", size)
        index.ties = reader.words("Q", size)
        index.locs = reader.words("Q", size)
        families[names_blob[at:at + length].decode("utf-8", "surrogatepass")] = index
        at += length
    if reader.at != len(body):
        raise ValueError("snapshot is longer than its header says")
    log_seqs = {int(f): {int(p): s for p, s in seqs.items()}
                for f, seqs in header["log_seqs"].items()}
    files = {name: (size, crc) for name, (size, crc) in header["files"].items()}
    return IndexImage(files, header["next_batch"], log_seqs, parts, families)
