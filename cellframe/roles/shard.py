"""The shard cell: one node's part of the replicated, self-healing append-only store.

Each shard cell opens a ``Store`` under its data directory and keeps N copies of every
partition of the ring across the live shard cells (the protocol is in
``cellframe.replication`` and ``docs/replication.md``). Clients talk to ``role.shard`` (any
shard cell) with call-backs:

=======================================  ====================================================
``(insert family value [:time T])``      ``(inserted :family F :guid G :time T :copies C)``
                                         once W replicas hold it durably
``(select family [:as-of T])``           ``(selected :family F :found true :guid G :time T
                                         :value V)`` (or ``:found false``), R replicas asked
``(history family [:since T] [:until T])``  ``(history-selected :family F :versions
                                         '((:guid G :time T :value V) ...))``, oldest first
``(shard-status)``                       ``(shard-status-is :shard S :store (...) ...)``
``(roots)``                              ``(roots-are :shard S :roots '((p hex) ...))``: the
                                         Merkle root of every non-empty partition
``(compact)``                            ``(compacted :shard S :partitions P :kept K
                                         :dropped D :bytes B :seconds S)`` once every held
                                         partition is compacted by ``shard.retention``
=======================================  ====================================================

Every failure is a call-back too: ``(error :reason R :family F :request ID)``. Times are int
microseconds since the epoch; ``:request`` echoes the client's message id.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ..cell.statemachine import transition
from ..language.symbols import Keyword, Symbol
from ..replication.antientropy import AntiEntropy
from ..replication.compactor import Compactions
from ..replication.config import ShardConfig
from ..replication.coordinate import Coordinator
from ..replication.drops import Drops
from ..replication.transfers import Handoff
from ..replication.wire import chunks, quoted
from ..store.merkle import EMPTY

__all__ = ["ShardCell"]

_SETTINGS = frozenset(f.name for f in fields(ShardConfig))


class ShardCell(Coordinator, AntiEntropy, Handoff, Drops, Compactions):
    """Replicates the append-only store across shard nodes and heals it (role ``shard``)."""

    role = "shard"
    states = ("serving",)
    initial = "serving"

    @classmethod
    def configured(cls, **overrides: Any) -> type[ShardCell]:
        """A ShardCell class whose settings are ``overrides`` over DNS (``fsync=False``,
        ``partitions=64``, ``write_quorum=3``...): for tests, benchmarks and demos."""
        unknown = sorted(set(overrides) - _SETTINGS)
        if unknown:
            raise TypeError(f"unknown shard settings: {', '.join(unknown)}")
        merged = {**cls.shard_overrides, **overrides}
        return type("ShardCell", (cls,), {"shard_overrides": merged, "__module__": cls.__module__})

    @transition("roots")
    def roots(self) -> None:
        """Reply with the Merkle root of every non-empty partition (several call-backs when
        they do not fit in one), to compare replicas from outside."""
        store = self.store
        entries = []
        if store is not None:
            for p in range(self.config.partitions):
                root = store.merkle_nodes(p, 0, [0])[0]
                if root != EMPTY:
                    entries.append([p, root.hex()])
        parts = list(chunks(entries, lambda e: 40)) or [[]]
        request = self.cell_message.id if self.cell_message is not None else None
        for i, part in enumerate(parts):
            self.cell_reply([Symbol("roots-are"), Keyword("request"), request,
                             Keyword("node"), self.node_name,
                             Keyword("shard"), self.me, Keyword("part"), i,
                             Keyword("parts"), len(parts), Keyword("roots"), quoted(part)])
