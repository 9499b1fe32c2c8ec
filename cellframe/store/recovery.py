"""Opening a store: the indexes from a checkpoint and the log's tail, or from a full scan.

``Recovery`` is the part of ``Store`` that opens and checkpoints it (a mixin: it works on the
store's own indexes and files, under the store's locks, and is tested through ``Store``).

* **Open.** The checkpoint is used if every file it covers is there with the bytes it
  covered (CRC-32 of them, read now) and no compacted file has appeared since; then only the
  log past its position is scanned. Otherwise every file is scanned. Either way a torn tail
  is dropped and damage to acknowledged data raises ``CorruptSegmentError``
  (``segment``).
* **Checkpoint.** The head under the store's lock, then each partition copied under the
  lock and written without it (``checkpoint``); compaction waits meanwhile (its lock), so
  the files the head names stay as they are until the checkpoint is on disk.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import StoreError
from . import checkpoint as checkpoints
from .checkpoint import Checkpoint, Head, PartitionImage, capture, read_checkpoint
from .files import fsync_directory
from .index import FamilyIndex, PartitionState, location
from .segment import HEADER_SIZE, KIND_LOG, LAST_IN_BATCH, SegmentFile, file_crc, scan_heads

__all__ = ["LOG_NAME", "PART_NAME", "Checkpointer", "Recovery"]

log = logging.getLogger(__name__)

#: Rows a checkpoint copies per hold of the store's lock: about 3 MB, a millisecond.
_ROWS_PER_HOLD = 65_536
#: What a clean close left before checkpoints (another format, never read now).
_OLD_SNAPSHOT = "INDEX.snapshot"
LOG_NAME = re.compile(r"^log-(\d{8})\.seg$")
PART_NAME = re.compile(r"^part-(\d{5})-(\d{8})\.seg$")


class Recovery:
    """Open (``_recover``) and checkpoint (``checkpoint``) a ``Store``."""

    #: How the last open rebuilt the indexes: "scan" (every record read), "checkpoint" (a
    #: checkpoint and the log written after it) or "snapshot" (the checkpoint a clean close
    #: left, nothing after it).
    opened_from = "scan"
    #: Records the last open read from the log past its checkpoint (all of them after a scan).
    tail_records = 0

    # what it works on, set up by ``Store``
    directory: Path
    partitions: int
    durable: bool
    _files: dict[int, SegmentFile]
    _log_ids: list[int]
    _log_seqs: dict[int, dict[int, int]]
    _parts: dict[int, PartitionState]
    _families: dict[str, FamilyIndex]
    _next_file: int
    _next_batch: int
    _lock: threading.Lock
    _compact_lock: threading.Lock
    _published: tuple[int, int, int | None, int]

    def _part(self, partition: int) -> PartitionState:
        raise NotImplementedError

    def _check_usable(self) -> None:
        raise NotImplementedError

    # -- open -------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Rebuild every index; clean up what a crash left half done."""
        logs, compacted = self._classify_files()
        found = read_checkpoint(self.directory)
        starts = None if found is None else self._covered(found, logs, compacted)
        if isinstance(starts, str):
            log.warning("index checkpoint in %s does not match its files (%s), scanning "
                        "instead", self.directory, starts)
        if found is not None and isinstance(starts, dict):
            self._adopt(found, logs, compacted, starts)
            self.opened_from = "snapshot" if found.head.clean and not self.tail_records \
                else "checkpoint"
        else:
            for partition, file_id in sorted(compacted.items()):
                self._load_compacted(partition, file_id)
            for i, file_id in enumerate(logs):
                self._load_log(file_id, last=i == len(logs) - 1, place=False)
            for part in self._parts.values():
                part.rebuild_slots()
            self.opened_from = "scan"
        for segment in self._files.values():
            if segment.crc is None:  # not read by the scan (a header alone): read it now
                try:
                    segment.checksum()
                except OSError as error:  # then no checkpoint can be written, that is all
                    log.warning("cannot checksum %s: %s", segment.path, error)

    def _covered(self, found: Checkpoint, logs: list[int], compacted: dict[int, int],
                 ) -> dict[int, tuple[int | None, int]] | str:
        """Where to scan each log file from, and the CRC of its bytes before that, if the
        files are those ``found`` covers; else what differs."""
        head = found.head
        names = {self._part_path(p, f).name for p, f in compacted.items()}
        names.update(f"log-{f:08d}.seg" for f in logs if f <= head.log_id)
        if names != set(head.files):
            return f"files {sorted(names ^ set(head.files))} differ"
        for name, (covered, crc) in head.files.items():
            path = self.directory / name
            size = path.stat().st_size
            sealed = not name.startswith("log-") or int(name[4:12]) < head.log_id
            if size < covered or (sealed and size != covered):
                return f"{name} holds {size} bytes, not {covered}"
            if file_crc(path, covered) != crc:
                return f"{name} holds other bytes"
        starts: dict[int, tuple[int | None, int]] = {f: (None, 0) for f in logs
                                                     if f > head.log_id}  # whole
        if head.log_id in logs:
            starts[head.log_id] = head.files[f"log-{head.log_id:08d}.seg"]
        return starts

    def _adopt(self, found: Checkpoint, logs: list[int], compacted: dict[int, int],
               starts: dict[int, tuple[int | None, int]]) -> None:
        """Take the indexes from ``found``, then scan the log written after it."""
        head = found.head
        for p, file_id in sorted(compacted.items()):
            segment = self._files[file_id] = SegmentFile.open(self._part_path(p, file_id))
            segment.crc = head.files[segment.path.name][1]
        self._parts, self._families = found.parts, found.families
        self._log_seqs, self._next_batch = head.log_seqs, head.next_batch
        for i, file_id in enumerate(logs):
            last = i == len(logs) - 1
            if file_id in starts:
                start, crc = starts[file_id]
                self._load_log(file_id, last=last, start=start, start_crc=crc)
            else:
                segment = self._files[file_id] = SegmentFile.open(self._log_path(file_id))
                segment.crc = head.files[segment.path.name][1]
                self._log_ids.append(file_id)

    def _classify_files(self) -> tuple[list[int], dict[int, int]]:
        """Log ids in order, and the newest compacted file id of each partition."""
        logs: list[int] = []
        compacted: dict[int, int] = {}
        stale: list[Path] = []
        for name in sorted(os.listdir(self.directory)):
            path = self.directory / name
            if name.endswith(".tmp") or name == _OLD_SNAPSHOT:
                stale.append(path)
            elif m := LOG_NAME.match(name):
                logs.append(int(m.group(1)))
            elif m := PART_NAME.match(name):
                partition, file_id = int(m.group(1)), int(m.group(2))
                if file_id > compacted.get(partition, 0):
                    if partition in compacted:
                        stale.append(self._part_path(partition, compacted[partition]))
                    compacted[partition] = file_id
                else:
                    stale.append(path)
        for path in stale:
            path.unlink()
        if stale:
            fsync_directory(self.directory)
        self._next_file = max([0, *logs, *compacted.values()]) + 1
        return sorted(logs), compacted

    def _part_path(self, partition: int, file_id: int) -> Path:
        return self.directory / f"part-{partition:05d}-{file_id:08d}.seg"

    def _log_path(self, file_id: int) -> Path:
        return self.directory / f"log-{file_id:08d}.seg"

    def _load_compacted(self, partition: int, file_id: int) -> None:
        segment = SegmentFile.open(self._part_path(partition, file_id))
        self._files[file_id] = segment
        part = self._part(partition)
        part.covers = segment.covers
        part.compacted_file = file_id
        part.next_seq = max(part.next_seq, segment.covers + 1)
        families = self._families
        for offset, _, p, seq, time, digest, family in scan_heads(segment,
                                                                  tolerate_torn_tail=False):
            self._check_partition(segment, p)
            row = part.add(seq, digest, location(file_id, offset), time, place=False)
            index = families.get(family)
            if index is None:
                index = families[family] = part.family(family)
            index.add(row, time, digest)
            self.tail_records += 1

    def _load_log(self, file_id: int, *, last: bool, start: int | None = None,
                  start_crc: int = 0, place: bool = True) -> None:
        """Index the records of a log segment (from ``start`` on, if given) not already
        indexed: the partition's compacted file covers them, or the index holds them.

        A partition's records come in sequence order, the log in the order they were
        published, so a record is already indexed exactly when its sequence is not above
        the partition's last (the digest table is not asked: 2.5 us a record). ``place``
        as for ``PartitionState.add``."""
        path = self._log_path(file_id)
        if last and start is None and _header_missing(path):
            path.unlink()  # created but its header never became durable: nothing in it
            return
        segment = SegmentFile.open(path)
        self._files[file_id] = segment
        self._log_ids.append(file_id)
        seqs = self._log_seqs.setdefault(file_id, {})
        parts, families = self._parts, self._families
        next_batch, read, here = self._next_batch, 0, location(file_id, 0)
        for offset, batch, p, seq, time, digest, family in scan_heads(
                segment, tolerate_torn_tail=last, next_batch=next_batch, start=start,
                start_crc=start_crc):
            read += 1
            if batch & ~LAST_IN_BATCH >= next_batch:  # batches only rise
                next_batch = (batch & ~LAST_IN_BATCH) + 1
            part = parts.get(p)
            if part is None:
                self._check_partition(segment, p)
                part = self._part(p)
            seqs[p] = seq  # a partition's sequences only rise along the log
            if seq >= part.next_seq:
                part.next_seq = seq + 1
            if seq > part.covers and (not part.seqs or seq > part.seqs[-1]):
                row = part.add(seq, digest, here + offset, time, place=place)
                index = families.get(family)
                if index is None:
                    index = families[family] = part.family(family)
                index.add(row, time, digest)
        self.tail_records += read
        self._next_batch = next_batch

    def _check_partition(self, segment: SegmentFile, partition: int) -> None:
        if not 0 <= partition < self.partitions:
            raise StoreError(f"{segment.path}: record names partition {partition}")

    # -- checkpoint -------------------------------------------------------------------------

    def checkpoint(self) -> int:
        """Write an index checkpoint now (inserts go on meanwhile); its size in bytes.

        The store writes one by itself every ``checkpoint_bytes`` of log; this is for a
        caller that wants one at a point of its choosing.
        """
        with self._compact_lock:
            with self._lock:
                self._check_usable()
                head = self._head(clean=False)
                partitions = sorted(self._parts)
            checkpoints.fault_point("captured")
            return checkpoints.write_checkpoint(self.directory, head,
                                                self._images(partitions), sync=self.durable)

    def _head(self, *, clean: bool) -> Head:
        """The checkpoint's head: the end of the last published batch, and every file up to
        it (under the lock)."""
        log_id, offset, crc, number = self._published
        if crc is None:
            raise StoreError(f"the checksum of log segment {log_id} is not known")
        files = {}
        for segment in self._files.values():
            if segment.file_id == log_id:
                files[segment.path.name] = (offset, crc)
            elif segment.kind != KIND_LOG or segment.file_id < log_id:  # sealed
                if segment.crc is None:
                    raise StoreError(f"the checksum of {segment.path} is not known")
                files[segment.path.name] = (segment.size, segment.crc)
        log_seqs = {f: dict(seqs) for f, seqs in self._log_seqs.items()}
        return Head(files, log_id, offset, number + 1, log_seqs, clean=clean)

    def _images(self, partitions: list[int]) -> Iterator[PartitionImage]:
        """The partitions copied under the lock, a group of them at a time: a lock taken
        once per partition meant a wait for the GIL per partition while writers held it
        (1024 of them: seconds for one checkpoint during a bulk load)."""
        at = 0
        while at < len(partitions):
            images = []
            with self._lock:
                rows = 0
                while at < len(partitions) and rows < _ROWS_PER_HOLD:
                    part = self._parts.get(partitions[at])
                    at += 1
                    if part is not None:
                        images.append(capture(part))
                        rows += len(part) + 64  # a partition costs something even empty
            yield from images


def _header_missing(path: Path) -> bool:
    """Whether a segment file lacks its header: shorter, or zeros where it belongs (space
    allocated before the header was durable)."""
    with open(path, "rb") as f:
        head = f.read(HEADER_SIZE)
    return len(head) < HEADER_SIZE or not head.strip(b"\0")


class Checkpointer:
    """A thread that writes a checkpoint whenever ``every`` bytes of log have been published
    since the last one began (``published`` is told the running total), or when asked."""

    def __init__(self, write: Callable[[], object], every: int, *,
                 name: str = "cellframe-checkpoint") -> None:
        self._write = write
        self.every = every
        self._began_at = 0
        self._total = 0
        self._wake = threading.Event()
        self._stopping = False
        self._writing = False
        self.written = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def published(self, total: int) -> None:
        """The log now holds ``total`` bytes published since the open (cheap: a compare)."""
        self._total = total
        if total - self._began_at >= self.every and not self._wake.is_set():
            self._wake.set()

    def request(self) -> None:
        """Write one soon (the files changed: a compaction replaced some)."""
        self._wake.set()

    @property
    def idle(self) -> bool:
        """Neither writing a checkpoint nor about to."""
        return not self._writing and not self._wake.is_set()

    @property
    def behind(self) -> int:
        """Bytes of log published since the last checkpoint this thread began: what an open
        after a crash now would scan, unless ``Store.checkpoint()`` wrote one later."""
        return self._total - self._began_at

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._stopping:
                return
            self._writing = True  # before the clear: ``idle`` is never true in between
            self._wake.clear()
            self._began_at = self._total
            try:
                self._write()
                self.written += 1
            except Exception as error:  # the next open scans more: that is all it costs
                self.failures += 1
                log.warning("index checkpoint failed: %s", error)
            finally:
                self._writing = False

