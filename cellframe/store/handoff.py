"""Handoff: stream a partition from one store to another, resumably and within a budget.

A transfer reads the source partition in sequence order (``records_since``) and the receiver
applies each batch, waits until it is durable, and only then records the batch's last source
sequence as its checkpoint (fsynced). After a crash on either side the transfer restarts from
the checkpoint: nothing is skipped, and a batch applied but not yet checkpointed is sent
again and changes nothing (``apply`` deduplicates by digest). A checkpoint counts in the
*source's* sequence numbers, so its key names the source shard; resuming from a different
source starts from zero (cheaply: everything already there is a no-op).

Bandwidth: one ``TokenBucket`` per node, shared by every transfer the node sends, caps their
total rate in bytes per second (record bytes as stored: family + value + 80 bytes of
framing). ``HandoffSender.next_batch`` never sleeps: it says how long to wait before sending,
so an actor can schedule the send instead of blocking; ``run_transfer`` (a local driver for
tests and same-node moves) simply sleeps.

``reconcile`` is Merkle anti-entropy between two stores, written against the same calls a
message-based version will make.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError
from .files import fsync_directory
from .merkle import diff
from .records import Record
from .store import Store

__all__ = [
    "Checkpoints",
    "HandoffBatch",
    "HandoffReceiver",
    "HandoffSender",
    "ReconcileResult",
    "TokenBucket",
    "TransferResult",
    "parse_transfer_key",
    "reconcile",
    "record_bytes",
    "run_transfer",
    "transfer_key",
]

_FRAMING = 80
_READ_STEP = 32


def record_bytes(record: Record) -> int:
    """What a record costs against the bandwidth budget."""
    return len(record.family) + len(record.value) + _FRAMING


class TokenBucket:
    """A byte-rate budget shared by threads: ``rate`` bytes/s, bursts up to ``burst`` bytes."""

    def __init__(self, rate: float, *, burst: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = float(rate)
        self.burst = int(rate) if burst is None else burst
        self._clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(self.burst)
        self._stamp = clock()

    def reserve(self, nbytes: int) -> float:
        """Take ``nbytes`` now (going into debt if need be); return seconds to wait first."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= nbytes
            return max(0.0, -self._tokens / self.rate)

    def acquire(self, nbytes: int) -> None:
        """Block until ``nbytes`` may be sent."""
        delay = self.reserve(nbytes)
        if delay > 0:
            self.sleep(delay)


class Checkpoints:
    """Durable positions by transfer key: an append-only file of checksummed lines.

    ``set`` appends one line and fsyncs it; on open the last intact line of each key wins,
    and a torn last line is ignored. The file is rewritten (atomically) when it has grown to
    many times the number of keys.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._positions: dict[str, int] = {}
        self._lines = 0
        self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def get(self, key: str) -> int:
        """The recorded position for ``key`` (0: nothing received yet)."""
        with self._lock:
            return self._positions.get(key, 0)

    def keys(self) -> list[str]:
        """The keys with a recorded position, sorted."""
        with self._lock:
            return sorted(self._positions)

    def set(self, key: str, position: int) -> None:
        """Record ``position`` for ``key`` durably."""
        self.update({key: position})

    def forget(self, key: str) -> None:
        """Drop a finished transfer's checkpoint (recorded as position -1, then compacted)."""
        self.update({}, [key])

    def update(self, positions: Mapping[str, int], forget: Iterable[str] = ()) -> None:
        """Record many positions and drop many keys durably: one write, one fsync.

        A node receiving a thousand partitions at once finishes a thousand transfers in a
        few seconds; one fsync each (``set``, ``forget``) held its cell's thread for most
        of them.
        """
        gone = list(forget)
        for key in (*positions, *gone):
            _check_key(key)
        if not positions and not gone:
            return
        data = b"".join([*(_line(k, v) for k, v in positions.items()),
                         *(_line(k, -1) for k in gone)])
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
            self._positions.update(positions)
            for key in gone:
                self._positions.pop(key, None)
            self._lines += len(positions) + len(gone)
            if self._lines > 1000 + 4 * len(self._positions):
                self._rewrite()

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a torn last line: cut it, or the next line would glue onto it
            os.truncate(self.path, end)
        for raw in data[:end].split(b"\n"):
            parsed = _parse(raw)
            if parsed is not None:
                key, position = parsed
                self._lines += 1
                if position < 0:
                    self._positions.pop(key, None)
                else:
                    self._positions[key] = position

    def _rewrite(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = b"".join(_line(k, v) for k, v in sorted(self._positions.items()))
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_directory(self.path.parent)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._lines = len(self._positions)


def _check_key(key: str) -> None:
    if not key or any(c.isspace() for c in key):
        raise ValueError(f"checkpoint key must be non-empty without spaces: {key!r}")


def _line(key: str, position: int) -> bytes:
    text = f"{key} {position}".encode()
    return text + f" {zlib.crc32(text):08x}\n".encode()


def _parse(raw: bytes) -> tuple[str, int] | None:
    parts = raw.rsplit(b" ", 1)
    if len(parts) != 2 or len(parts[1]) != 8:
        return None
    try:
        if int(parts[1], 16) != zlib.crc32(parts[0]):
            return None
        key, position = parts[0].decode().rsplit(" ", 1)
        return key, int(position)
    except ValueError:
        return None


def transfer_key(partition: int, source_shard: int, target_shard: int) -> str:
    """The checkpoint key of one transfer: partition, source and target."""
    return f"p{partition}:{source_shard}->{target_shard}"


def parse_transfer_key(key: str) -> tuple[int, int, int] | None:
    """(partition, source, target) of a ``transfer_key``; None for another key."""
    head, _, target = key.partition("->")
    partition, _, source = head.partition(":")
    try:
        return int(partition.removeprefix("p")), int(source), int(target)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class HandoffBatch:
    """Records of one partition in source order; ``last`` is the source sequence to record."""

    partition: int
    records: tuple[Record, ...]
    last: int
    nbytes: int


class HandoffSender:
    """The source side: cuts the partition's stream into batches and charges the budget."""

    def __init__(self, store: Store, partition: int, *, budget: TokenBucket | None = None,
                 batch_bytes: int = 256 << 10, batch_records: int = 1000) -> None:
        self.store = store
        self.partition = partition
        self.budget = budget
        self.batch_bytes = batch_bytes
        self.batch_records = batch_records

    def next_batch(self, position: int) -> tuple[HandoffBatch | None, float]:
        """(the batch after ``position`` or None when caught up, seconds to wait first)."""
        chosen: list[Record] = []
        nbytes = 0
        full = False
        while not full and len(chosen) < self.batch_records:
            # Read a little at a time: a batch cut by its bytes after a read of
            # ``batch_records`` read (and decoded) records only to drop them.
            step = min(_READ_STEP, self.batch_records - len(chosen))
            records = self.store.records_since(self.partition, position, step)
            for record in records:
                size = record_bytes(record)
                if chosen and nbytes + size > self.batch_bytes:
                    full = True
                    break
                chosen.append(record)
                nbytes += size
            if len(records) < step:
                break
            position = records[-1].sequence
        if not chosen:
            return None, 0.0
        delay = self.budget.reserve(nbytes) if self.budget is not None else 0.0
        return HandoffBatch(self.partition, tuple(chosen), chosen[-1].sequence, nbytes), delay


class HandoffReceiver:
    """The target side: applies a batch durably, then checkpoints it durably."""

    def __init__(self, store: Store, checkpoints: Checkpoints, key: str) -> None:
        self.store = store
        self.checkpoints = checkpoints
        self.key = key

    @property
    def position(self) -> int:
        return self.checkpoints.get(self.key)

    def receive(self, batch: HandoffBatch) -> int:
        """Apply ``batch`` (idempotent) and record its checkpoint; return the new position."""
        if batch.last <= self.position:
            return self.position  # a late duplicate of a batch already recorded
        self.store.apply_many(batch.records)
        self.checkpoints.set(self.key, batch.last)
        return batch.last


@dataclass(frozen=True, slots=True)
class TransferResult:
    """What one run of a transfer did."""

    partition: int
    position: int
    records: int
    nbytes: int
    batches: int


def run_transfer(source: Store, target: Store, partition: int, checkpoints: Checkpoints, *,
                 budget: TokenBucket | None = None, key: str | None = None,
                 batch_bytes: int = 256 << 10) -> TransferResult:
    """Copy ``partition`` from ``source`` to ``target`` from the checkpoint until caught up."""
    key = key or transfer_key(partition, source.shard, target.shard)
    sender = HandoffSender(source, partition, budget=budget, batch_bytes=batch_bytes)
    receiver = HandoffReceiver(target, checkpoints, key)
    records = nbytes = batches = 0
    while True:
        batch, delay = sender.next_batch(receiver.position)
        if batch is None:
            return TransferResult(partition, receiver.position, records, nbytes, batches)
        if delay > 0 and budget is not None:
            budget.sleep(delay)
        receiver.receive(batch)
        records += len(batch.records)
        nbytes += batch.nbytes
        batches += 1


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    """What one anti-entropy exchange found and moved."""

    buckets: frozenset[int]
    pulled: int
    pushed: int
    fetches: int


def reconcile(local: Store, remote: Store, partition: int) -> ReconcileResult:
    """Merkle anti-entropy: make both stores hold the union of the partition's records."""
    fetches = 0

    def fetch(level: int, indices: Sequence[int]) -> list[bytes]:
        nonlocal fetches
        fetches += 1
        return remote.merkle_nodes(partition, level, indices)

    buckets = diff(local.merkle(partition), fetch)
    pulled = pushed = 0
    for bucket in sorted(buckets):
        mine, theirs = local.bucket(partition, bucket), remote.bucket(partition, bucket)
        incoming = remote.fetch(partition, theirs - mine)
        outgoing = local.fetch(partition, mine - theirs)
        local.apply_many(incoming)
        remote.apply_many(outgoing)
        pulled += len(incoming)
        pushed += len(outgoing)
    if buckets and local.merkle(partition).root() != remote.merkle(partition).root():
        raise StoreError(f"partition {partition} still differs after reconciling")
    return ReconcileResult(frozenset(buckets), pulled, pushed, fetches)
