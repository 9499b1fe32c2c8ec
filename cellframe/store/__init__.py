"""The data layer: guid leases, the partition ring, and the append-only Merkle-hashed store.

* ``GuidAllocator``: a shard's 64-bit guids, leased durably in blocks (never reissued).
* ``Ring``: fixed partitions claimed by shards, N replicas each; ``plan_transfer`` says
  exactly which partitions move when membership changes.
* ``Store``: insert and select only; records are immutable and deduplicated by content;
  durable by group commit; per-partition sequence, Merkle tree and compaction.
* ``handoff``: resumable, bandwidth-limited partition transfers between stores.

The design, with the decisions and the measurements behind them, is in ``docs/data.md``.
"""

from __future__ import annotations

from .compaction import CompactionResult, Retention
from .handoff import (
    Checkpoints,
    HandoffReceiver,
    HandoffSender,
    TokenBucket,
    TransferResult,
    reconcile,
    run_transfer,
)
from .lease import GuidAllocator
from .merkle import MerkleTree, diff
from .records import Receipt, Record, content_digest, now_micros, pack, unpack
from .ring import Ring, Transfer, moved_fraction, partition_of, partitions_for, plan_transfer
from .store import Store

__all__ = [
    "Checkpoints",
    "CompactionResult",
    "GuidAllocator",
    "HandoffReceiver",
    "HandoffSender",
    "MerkleTree",
    "Receipt",
    "Record",
    "Retention",
    "Ring",
    "Store",
    "TokenBucket",
    "Transfer",
    "TransferResult",
    "content_digest",
    "diff",
    "moved_fraction",
    "now_micros",
    "pack",
    "partition_of",
    "partitions_for",
    "plan_transfer",
    "reconcile",
    "run_transfer",
    "unpack",
]
