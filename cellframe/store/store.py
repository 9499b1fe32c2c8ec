"""The append-only store: insert and select, durable by group commit, partitioned by the ring.

Layout of a store directory::

    META                       partition count and format (checked on open)
    LOCK                       flock: one open Store per directory
    guid.lease                 the shard's guid high-water mark (``lease``)
    log-00000001.seg ...       the shared log: every insert appends here
    part-00042-00000007.seg    partition 42's compacted records (at most one per partition)

Every insert of every partition goes to one shared log, so a group commit is one write and
one fsync whatever the partitions of its records: per-partition files would need one fsync
per partition touched. Each partition still has its own view (indexes, sequence, Merkle
tree) and its own compacted file. A log segment is deleted once compaction has superseded
every record in it (``compact_all``).

Opening scans the files, drops a torn tail, raises ``CorruptSegmentError`` on any other
damage, and rebuilds the in-memory indexes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import StoreError
from . import compaction
from .checkpoint import capture, write_checkpoint
from .commit import CommitBatch, GroupCommitter, ManyCallback, Tally
from .compaction import CompactionResult, Retention, kept_entries, obsolete
from .convoy import Polling
from .files import DirectoryLock, fsync_directory
from .index import FamilyIndex, PartitionState, location, split_location, tie_key
from .lease import DEFAULT_LEASE_BLOCK, GuidAllocator
from .merkle import MerkleTree
from .records import (
    Content,
    Receipt,
    Record,
    content_digest,
    encode_frame,
    encode_placed_frame,
    now_micros,
)
from .recovery import Checkpointer, Recovery
from .ring import DEFAULT_PARTITIONS, partition_of
from .segment import (
    KIND_COMPACTED,
    KIND_LOG,
    LAST_IN_BATCH,
    SegmentFile,
)

__all__ = ["InsertCallback", "ManyCallback", "Store"]

log = logging.getLogger(__name__)

#: ``callback(receipt, error)``: called once the record is durable (error None) or failed.
InsertCallback = Callable[[Receipt, BaseException | None], None]
_GUID_LIMIT = 1 << 64
#: A record queued for commit, with the partition and sequence this store gives it: the
#: caller's record itself, not a copy with them set (a Record made per record received cost a
#: quarter of the time the store spent on it).
_Placed = tuple[Content, int, int]
#: A batch written and synced: its segment, offset and frames, and the segment's CRC after it.
_Written = tuple[SegmentFile, int, list[bytes], "int | None"]

_FORMAT = 1
#: Log space allocated ahead of the writes at a time: a size change costs the next sync a
#: journal commit, once per 4 MiB of log instead of once per batch.
_PREALLOCATE = 4 << 20
#: Log between two checkpoints: an open after a crash scans about this much past the last one
#: (8 MiB is 60k records of 64 bytes, half a second here), and each checkpoint rewrites the
#: whole index (54 bytes a record: 54 MB at a million records, so 7 bytes of checkpoint per
#: byte of log at that size; it is written in the background).
DEFAULT_CHECKPOINT_BYTES = 8 << 20


class Store(Recovery):
    """A durable, append-only, deduplicating record store for one shard.

    ``fsync=False`` skips fsync (tests, bulk loads: not durable). ``group_commit=False``
    writes and fsyncs each insert on its own, in the caller's thread (the slow baseline).
    ``checkpoint_bytes``: write an index checkpoint in the background each time this much
    log has been written since the last one began (None: only at a clean close), so that an
    open after a crash scans at most about that much log.
    """

    def __init__(self, directory: str | os.PathLike[str], *, shard: int = 0,
                 partitions: int = DEFAULT_PARTITIONS, fsync: bool = True,
                 group_commit: bool = True, segment_bytes: int = 64 << 20,
                 lease_block: int = DEFAULT_LEASE_BLOCK, max_batch_bytes: int = 8 << 20,
                 checkpoint_bytes: int | None = DEFAULT_CHECKPOINT_BYTES) -> None:
        if not 1 <= partitions <= 1 << 16:
            raise ValueError(f"partitions must be 1..65536, got {partitions}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.shard = shard
        self.partitions = partitions
        self.durable = fsync
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._lock_polling = Polling(self._lock)  # the writers': see convoy.py
        self._append_lock = threading.RLock()
        self._compact_lock = threading.Lock()
        self._files: dict[int, SegmentFile] = {}
        self._log_ids: list[int] = []
        self._log_seqs: dict[int, dict[int, int]] = {}
        self._parts: dict[int, PartitionState] = {}
        self._families: dict[str, FamilyIndex] = {}
        self._next_file = 1
        self._next_batch = 1
        self._broken: BaseException | None = None
        self._closed = False
        self.batches = 0
        self.batched_records = 0
        self._dir_lock = DirectoryLock(self.directory)
        try:
            self._check_meta()
            self._guids = GuidAllocator(shard, self.directory / "guid.lease", block=lease_block)
            self._recover()
            stale = self._delete_dead_files_at_open()
            self._active = self._new_log_segment()
        except BaseException:
            self._close_files()
            self._dir_lock.release()
            raise
        #: The end of the last batch made visible: (log file id, offset, the file's CRC up to
        #: there, batch number). Where a checkpoint taken now would start its tail.
        self._published = (self._active.file_id, self._active.size, self._active.crc,
                           self._next_batch - 1)
        self._log_bytes = 0  # published since the open
        self._committer = (GroupCommitter(self._write, self._publish,
                                          max_batch_bytes=max_batch_bytes,
                                          first_batch=self._next_batch)
                           if group_commit else None)
        self._checkpointer = (Checkpointer(self.checkpoint, checkpoint_bytes)
                              if checkpoint_bytes else None)
        if stale and self._checkpointer is not None:
            self._checkpointer.request()  # the checkpoint named files deleted just now

    # -- insert -----------------------------------------------------------------------------

    def insert(self, family: str, value: bytes, *, time: int | None = None) -> Receipt:
        """Store a new version of ``family``; returns once it is durable.

        ``time`` is int microseconds since the epoch (default: now). Inserting content that
        is already stored (same family, time and value) stores nothing and returns the
        receipt of the stored record.
        """
        when = now_micros() if time is None else time
        receipt, batch = self._submit(family, when, value, None, None, None)
        if batch is not None:
            batch.wait()
        return receipt

    def insert_nowait(self, family: str, value: bytes, callback: InsertCallback | None = None,
                      *, time: int | None = None) -> Receipt:
        """Start an insert and return its receipt at once; ``callback`` runs once it is durable.

        The callback runs on the commit thread (keep it short) or, for content already
        durable, immediately in the caller's thread.
        """
        when = now_micros() if time is None else time
        return self._submit(family, when, value, None, None, callback)[0]

    def apply(self, record: Record) -> Receipt:
        """Insert a replicated record with its origin guid and time; idempotent by digest."""
        receipt, batch = self._submit(record.family, record.time, record.value, record.guid,
                                      record.digest, None)
        if batch is not None:
            batch.wait()
        return receipt

    def apply_many(self, records: Iterable[Record]) -> list[Receipt]:
        """``apply`` several records, waiting once for all of them to be durable."""
        out, batches = [], {}
        for record in records:
            receipt, batch = self._submit(record.family, record.time, record.value,
                                          record.guid, record.digest, None)
            out.append(receipt)
            if batch is not None:
                batches[id(batch)] = batch
        for batch in batches.values():
            batch.wait()
        return out

    def apply_nowait(self, record: Record,
                     callback: InsertCallback | None = None) -> Receipt:
        """``apply`` without waiting; ``callback`` as for ``insert_nowait``."""
        return self._submit(record.family, record.time, record.value, record.guid,
                            record.digest, callback)[0]

    def apply_many_nowait(self, records: Iterable[Record], callback: ManyCallback) -> None:
        """``apply`` every record without waiting; ``callback(failed, error)`` once each one
        is durable or refused.

        What a replica receiving hundreds of records a message needs: the content is checked
        outside the lock, then one lock, one hand-over to the committer and one call-back
        serve them all (``apply_nowait`` record by record took 17 us of CPU a record, commit
        included; this, 8.5). ``failed`` counts the records refused (digest, guid or fields
        wrong) and those of a commit that failed; ``error`` is the first reason. The
        call-back runs on the commit thread, or in the caller's if nothing had to be written.
        """
        tally = Tally(callback)
        checked = self._checked(records, tally)
        if self._committer is None:
            for record, digest, _ in checked:
                try:
                    self._submit(record.family, record.time, record.value, record.guid, digest,
                                 tally.expect_one())
                except StoreError as error:
                    tally.settle_one(None, error)
        elif checked:
            self._committer.throttle()
            try:
                waits = self._enqueue_many(checked)
            except StoreError as error:
                tally.fail(len(checked), error)
            else:
                for batch, count in waits:
                    tally.follow(batch, count)
        tally.close()

    def _checked(self, records: Iterable[Record], tally: Tally,
                 ) -> list[tuple[Record, bytes, int]]:
        """(record, digest, partition) of the records whose content holds; the others are
        counted as failed."""
        out = []
        families, partitions = self._families, self.partitions
        for record in records:
            family = record.family
            try:
                digest = content_digest(family, record.time, record.value)
                if digest != record.digest:
                    raise StoreError(f"record of family {family!r} does not match its digest")
                _check_guid(record.guid)
            except (StoreError, ValueError, TypeError) as error:
                tally.fail(1, error)
                continue
            index = families.get(family)
            out.append((record, digest,
                        index.partition if index is not None else partition_of(family, partitions)))
        return out

    def _enqueue_many(self, checked: list[tuple[Record, bytes, int]],
                      ) -> list[tuple[CommitBatch, int]]:
        """``_enqueue`` for many checked records under one lock: the batches to wait for,
        with how many of the records each holds."""
        assert self._committer is not None
        fresh: list[_Placed] = []
        waits: dict[int, tuple[CommitBatch, int]] = {}
        size = 0
        with self._lock_polling:
            self._check_usable()
            parts = self._parts
            for record, digest, p in checked:
                part = parts.get(p)
                if part is None:
                    part = self._part(p)
                if part.find(digest) >= 0:
                    continue  # durable already
                pending = part.pending.get(digest)
                if pending is not None:
                    batch = pending[1]
                    if batch is not None:  # None: a repeat within these records
                        waits[id(batch)] = (batch, waits.get(id(batch), (batch, 0))[1] + 1)
                    continue
                if type(record.value) is not bytes:
                    record = Record(record.family, record.time, bytes(record.value),
                                    record.guid, digest)
                item = (record, p, part.next_seq)
                part.next_seq += 1
                part.pending[digest] = (item, None)
                fresh.append(item)
                size += len(record.value) + 80
            if fresh:
                try:
                    batch = self._committer.submit_many(fresh, size)
                except StoreError:
                    for queued, p, _ in fresh:
                        del parts[p].pending[queued.digest]
                    raise
                for placed in fresh:
                    parts[placed[1]].pending[placed[0].digest] = (placed, batch)
                waits[id(batch)] = (batch, waits.get(id(batch), (batch, 0))[1] + len(fresh))
        return list(waits.values())

    def _submit(self, family: str, time: int, value: bytes, guid: int | None,
                claimed: bytes | None, callback: InsertCallback | None,
                ) -> tuple[Receipt, CommitBatch | None]:
        digest = content_digest(family, time, value)
        if claimed is not None and claimed != digest:
            raise StoreError(f"record of family {family!r} does not match its digest")
        if guid is not None:
            _check_guid(guid)
        if type(value) is not bytes:
            value = bytes(value)
        committer = self._committer
        if committer is not None:
            committer.throttle()
            return self._enqueue(family, time, value, guid, digest, callback)
        with self._append_lock:
            receipt, batch = self._enqueue(family, time, value, guid, digest, callback)
            if batch is not None and not batch.done:
                self._flush_now(batch)
            return receipt, batch

    def _enqueue(self, family: str, time: int, value: bytes, guid: int | None,
                 digest: bytes, callback: InsertCallback | None,
                 ) -> tuple[Receipt, CommitBatch | None]:
        """Dedup, then give the record its guid and sequence and queue it for commit.

        Once per insert, in series with the other blocking writers' (the GIL): a partition
        is looked up with ``get`` and a test for None (an empty ``PartitionState`` is falsy:
        ``get(p) or _part(p)`` took the slow way for each record of a partition with
        nothing durable yet, a third of the benchmark's).
        """
        index = self._families.get(family)  # a dict read is atomic; saves a hash per insert
        p = index.part.partition if index is not None else partition_of(family, self.partitions)
        with self._lock_polling:
            if self._closed or self._broken is not None:
                self._check_usable()
            part = self._parts.get(p)
            if part is None:
                part = self._part(p)
            row = part.find(digest)
            if row < 0:
                pending = part.pending.get(digest)
                if pending is not None:  # the same content is on its way to disk
                    known, waiting = _receipt(pending[0]), pending[1]
                    if callback is not None:
                        waiting.add_callback(callback, known)
                    return known, waiting
                seq = part.next_seq
                part.next_seq = seq + 1
                if guid is None:
                    guid = self._guids.allocate()
                item = (_Fresh(family, time, value, guid, digest), p, seq)
                receipt = Receipt(guid, digest, p, seq, time)
                if self._committer is not None:
                    batch = self._committer.submit(item, len(value) + 80, callback, receipt)
                else:
                    batch = _single(item, self._next_batch)
                    if callback is not None:
                        batch.add_callback(callback, receipt)
                part.pending[digest] = (item, batch)
                return receipt, batch
            receipt = self._read(part.locs[row]).receipt
        if callback is not None:
            callback(receipt, None)
        return receipt, None

    def _flush_now(self, batch: CommitBatch) -> None:
        try:
            self._publish(batch, self._write(batch))
        except BaseException as exc:
            batch.settle(exc)
        else:
            batch.settle(None)

    def _write(self, batch: CommitBatch) -> _Written:
        """Write one batch to the log and make it durable (the sync thread); what
        ``_publish`` needs to index it."""
        with self._append_lock:
            try:
                self._check_writable()
                frames, data = self._frames(batch)
                if self._active.size + len(data) > self.segment_bytes and \
                        self._active.size > 4096:
                    self._roll()
                segment = self._active
                offset = segment.append(data, sync=self.durable)
            except BaseException as exc:
                self._broken = self._broken or exc
                raise
            return segment, offset, frames, segment.crc

    def _check_writable(self) -> None:
        if self._broken is not None:
            raise StoreError(f"an earlier write failed: {self._broken}")

    def _frames(self, batch: CommitBatch) -> tuple[list[bytes], bytes]:
        number, items = batch.number, batch.items
        self._next_batch = number + 1
        frames = [encode_placed_frame(number, r, p, seq) for r, p, seq in items[:-1]]
        record, p, seq = items[-1]
        frames.append(encode_placed_frame(number | LAST_IN_BATCH, record, p, seq))
        return frames, b"".join(frames)

    def _publish(self, batch: CommitBatch, written: _Written) -> None:
        """Index a durable batch (the ack thread): ``_index`` unrolled, with the lookups
        hoisted out of the loop, which runs once per record a replica receives (4.7 us a
        record before, 3.5 after; grouping a transfer's runs of one partition saved little
        more, and cost the scattered batches of client writes 1 us a record)."""
        segment, offset, frames, crc = written
        items = batch.items
        loc = location(segment.file_id, offset)
        parts, families = self._parts, self._families
        with self._lock:
            seqs = self._log_seqs.setdefault(segment.file_id, {})
            for (record, p, seq), frame in zip(items, frames, strict=True):
                digest, family, time = record.digest, record.family, record.time
                part = parts[p]
                row = part.add(seq, digest, loc, time)
                part.pending.pop(digest, None)
                index = families.get(family)
                if index is None:
                    index = families[family] = part.family(family)
                index.add(row, time, digest)
                seqs[p] = seq
                loc += len(frame)
            end = split_location(loc)[1]
            self._published = (segment.file_id, end, crc, batch.number)
            self._log_bytes += end - offset
            if self._checkpointer is not None:
                self._checkpointer.published(self._log_bytes)
            self.batches += 1
            self.batched_records += len(items)

    def _index(self, record: Record, loc: int) -> None:
        part = self._part(record.partition)
        row = part.add(record.sequence, record.digest, loc, record.time)
        index = self._families.get(record.family)
        if index is None:
            index = self._families[record.family] = part.family(record.family)
        index.add(row, record.time, record.digest)

    # -- select -----------------------------------------------------------------------------

    def select(self, family: str, *, at: int | None = None) -> Record | None:
        """The newest version of ``family``, or the newest with time <= ``at``; None if none."""
        with self._lock:
            index = self._families.get(family)
            if index is None:
                return None
            loc = index.newest() if at is None else index.as_of(at)
            return None if loc is None else self._read(loc)

    def select_history(self, family: str, *, since: int | None = None,
                       until: int | None = None) -> list[Record]:
        """Every version of ``family`` (optionally since <= time <= until), oldest first."""
        with self._lock:
            index = self._families.get(family)
            if index is None:
                return []
            return [self._read(loc) for loc in index.between(since, until)]

    def partition_of(self, family: str) -> int:
        return partition_of(family, self.partitions)

    # -- replication support ----------------------------------------------------------------

    def last_position(self, partition: int) -> int:
        """The sequence of the partition's newest durable record (0 if none)."""
        with self._lock:
            part = self._parts.get(self._own_partition(partition))
            return 0 if part is None else part.last_seq

    def records_since(self, partition: int, position: int, limit: int = 1000) -> list[Record]:
        """Up to ``limit`` durable records of ``partition`` with sequence > ``position``,
        in append order: the stream that handoff and replication read."""
        with self._lock:
            part = self._parts.get(self._own_partition(partition))
            if part is None:
                return []
            return [self._read(loc) for loc in part.since(position, limit)]

    def merkle(self, partition: int) -> MerkleTree:
        """A snapshot of the partition's Merkle tree."""
        with self._lock:
            return self._part(partition).tree.copy()

    def merkle_nodes(self, partition: int, level: int, indices: Iterable[int]) -> list[bytes]:
        """Node hashes of the partition's tree: what a peer's ``diff`` fetch asks for."""
        with self._lock:
            return self._part(partition).tree.nodes(level, indices)

    def bucket(self, partition: int, bucket: int) -> set[bytes]:
        """The digests of the partition's records that fall in Merkle leaf ``bucket``."""
        with self._lock:
            part = self._part(partition)
            return {d for d in part.all_digests() if part.tree.bucket_of(d) == bucket}

    def holdings(self, partition: int) -> tuple[int, list[bytes]]:
        """The partition's newest durable sequence and the digests of its durable records up
        to it, read together: what a shard asks its owners to hold before dropping it."""
        with self._lock:
            part = self._parts.get(self._own_partition(partition))
            if part is None:
                return 0, []
            return part.last_seq, list(part.all_digests())

    def missing(self, partition: int, digests: Iterable[bytes]) -> list[bytes]:
        """The ``digests`` of which the partition holds no durable record."""
        with self._lock:
            part = self._parts.get(self._own_partition(partition))
            if part is None:
                return list(digests)
            return [d for d in digests if part.find(d) < 0]

    def partitions_held(self) -> list[int]:
        """The partitions holding at least one durable record, in order."""
        with self._lock:
            return sorted(p for p, part in self._parts.items() if len(part))

    def fetch(self, partition: int, digests: Iterable[bytes]) -> list[Record]:
        """The records of ``partition`` with these digests (unknown digests are skipped)."""
        with self._lock:
            part = self._part(partition)
            rows = [row for row in map(part.find, digests) if row >= 0]
            return [self._read(part.locs[row]) for row in rows]

    # -- compaction -------------------------------------------------------------------------

    def retained(self, records: Iterable[Record], keep: Retention) -> list[Record]:
        """The ``records`` that ``keep`` would not drop, given what this store holds.

        A record is dropped when the next compaction would drop it from the store plus these
        records (``compaction.obsolete``); one already held is kept (applying it changes
        nothing). What a replica applies of a peer's records, so that a version its
        compaction removed does not come back from a replica that has not compacted yet.
        """
        records = list(records)
        by_family: dict[str, dict[tuple[int, int], list[int]]] = {}
        for i, record in enumerate(records):
            version = (record.time, tie_key(record.digest))
            by_family.setdefault(record.family, {}).setdefault(version, []).append(i)
        dropped: set[int] = set()
        with self._lock:
            for family, versions in by_family.items():
                index = self._families.get(family)
                held = index.versions() if index is not None else ()
                part = index.part if index is not None else None
                fresh = sorted(v for v, at in versions.items()
                               if part is None or part.find(records[at[0]].digest) < 0)
                for version, gone in zip(fresh, obsolete(fresh, held, keep), strict=True):
                    if gone:
                        dropped.update(versions[version])
        return [r for i, r in enumerate(records) if i not in dropped]

    def compact(self, partition: int, keep: Retention) -> CompactionResult:
        """Rewrite the partition keeping what ``keep`` says; inserts go on meanwhile."""
        return self._rewrite(partition, lambda snapshot: kept_entries(snapshot, keep))

    def drop_partition(self, partition: int, *, upto: int | None = None) -> CompactionResult:
        """Forget the partition's durable records with sequence <= ``upto`` (default: all).

        For a shard that no longer owns the partition, once its owners are known to hold
        what it holds. It is a compaction that keeps nothing (or only the records after
        ``upto``, which arrived after the owners were asked), with the same crash-safe steps:
        a crash leaves the old records or none, never part of them. Sequences go on from
        where they were, so a transfer that later reads this store from an old position
        misses nothing received afterwards.
        """
        if upto is None:
            return self._rewrite(partition, lambda snapshot: [])
        return self._rewrite(partition,
                             lambda snapshot: [e for e in snapshot if e[0] > upto])

    def _rewrite(self, partition: int,
                 choose: Callable[[list[tuple[int, int, Record]]],
                                  list[tuple[int, int, Record]]]) -> CompactionResult:
        """Replace the partition's durable records by those ``choose`` keeps of them."""
        with self._compact_lock:
            with self._lock:
                self._check_usable()
                part = self._part(partition)
                covers = part.last_seq
                entries = part.upto(covers)
                file_id = self._take_file_id()
            # Read outside the lock: only compaction deletes files, and we hold its lock.
            snapshot = [(seq, loc, self._read(loc)) for seq, loc in entries]
            kept = choose(snapshot)
            compaction.fault_point("snapshot")
            segment, moved = self._write_compacted(partition, file_id, covers, kept)
            self._install(part, segment, covers, snapshot, moved)
            compaction.fault_point("installed")
            deleted = self._delete_dead_files()
            compaction.fault_point("cleaned")
            if self._checkpointer is not None:
                self._checkpointer.request()  # the last checkpoint names replaced files
            return CompactionResult(partition, covers, len(kept), len(snapshot) - len(kept),
                                    segment.size, deleted)

    def compact_all(self, keep: Retention, *, only: Iterable[int] | None = None,
                    stop: Callable[[], bool] | None = None) -> list[CompactionResult]:
        """Compact every partition (or those of ``only``) after starting a new log segment,
        so old ones can go; ``stop()`` true between two partitions ends it (a cell stopping)."""
        with self._append_lock:
            if self._active.size > 4096:
                self._roll()
        with self._lock:
            partitions = sorted(p for p, part in self._parts.items() if len(part))
        if only is not None:
            partitions = sorted(set(partitions).intersection(only))
        results = []
        for p in partitions:
            if stop is not None and stop():
                break
            results.append(self.compact(p, keep))
        return results

    def _write_compacted(self, partition: int, file_id: int, covers: int,
                         kept: list[tuple[int, int, Record]],
                         ) -> tuple[SegmentFile, dict[int, int]]:
        """Steps written .. committed: the new file, durable and renamed into place."""
        name = f"part-{partition:05d}-{file_id:08d}"
        tmp = self.directory / f"{name}.tmp"
        segment = SegmentFile.create(tmp, file_id=file_id, kind=KIND_COMPACTED,
                                     partition=partition, covers=covers, sync=False)
        frames = [encode_frame(0, record) for _, _, record in kept]
        offset = segment.append(b"".join(frames))
        moved = {}
        for (_, loc, _), frame in zip(kept, frames, strict=True):
            moved[loc] = location(file_id, offset)
            offset += len(frame)
        compaction.fault_point("written")
        segment.sync()
        compaction.fault_point("synced")
        final = self.directory / f"{name}.seg"
        os.rename(tmp, final)
        segment.path = final
        compaction.fault_point("renamed")
        fsync_directory(self.directory)
        compaction.fault_point("committed")
        return segment, moved

    def _install(self, part: PartitionState, segment: SegmentFile, covers: int,
                 snapshot: list[tuple[int, int, Record]], moved: dict[int, int]) -> None:
        """Switch the partition's indexes to the compacted file (the snapshot's entries are
        the partition's first rows, in order)."""
        kept = [(row, moved[loc]) for row, (_, loc, _) in enumerate(snapshot) if loc in moved]
        with self._lock:
            self._files[segment.file_id] = segment
            old = part.compacted_file
            part.compacted_file = segment.file_id
            for family in part.replace_prefix(covers, kept):
                del self._families[family]  # every version dropped: gone from here
            if old is not None:
                self._files[old].covers = -1  # marks it for deletion

    def _delete_dead_files(self) -> int:
        """Delete superseded compacted files and log segments whose records are all superseded."""
        with self._lock:
            dead = [f for f in self._files.values() if f.kind == KIND_COMPACTED and f.covers < 0]
            for file_id in self._log_ids:
                seqs = self._log_seqs.get(file_id, {})
                if file_id != self._active.file_id and all(
                        seq <= self._part(p).covers for p, seq in seqs.items()):
                    dead.append(self._files[file_id])
            for f in dead:
                del self._files[f.file_id]
                self._log_seqs.pop(f.file_id, None)
            self._log_ids = [i for i in self._log_ids if i in self._files]
        for f in dead:
            f.close()
            f.path.unlink()
        if dead:
            fsync_directory(self.directory)
        return len(dead)

    # -- files and recovery -----------------------------------------------------------------

    def _read(self, loc: int) -> Record:
        file_id, offset = split_location(loc)
        return self._files[file_id].read(offset)[1]

    def _part(self, partition: int) -> PartitionState:
        part = self._parts.get(self._own_partition(partition))
        if part is None:
            part = self._parts[partition] = PartitionState(partition)
        return part

    def _own_partition(self, partition: object) -> int:
        """``partition`` if it names one of this store's partitions, else TypeError or
        ValueError. ``merkle(3.5)`` made a partition 3.5 the store kept: no checkpoint could
        be written from then on (struct.error), and ``close`` raised it."""
        if type(partition) is not int:
            raise TypeError(f"partition must be an int, not {type(partition).__name__}")
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} is outside 0..{self.partitions - 1}")
        return partition

    def _take_file_id(self) -> int:
        file_id = self._next_file
        self._next_file += 1
        return file_id

    def _new_log_segment(self) -> SegmentFile:
        file_id = self._take_file_id()
        segment = SegmentFile.create(self.directory / f"log-{file_id:08d}.seg",
                                     file_id=file_id, kind=KIND_LOG, sync=self.durable,
                                     preallocate=min(self.segment_bytes, _PREALLOCATE))
        self._files[file_id] = segment
        self._log_ids.append(file_id)
        return segment

    def _roll(self) -> None:
        """Seal the active log segment and start a new one (under the append lock)."""
        self._active.trim(sync=self.durable)  # sealed: no zeros past its last frame
        with self._lock:
            self._active = self._new_log_segment()

    def _check_meta(self) -> None:
        path = self.directory / "META"
        want = {"format": _FORMAT, "partitions": self.partitions}
        if path.exists():
            try:
                have = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise StoreError(f"{path} is unreadable: {exc}") from exc
            if have != want:
                raise StoreError(f"{self.directory} was created with {have}, opened with {want}")
            return
        tmp = path.with_name("META.tmp")
        tmp.write_text(json.dumps(want))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_directory(self.directory)

    def _delete_dead_files_at_open(self) -> int:
        self._active = self._files[self._log_ids[-1]] if self._log_ids else _NO_SEGMENT
        return self._delete_dead_files()

    # -- lifecycle --------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise StoreError(f"the store at {self.directory} is closed")
        if self._broken is not None:
            raise StoreError(f"the store at {self.directory} failed to write and must be "
                             f"reopened: {self._broken}")

    def close(self) -> None:
        """Commit what is queued, then close the files and release the directory."""
        if self._closed:
            return
        if self._committer is not None:
            self._committer.close()
        if self._checkpointer is not None:
            self._checkpointer.close()
        try:
            with self._compact_lock, self._append_lock, self._lock:
                self._closed = True
                try:
                    if self._broken is None:
                        self._leave_checkpoint()
                finally:
                    self._close_files()
        finally:
            self._dir_lock.release()

    def _leave_checkpoint(self) -> None:
        """Write a checkpoint of everything for the next open (on a clean close, under the
        locks; a failure costs only time: the next open scans more)."""
        try:
            self._active.trim(sync=self.durable)  # sealed: no zeros past its last frame
            self._published = (self._active.file_id, self._active.size, self._active.crc,
                               self._next_batch - 1)
            head = self._head(clean=True)
            images = (capture(self._parts[p]) for p in sorted(self._parts))
            write_checkpoint(self.directory, head, images, sync=self.durable)
        except (OSError, ValueError, StoreError) as error:
            log.warning("no index checkpoint left in %s (the next open scans): %s",
                        self.directory, error)

    def _close_files(self) -> None:
        for segment in self._files.values():
            segment.close()

    def stats(self) -> dict[str, Any]:
        """Counts for monitoring and benchmarks."""
        with self._lock:
            return {
                "records": sum(len(p) for p in self._parts.values()),
                "families": len(self._families),
                "partitions_used": sum(1 for p in self._parts.values() if len(p)),
                "files": len(self._files),
                "bytes": sum(f.size for f in self._files.values()),
                "batches": self.batches,
                "mean_batch": self.batched_records / self.batches if self.batches else 0.0,
            }

    def checkpoint_status(self) -> dict[str, Any]:
        """The background checkpoints: how many were written, whether one is being written or
        due, and the bytes of log published since the last one it began (what an open after a
        crash would scan). Empty without background checkpoints (``checkpoint_bytes=None``)."""
        checkpointer = self._checkpointer
        if checkpointer is None:
            return {}
        return {"written": checkpointer.written, "failures": checkpointer.failures,
                "idle": checkpointer.idle, "log_bytes_since": checkpointer.behind}

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.directory)!r}, shard={self.shard})"


class _Fresh(NamedTuple):
    """A fresh insert as queued for commit (``records.Content``)."""

    family: str
    time: int
    value: bytes
    guid: int
    digest: bytes


class _NoSegment:
    """Stands in for the active segment while recovery runs (never written to)."""

    file_id = -1
    size = 0


_NO_SEGMENT: Any = _NoSegment()


def _receipt(item: _Placed) -> Receipt:
    record, partition, sequence = item
    return Receipt(record.guid, record.digest, partition, sequence, record.time)


def _check_guid(guid: int) -> None:
    """A guid the store can write: unsigned 64 bits (a negative one, the signed view a
    ``bigint`` column returns, once failed the commit and with it the whole store)."""
    if not (type(guid) is int and 0 <= guid < _GUID_LIMIT):
        raise ValueError(f"guid must be an int in 0..2**64-1, got {guid!r}")


def _single(item: _Placed, number: int) -> CommitBatch:
    batch = CommitBatch(number)
    batch.items.append(item)
    return batch
