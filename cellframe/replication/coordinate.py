"""Client verbs of a shard cell: insert, select and history, coordinated over the replicas.

``(insert family value)`` may reach any shard cell (the ``role.shard`` queue hands it to one).
A cell that is not the partition's coordinator (its first live owner) forwards it there,
with the client's reply address; a forward that comes back unroutable (the coordinator just
died) marks that peer gone and is handled again. The coordinator appends the record
(``insert_nowait``: time and guid assigned here, durable later), sends ``(replicate ...)``
to every other live replica in order, and counts durable copies: its own (the store's
call-back) and each replica's ``(replicated ...)``. At W it calls the client back with
``(inserted :family F :guid G :time T)``; a write short of W at its deadline gets an
``(error ...)`` call-back instead (the copies made stay: a timed-out write may still appear).

``(select family [:as-of T])`` and ``(history family [:since T] [:until T])`` are answered
by a replica of the partition: it asks every live replica ``(read-records ...)``, answers once
R have answered (one of them holding the partition completely, not still receiving it), and
when all have answered sends each stale replica the records it lacked (read repair).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from ..cell.statemachine import transition
from ..errors import LanguageError, StoreError
from ..language.printer import write
from ..language.reader import read
from ..language.symbols import Keyword, Symbol
from ..store import Receipt, Record
from ..wire.envelope import Message, request_id
from ..wire.routing import cell_key
from .base import ShardBase, _int, _names
from .quorum import AS_OF, HISTORY, NEWEST, PendingRead, PendingWrite, merge, repairs
from .wire import (
    MAX_RECORD_BYTES,
    MESSAGE_BUDGET,
    chunks,
    fits,
    quoted,
    row_size,
    rows_of,
    rows_to_records,
    value_text,
)

__all__ = ["Coordinator"]

log = logging.getLogger(__name__)

#: How many times a request may be forwarded before the cell handles it itself (views of
#: the ring can disagree for a moment; this bounds the ping-pong).
MAX_HOPS = 2


class Coordinator(ShardBase):
    """The client-facing verbs and the replica side of writes and reads."""

    #: The replica side (a client sends insert, select and history, which are not here).
    node_verbs: ClassVar[Mapping[str, str | None]] = dict.fromkeys(
        ("replicate", "replicated", "read-records", "read-records-are"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: dict[int, PendingWrite] = {}
        self.reads: dict[str, PendingRead] = {}

    # -- insert -----------------------------------------------------------------------------

    @transition("insert")
    def insert(self, family: Any, value: Any = None, time: Any = None, request: Any = None,
               hops: int = 0, **extra: Any) -> None:
        reply_to, request = self._caller(request)
        if self.broken is not None:
            return self._refuse(reply_to, request, family, self.broken)
        if not isinstance(family, str) or not family:
            return self._refuse(reply_to, request, family, "insert needs a family string")
        if time is not None and not _int(time):
            return self._refuse(reply_to, request, family, ":time must be int microseconds")
        try:
            text = write(value).encode("utf-8")
        except LanguageError as error:
            return self._refuse(reply_to, request, family, f"value cannot be stored: {error}")
        size = row_size(value_text(text)) + len(family) + 64  # its row, as replication sends it
        if size > MAX_RECORD_BYTES:
            return self._refuse(reply_to, request, family, f"a record of about {size} bytes; "
                                f"a shard cell takes at most {MAX_RECORD_BYTES}")
        p = self._partition(family)
        stand_in = self._stand_in_peer(hops)
        target = stand_in if stand_in is not None else self._route(p, hops)
        if target is None:
            return self._refuse(reply_to, request, family, "no live shard holds the partition")
        if target != self.me:
            return self._forward(target, [Symbol("insert"), family, quoted(value),
                                          *_opt("time", time), Keyword("request"), request,
                                          Keyword("hops"), MAX_HOPS if stand_in is not None else hops + 1],
                                 reply_to)
        self._coordinate_write(family, text, time, p, reply_to, request)

    def _coordinate_write(self, family: str, value: bytes, when: int | None, p: int,
                          reply_to: str | None, request: str) -> None:
        replicas = self.view.replica_set(p, self.live)
        needed = self.config.write_quorum
        if len(set(replicas) | {self.me}) < needed:
            self.count("writes_refused")
            return self._refuse(reply_to, request, family, f"only {len(replicas)} live replicas"
                                f" of partition {p}; {needed} must hold a write")
        if self.store is None:
            return self._refuse(reply_to, request, family, self.broken or "the store is closed")
        try:
            receipt = self.store.insert_nowait(
                family, value, lambda r, e: self.later(self._local_durable, r, e), time=when)
        except (StoreError, ValueError, TypeError) as error:
            return self._refuse(reply_to, request, family, f"insert failed: {error}")
        self.view.alone = False  # it holds a write now: its table is the cluster's (``_still_alone``)
        pending = self.writes.get(receipt.guid)
        if pending is None:
            self.writes[receipt.guid] = PendingWrite(
                family, receipt.guid, receipt.time, p, needed,
                time.monotonic() + self.config.request_timeout, reply_to, request)
        else:  # the same content again while the first is on its way: one record, two answers
            pending.others.append((reply_to, request))
        self.count("writes")
        rows = rows_of([Record(family, receipt.time, value, receipt.guid, receipt.digest)])
        for shard in replicas:
            if shard != self.me:
                self.send_to(shard, self._replicate(p, rows, ack=True))

    def _local_durable(self, receipt: Receipt, error: BaseException | None) -> None:
        if error is None:
            self._acknowledged(receipt.guid, self.me)

    def _replicate(self, p: int, rows: list[str], *, ack: bool) -> list[Any]:
        return [Symbol("replicate"), Keyword("peer"), self.cell_name, Keyword("shard"), self.me,
                Keyword("partition"), p, Keyword("ack"), ack, Keyword("rows"), quoted(rows)]

    @transition("replicate")
    def replicate(self, peer: str, rows: Any, ack: bool = False, shard: Any = None,
                  **extra: Any) -> None:
        """A coordinator's copy of records, in its order: apply, then say they are durable."""
        records, bad = rows_to_records(rows)
        if bad:
            self.count("bad_rows", bad)
        self.count("replicated_in", len(records))
        guids = [r.guid for r in records]

        def durable(failures: int) -> None:
            if ack and not failures and _names(peer):
                self._publish(cell_key(peer), [Symbol("replicated"), Keyword("shard"), self.me,
                                               Keyword("guids"), quoted(guids)])

        self.when_durable(records, durable, source=shard if _int(shard) else None)

    @transition("replicated")
    def replicated(self, shard: int, guids: Any, **extra: Any) -> None:
        if _int(shard) and isinstance(guids, list):
            for guid in guids:
                if _int(guid):
                    self._acknowledged(guid, shard)

    def _acknowledged(self, guid: int, shard: int) -> None:
        pending = self.writes.get(guid)
        if pending is None or not pending.acknowledge(shard):
            return
        del self.writes[guid]
        self.count("writes_acknowledged")
        for reply_to, request in pending.callers():
            self.reply(reply_to, [
                Symbol("inserted"), Keyword("family"), pending.family, Keyword("guid"), guid,
                Keyword("time"), pending.time, Keyword("copies"), len(pending.durable),
                Keyword("request"), request], request)

    # -- select and history -----------------------------------------------------------------

    @transition("select")
    def select(self, family: Any, as_of: Any = None, request: Any = None, hops: int = 0,
               **extra: Any) -> None:
        if as_of is not None and not _int(as_of):
            reply_to, request = self._caller(request)
            return self._refuse(reply_to, request, family, ":as-of must be int microseconds")
        self._read(family, AS_OF if as_of is not None else NEWEST, request, hops,
                   at=as_of, expr=[Symbol("select"), family, *_opt("as-of", as_of)])

    @transition("history")
    def history(self, family: Any, since: Any = None, until: Any = None, request: Any = None,
                hops: int = 0, **extra: Any) -> None:
        if not all(v is None or _int(v) for v in (since, until)):
            reply_to, request = self._caller(request)
            return self._refuse(reply_to, request, family, ":since and :until must be ints")
        self._read(family, HISTORY, request, hops, since=since, until=until,
                   expr=[Symbol("history"), family, *_opt("since", since), *_opt("until", until)])

    def _read(self, family: Any, mode: str, request: Any, hops: int, *, expr: list[Any],
              at: int | None = None, since: int | None = None, until: int | None = None) -> None:
        reply_to, request = self._caller(request)
        if self.broken is not None:
            return self._refuse(reply_to, request, family, self.broken)
        if not isinstance(family, str) or not family:
            return self._refuse(reply_to, request, family, f"{expr[0]} needs a family string")
        p = self._partition(family)
        replicas = self.view.replica_set(p, self.live)
        stand_in = self._stand_in_peer(hops)
        target = stand_in if stand_in is not None else \
            self.me if self.me in replicas else self._route(p, hops)
        if target is None:
            return self._refuse(reply_to, request, family, "no live shard holds the partition")
        if target != self.me:
            return self._forward(target, [*expr, Keyword("request"), request, Keyword("hops"),
                                          MAX_HOPS if stand_in is not None else hops + 1], reply_to)
        read_ = PendingRead(uuid.uuid4().hex, family, mode, p, set(replicas) | {self.me},
                            self.config.read_quorum,
                            time.monotonic() + self.config.request_timeout, reply_to, request,
                            at=at)
        self.reads[read_.id] = read_
        query = [Symbol("read-records"), Keyword("id"), read_.id, Keyword("peer"),
                 self.cell_name, Keyword("family"), family, Keyword("mode"), mode,
                 *_opt("at", at), *_opt("since", since), *_opt("until", until)]
        for shard in replicas:
            if shard != self.me:
                self.send_to(shard, query)
        rows, complete = self._local_rows(family, mode, at, since, until)
        read_.answer(self.me, rows_to_records(rows)[0], complete)
        self._progress(read_)

    def _local_rows(self, family: str, mode: str, at: int | None, since: int | None,
                    until: int | None) -> tuple[list[str], bool]:
        """This replica's answer as rows, and whether it holds the partition completely."""
        store = self.store
        if store is None:
            return [], False
        if mode == HISTORY:
            records = store.select_history(family, since=since, until=until)
        else:
            found = store.select(family, at=at if mode == AS_OF else None)
            records = [] if found is None else [found]
        rows = rows_of(records)
        if len(rows) > 1:
            rows = rows[-fits(rows[::-1], MESSAGE_BUDGET // 2):]  # the newest that fit
        p = self._partition(family)
        # A table built alone names this cell the owner of what it never received.
        return rows, self.view.owns(p) and not self.is_receiving(p) and not self.view.alone

    @transition("read-records")
    def read_records(self, id: str, peer: str, family: str, mode: str, at: Any = None,
                     since: Any = None, until: Any = None, **extra: Any) -> None:
        if not _names(id, peer, family) or mode not in (NEWEST, AS_OF, HISTORY):
            return
        if not all(v is None or _int(v) for v in (at, since, until)):
            return
        rows, complete = self._local_rows(family, mode, at, since, until)
        self._publish(cell_key(peer), [Symbol("read-records-are"), Keyword("id"), id,
                                       Keyword("shard"), self.me, Keyword("complete"), complete,
                                       Keyword("rows"), quoted(rows)])

    @transition("read-records-are")
    def read_records_are(self, id: str, shard: int, rows: Any, complete: bool = True,
                         **extra: Any) -> None:
        read_ = self.reads.get(id) if isinstance(id, str) else None
        if read_ is None or not _int(shard):
            return
        read_.answer(shard, rows_to_records(rows)[0], bool(complete))
        self._progress(read_)

    def _progress(self, read_: PendingRead) -> None:
        if read_.ready and not read_.answered:
            read_.answered = True
            self.count("reads")
            self._answer_read(read_, merge(read_.mode, read_.answers.values()))
        if read_.finished:
            del self.reads[read_.id]
            self._repair(read_)

    def _answer_read(self, read_: PendingRead, result: list[Record]) -> None:
        head = [Keyword("family"), read_.family, Keyword("request"), read_.request]
        if read_.mode == HISTORY:
            versions = [_version(r) for r in result]
            self.reply(read_.reply_to, [Symbol("history-selected"), *head,
                                        Keyword("versions"), quoted(versions)], read_.request)
        elif result:
            self.reply(read_.reply_to, [Symbol("selected"), *head, Keyword("found"), True,
                                        *_version(result[0], quote=True)], read_.request)
        else:
            self.reply(read_.reply_to, [Symbol("selected"), *head, Keyword("found"), False], read_.request)

    def _repair(self, read_: PendingRead) -> None:
        """Send every replica that answered with less the records it lacked (read repair)."""
        result = merge(read_.mode, read_.answers.values())
        for shard, missing in repairs(read_.answers, result).items():
            self.count("read_repairs", len(missing))
            if shard == self.me:
                self.when_durable(missing, lambda failures: None)
                continue
            for chunk in chunks(rows_of(missing), row_size):
                self.send_to(shard, self._replicate(read_.partition, chunk, ack=False))

    # -- time-outs --------------------------------------------------------------------------

    def on_tick(self, now: float) -> None:
        super().on_tick(now)
        for guid in [g for g, w in self.writes.items() if w.deadline < now]:
            pending = self.writes.pop(guid)
            self.count("writes_timed_out")
            for reply_to, request in pending.callers():
                self._refuse(reply_to, request, pending.family,
                             f"only {len(pending.durable)} of {pending.needed} copies were"
                             f" durable within {self.config.request_timeout} s", guid=guid)
        for key in [k for k, r in self.reads.items() if r.deadline < now]:
            read_ = self.reads.pop(key)
            if not read_.answered:
                self.count("reads_timed_out")
                self._refuse(read_.reply_to, read_.request, read_.family,
                             f"only {len(read_.answers)} of {read_.needed} replicas answered"
                             f" within {self.config.request_timeout} s")
            self._repair(read_)

    # -- helpers ----------------------------------------------------------------------------

    def _caller(self, request: Any) -> tuple[str | None, str]:
        message = self.cell_message
        reply_to = message.reply_to if message is not None else None
        if not isinstance(request, str):
            request = request_id(message) if message is not None else uuid.uuid4().hex
        return reply_to, request

    def _partition(self, family: str) -> int:
        return self.view.ring.partition_of(family) if self.view.ring is not None else \
            _partition_of(family, self.config.partitions)

    def _route(self, p: int, hops: Any) -> int | None:
        """Who coordinates partition ``p``: its first live owner, or this cell once the request
        has been forwarded enough (a view of the ring that lags must not bounce it forever)."""
        coordinator = self.view.coordinator(p, self.live)
        if coordinator is not None and coordinator != self.me and _int(hops) and hops >= MAX_HOPS:
            return self.me
        return coordinator

    def _stand_in_peer(self, hops: Any) -> int | None:
        """A peer to hand a request to while this cell's table is one it built alone and it
        took no write under it (``RingView``: a joiner that heard no peer in time): that table names
        it the owner of everything, and its empty store would answer every read "not found".
        None when it has heard no peer (it is the cluster), or the request has hopped enough.
        The request goes with the most hops, so that the peer serves it with its own table
        rather than hand it back to this cell, which its table may name the new owner."""
        if not self._still_alone() or not self.peers.by_shard or (_int(hops) and hops >= MAX_HOPS):
            return None
        return min(self.peers.by_shard)

    def _forward(self, shard: int, expr: list[Any], reply_to: str | None) -> None:
        cell = self.peers.cell_of(shard)
        if cell is None:
            self.later(self._retry, expr, reply_to)
            return
        self.count("forwarded")

        def returned(envelope: Any, reason: str) -> None:
            self.later(self._unreachable, shard)
            self.later(self._retry, expr, reply_to)

        self._publish(cell_key(cell), expr, reply_to=reply_to, on_return=returned)

    def _retry(self, expr: list[Any], reply_to: str | None) -> None:
        self.count("retried")
        self.cell_handle(Message(expr, reply_to=reply_to, sender=self.cell_name))

    def _refuse(self, reply_to: str | None, request: Any, family: Any, reason: str,
                **fields: Any) -> None:
        expr = [Symbol("error"), Keyword("cell"), self.cell_name, Keyword("reason"), reason,
                Keyword("family"), family if isinstance(family, str) else None,
                Keyword("request"), request]
        for key, value in fields.items():
            expr += [Keyword(key), value]
        self.reply(reply_to, expr, request)


def _opt(key: str, value: Any) -> list[Any]:
    return [] if value is None else [Keyword(key), value]


def _partition_of(family: str, partitions: int) -> int:
    from ..store import partition_of

    return partition_of(family, partitions)


def _decode(value: bytes) -> Any:
    text = value.decode("utf-8", "replace")
    try:
        return read(text)
    except LanguageError:
        return text  # not written by a shard cell: hand it back as the string it is


def _version(record: Record, *, quote: bool = False) -> list[Any]:
    value = _decode(record.value)
    return [Keyword("guid"), record.guid, Keyword("time"), record.time,
            Keyword("value"), quoted(value) if quote else value]
