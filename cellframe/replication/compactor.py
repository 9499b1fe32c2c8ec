"""Compaction in the cluster: every replica compacts by the one rule, on a thread of its own.

``(compact)`` sent to ``each.shard`` compacts every partition each shard cell holds, by the
cluster's rule (``shard.retention``); ``shard.compact-ms`` also runs it periodically. Each
cell answers a ``reply_to`` with ``(compacted :partitions P :kept K :dropped D :bytes B
:seconds S ...)`` once done, or ``(error :reason R)`` (no rule, a compaction running, no
store).

What keeps compaction and healing from undoing each other:

* a replica applies no record its rule would drop, given what it holds (``when_durable``
  and ``Store.retained``): anti-entropy, transfers, read repair and drops cannot bring back
  what it compacted away;
* a replica that skips such records tells their sender ``(compact :partitions '(p ...))``:
  the sender holds versions the rule drops, so it compacts those partitions too (at most
  once per ``NUDGE_EVERY`` per peer and partition). Until it has, the two Merkle roots differ
  and each anti-entropy round walks to the differing buckets and moves their records for
  nothing; the nudge bounds that to a round or two.

Compaction runs on a thread of its own: a partition's compaction reads it, writes and fsyncs
a file, and that could hold the cell's thread (and every write and read it serves) for as
long. ``Store.compact`` is made to run while inserts continue; everything the cell's thread
does meanwhile goes through the store's locks, and nothing it decides depends on a version
the rule drops being there. A drop on the cell's thread waits for the partition being
compacted, at most one partition's compaction.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..cell.statemachine import transition
from ..errors import CellframeError
from ..failures import log_failure
from ..language.symbols import Keyword, Symbol
from ..store import CompactionResult, Record, Retention
from ..wire.envelope import request_id
from .base import ShardBase, _int
from .wire import quoted

__all__ = ["NUDGE_EVERY", "Compactions"]

log = logging.getLogger(__name__)

#: Seconds between two ``(compact ...)`` nudges to one peer about one partition.
NUDGE_EVERY = 5.0
#: Seconds ``on_stop`` waits for the partition being compacted before closing the store.
STOP_WAIT = 30.0


class Compactions(ShardBase):
    """The part of the shard cell that compacts by the cluster's retention rule."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.compaction: threading.Thread | None = None
        self.compaction_stop = threading.Event()
        self.compaction_queue: set[int] = set()  # partitions nudged while one ran
        self.nudged: dict[tuple[int, int], float] = {}
        interval = self.config.compact_interval
        self.next_compaction = None if interval is None else time.monotonic() + interval

    # -- starting -----------------------------------------------------------------------------

    @transition("compact")
    def compact(self, partitions: Any = None, **extra: Any) -> None:
        """Compact every held partition (or ``:partitions '(p ...)``, a peer's nudge)."""
        message = self.cell_message
        reply_to = message.reply_to if message is not None else None
        request = request_id(message) if message is not None else None
        chosen = None
        if isinstance(partitions, list):
            chosen = [p for p in partitions if _int(p) and 0 <= p < self.config.partitions]
        reason = self.start_compaction(chosen, reply_to, request)
        if reason is not None:
            self.reply(reply_to, [Symbol("error"), Keyword("cell"), self.cell_name,
                                  Keyword("reason"), reason, Keyword("request"), request], request)

    def start_compaction(self, partitions: list[int] | None, reply_to: str | None = None,
                         request: str | None = None) -> str | None:
        """Start compacting ``partitions`` (None: every held one); why not, if it cannot."""
        keep = self.retention_now()
        if self.store is None:
            return self.broken or "the store is closed"
        if keep is None:
            return "no retention rule: set shard.retention (e.g. newest=3) to compact"
        if self.compaction is not None:
            if partitions is None:
                return "a compaction is running"
            self.compaction_queue.update(partitions)  # next, as soon as this one ends
            return None
        self.compaction = threading.Thread(
            target=self._compact_all, args=(keep, partitions, reply_to, request),
            name=f"{self.cell_name}-compaction", daemon=True)
        self.compaction.start()
        return None

    def on_tick(self, now: float) -> None:
        super().on_tick(now)
        interval = self.config.compact_interval
        if self.next_compaction is not None and interval is not None and \
                now >= self.next_compaction:
            self.next_compaction = now + interval
            self.start_compaction(None)

    # -- the compaction thread ----------------------------------------------------------------

    def _compact_all(self, keep: Retention, partitions: list[int] | None, reply_to: str | None,
                     request: str | None) -> None:
        """Compact on this thread; hand the outcome to the cell's thread."""
        store, started = self.store, time.monotonic()
        results: list[CompactionResult] = []
        error: BaseException | None = None
        try:
            assert store is not None
            results = store.compact_all(keep, only=partitions, stop=self.compaction_stop.is_set)
        except (OSError, CellframeError) as exc:
            error = exc
        except Exception as exc:  # a bug must still free the slot and be seen
            log_failure(log, exc, "%s: compaction failed", self.cell_name)
            error = exc
        self.later(self._compacted, results, error, time.monotonic() - started, reply_to,
                   request)

    def _compacted(self, results: list[CompactionResult], error: BaseException | None,
                   seconds: float, reply_to: str | None, request: str | None) -> None:
        self.compaction = None
        if self.compaction_queue:
            queued, self.compaction_queue = sorted(self.compaction_queue), set()
            self.start_compaction(queued)
        self._report(results, error, seconds, reply_to, request)

    def _report(self, results: list[CompactionResult], error: BaseException | None,
                seconds: float, reply_to: str | None, request: str | None) -> None:
        """Count a compaction's outcome, log it, and answer whoever asked for it."""
        dropped = sum(r.dropped for r in results)
        self.count("compactions")
        self.count("partitions_compacted", len(results))
        self.count("records_compacted", dropped)
        if error is not None:
            log.warning("%s: compaction stopped after %d partitions: %s", self.cell_name,
                        len(results), error)
            self.reply(reply_to, [Symbol("error"), Keyword("cell"), self.cell_name,
                                  Keyword("reason"), f"compaction failed: {error}",
                                  Keyword("request"), request], request)
            return
        log.info("%s: compacted %d partitions in %.3f s, %d records dropped", self.cell_name,
                 len(results), seconds, dropped)
        self.reply(reply_to, [Symbol("compacted"), Keyword("request"), request,
                              Keyword("node"), self.node_name, Keyword("shard"), self.me,
                              Keyword("partitions"), len(results),
                              Keyword("kept"), sum(r.kept for r in results),
                              Keyword("dropped"), dropped,
                              Keyword("bytes"), sum(r.bytes_written for r in results),
                              Keyword("seconds"), round(seconds, 3)], request)

    def on_stop(self) -> None:
        self.compaction_stop.set()
        worker = self.compaction
        if worker is not None:
            worker.join(STOP_WAIT)  # the store closes next: let the partition in hand finish
        super().on_stop()

    # -- nudging peers ------------------------------------------------------------------------

    def on_obsolete(self, source: int | None, records: list[Record]) -> None:
        """Tell ``source`` to compact the partitions of ``records``, which our rule drops."""
        super().on_obsolete(source, records)
        if source is None or source == self.me or self.store is None:
            return
        now = time.monotonic()
        due = []
        for p in sorted({self.store.partition_of(r.family) for r in records}):
            if now - self.nudged.get((source, p), -float("inf")) >= NUDGE_EVERY:
                self.nudged[(source, p)] = now
                due.append(p)
        if len(self.nudged) > 4096:
            self.nudged = {k: t for k, t in self.nudged.items() if now - t < NUDGE_EVERY}
        if due:
            self.count("compaction_nudges")
            self.send_to(source, [Symbol("compact"), Keyword("shard"), self.me,
                                  Keyword("partitions"), quoted(due)])
