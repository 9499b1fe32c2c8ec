"""Replication of the append-only store across shard cells, and its healing.

The shard cell (``cellframe.roles.ShardCell``, role ``shard``) is composed of the parts here:

* ``base``: the store, the live peers (``peers``) and the ring view (``ringview``);
* ``coordinate``: insert / select / history with W and R quorums and read repair (``quorum``);
* ``antientropy``: Merkle comparison over messages, repairing missing records;
* ``transfers``: resumable, budgeted partition transfers when the ring changes;
* ``drops``: dropping a partition the ring moved away, once its owners hold it;
* ``compactor`` and ``retention``: compaction by the cluster's one retention rule, and no
  record the rule dropped coming back from a peer;
* ``wire``: records and digests in messages, cut to fit.

The protocol, with the measurements behind its choices, is described in
``docs/replication.md``.
"""

from __future__ import annotations

from .config import ShardConfig, derive_shard_id
from .peers import Peer, ShardPeers
from .quorum import PendingRead, PendingWrite
from .ringview import RingView

__all__ = [
    "PendingRead",
    "PendingWrite",
    "Peer",
    "RingView",
    "ShardConfig",
    "ShardPeers",
    "derive_shard_id",
]
