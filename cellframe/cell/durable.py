"""Durable cells: a cell's state, declared fields and memory of applied message ids kept in the
append-only store, so that the cell that takes its role after a failover resumes from the
last message applied, and applies no message twice. The store is the node's own (a spare
resumes if it opens the same folder) or the cluster's shard tier
(``cellframe.node.shard_journal``: any node resumes it).

A durable cell (``durable = True`` on its class) writes a record for what it applies to the
family of its role (``cell/<role>/<class>``; a cell with no role: ``cell/<name>``): one a
message, or one for a group of messages applied back to back while more waited in its
mailbox (``Cell.on_receive``, at most ``RECORD_GROUP``). The record is the whole recorded
state after the last of them, and all their ids: ``{"ids", "state", "fields"}`` as JSON
(records written before groups hold one ``"id"``, and are read as well), so the newest
record is a snapshot and recovery reads it plus the ids of the tail. A message's delivery is
settled only once its record is durable (group commit: the cell goes on applying
meanwhile), so:

* a message whose record is durable is never applied again, whoever it is delivered to
  next: the recovering cell remembers its id (the last ``dedup_capacity`` ids are read back);
* a message whose record was not durable when the node died was not acknowledged either; the
  spare applies it, once, from a state that never saw it.

That is exactly once for the cell's recorded state. What the cell did outside itself
(messages it sent) is at least once: a send released just before the node died is sent again
when the spare re-applies the message. Make those idempotent with the outbox pattern: give
each sent message an id derived from the applied one (``<id>/<n>``) and let its receiver
drop ids it has seen (every cell does).

Snapshots bound recovery (``CellJournal``): it reads the newest snapshot and at most
``snapshot_every`` records after it. Compaction bounds the store: ``Retention(newest=
snapshot_every)`` keeps every record a recovery reads (and the newest snapshots).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import CellframeError, ConfigError, StoreError

if TYPE_CHECKING:
    from ..store.store import Record

__all__ = ["CellJournal", "JournalStore", "Recovered"]

log = logging.getLogger(__name__)

Recovered = tuple[str, dict[str, Any], list[str]]


class JournalStore(Protocol):
    """What a journal asks of a store: ``cellframe.store.Store`` or ``ShardStore``. A store may
    say ``max_value_bytes`` (the largest record it takes) and ``commits_in_order = False``
    (records submitted later may be durable first)."""

    def insert_nowait(self, family: str, value: bytes, callback: Any = None, *,
                      time: int | None = None) -> Any: ...

    def select(self, family: str) -> Record | Any | None: ...

    def select_history(self, family: str, *, since: int | None = None,
                       until: int | None = None) -> list[Any]: ...

#: JSON as compact as ``json.dumps(..., separators=(",", ":"))``, without a new encoder a call.
_encode = json.JSONEncoder(separators=(",", ":")).encode


class CellJournal:
    """Where durable cells keep their recorded state: a ``JournalStore`` (given, never closed
    here): a node's own ``Store``, which only a process opening the same folder reads, or the
    cluster's shard tier (``ShardStore``), which any node reads.

    Every ``snapshot_every`` records of a family, a snapshot goes to ``<family>/snapshot``:
    the state, the fields, the ids of the last ``capacity`` applied messages (on the shard
    tier, as many of the newest as fit a record) and the time of the last record it covers.
    Recovery reads the newest snapshot and the records after it, never more than
    ``snapshot_every`` of them. A snapshot never names an id whose record was lost: it is
    submitted after the records it covers to a store that commits in submission order, and
    once they are durable to one that does not.
    """

    def __init__(self, store: JournalStore, *, snapshot_every: int = 5_000) -> None:
        if snapshot_every < 1:
            raise ConfigError("snapshot_every must be at least 1")
        self.store = store
        self.snapshot_every = snapshot_every
        limit = getattr(store, "max_value_bytes", None)
        #: Characters of ids a record may carry from the records before it not yet durable.
        self._carry_budget = limit // 4 if limit is not None else CARRY_BUDGET
        # Per family: the claims of the role's instances (the fence that keeps a redelivered
        # message from being applied by a second live instance), the ids recorded, and the
        # records not yet durable (a cell restarted here recovers once they are in, else it
        # would miss applied messages whose deliveries are about to be acknowledged).
        self._families: dict[str, _Family] = {}
        self._lock = threading.Condition()

    def _family(self, family: str, capacity: int) -> _Family:
        state = self._families.get(family)
        if state is None:
            state = self._families[family] = _Family(capacity)
        return state

    def claim(self, family: str, message_id: str, capacity: int) -> bool:
        """Claim ``message_id`` for the role of ``family``: False if an instance of the role
        applied it or is applying it (then it must not be applied again)."""
        with self._lock:
            return self._family(family, capacity).claims.claim(message_id)

    def claimed(self, family: str, message_id: str) -> bool:
        """Has an instance of the role of ``family`` here applied ``message_id`` (or is it
        applying it)? What a node answers another instance of the role that asks."""
        with self._lock:
            state = self._families.get(family)
            return state is not None and message_id in state.claims.ids

    def claimed_in_role(self, role: str, message_id: str) -> bool:
        """``claimed`` in any family of ``role`` (a node no longer playing it answers so)."""
        prefix = f"cell/{role}/"
        with self._lock:
            return any(message_id in state.claims.ids for family, state in self._families.items()
                       if family.startswith(prefix))

    def release(self, family: str, message_id: str) -> None:
        """Give up a claim: the message was not applied (it failed, or the cell crashed)."""
        with self._lock:
            state = self._families.get(family)
            if state is not None:
                state.claims.ids.discard(message_id)

    @staticmethod
    def family_for(cell_name: str, role: str | None, class_name: str) -> str:
        """The family a durable cell writes: its role's, so that a spare finds it."""
        return f"cell/{role}/{class_name.lower()}" if role else f"cell/{cell_name}"

    def record(self, family: str, message_ids: list[str], state: str, fields: dict[str, Any],
               done: Callable[[BaseException | None], None]) -> None:
        """Append the state after ``message_ids`` (applied in that order); ``done(error)``
        once it is durable."""
        with self._lock:
            journal = self._family(family, self.snapshot_every)
            # Every record also names the ids of the records before it not yet durable: its
            # state covers them, so once it is durable, so are they, whatever became of theirs.
            # So that a record stays small, a cell waits while they are many (back-pressure).
            budget = self._carry_budget
            if journal.carried_chars > budget and not self._lock.wait_for(
                    lambda: journal.carried_chars <= budget or journal.broken is not None,
                    CARRY_WAIT):
                raise StoreError(f"{family}: records not durable for {CARRY_WAIT:g} s")
            if journal.broken is not None:
                raise StoreError(f"{family}: a record of what was applied before was lost "
                                 f"({journal.broken}); the cell must recover first")
            carried = [i for entry in journal.unconfirmed for i in entry.ids]
            try:
                body = {"ids": message_ids, "state": state, "fields": fields}
                if carried:
                    body["carried"] = carried
                value = _encode(body).encode()
            except (TypeError, ValueError) as error:
                raise ConfigError(f"{family}: a durable cell's fields must be JSON values: "
                                  f"{error}") from error
            entry = _Unconfirmed(journal.next_seq, message_ids, done)
            journal.next_seq += 1
            journal.unconfirmed.append(entry)
            journal.carried_chars += entry.chars
            journal.in_flight += 1
            # The store's time unit (int microseconds), kept increasing within a family.
            when = journal.last_time = max(time.time_ns() // 1000, journal.last_time + 1)
            journal.recorded.extend(message_ids)
            journal.since_snapshot += len(message_ids)
            snapshot = journal.since_snapshot >= self.snapshot_every and not journal.snapshotting
            ids: list[str] = []
            fresh = 0
            if snapshot:
                fresh, journal.since_snapshot = journal.since_snapshot, 0
                ids = list(journal.recorded)
                journal.snapshotting = True

        def durable(receipt: Any, error: BaseException | None) -> None:
            try:
                # first: who waits for in_flight to reach 0 waits for the settling
                self._settle(family, journal, entry.seq, error)
                if snapshot and not in_order:
                    if error is None:
                        self._snapshot(family, journal, state, fields, ids, fresh, when)
                    else:
                        journal.snapshotting = False
            finally:
                settled()

        def settled() -> None:
            with self._lock:
                journal.in_flight -= 1
                if journal.in_flight == 0 and journal.recovering:
                    self._lock.notify_all()

        # A snapshot must never name an id whose record is not durable: a store that commits
        # in submission order takes it right after the record; one that does not (the shard
        # tier: another family is another partition, on other replicas) once the record is in.
        in_order = getattr(self.store, "commits_in_order", True)
        try:
            self.store.insert_nowait(family, value, durable, time=when)
        except BaseException:
            with self._lock:  # not sent: nothing will call ``durable``
                if entry in journal.unconfirmed:
                    journal.unconfirmed.remove(entry)  # its caller gives it back
                    journal.carried_chars -= entry.chars
                if snapshot:  # nor write its snapshot: the next record will
                    journal.snapshotting = False
                    journal.since_snapshot += fresh
                _forget(journal, message_ids)  # no snapshot may name them: never recorded
            settled()
            raise
        if snapshot and in_order:
            self._snapshot(family, journal, state, fields, ids, fresh, when)

    def _settle(self, family: str, journal: _Family, seq: int,
                error: BaseException | None) -> None:
        """Record ``seq`` is durable (``error`` None): it and every record before it not yet
        durable are settled (it names their ids). Or it failed: if a later record is on its
        way, that one names its ids, and settles or fails them; if none is, every record not
        yet durable fails, their claims are released, and the family takes no record until a
        cell recovers it (the cell's state is ahead of what is recorded)."""
        with self._lock:
            if error is None:
                done = [e for e in journal.unconfirmed if e.seq <= seq]
                journal.unconfirmed = [e for e in journal.unconfirmed if e.seq > seq]
            elif any(e.seq >= seq for e in journal.unconfirmed) and \
                    not any(e.seq > seq for e in journal.unconfirmed):
                done, journal.unconfirmed = journal.unconfirmed, []
                journal.broken = f"{type(error).__name__}: {error}"
                for lost in done:
                    for message_id in lost.ids:
                        journal.claims.ids.discard(message_id)
                    _forget(journal, lost.ids)
            else:  # covered by a later record already, or a later one will tell
                done = []
            journal.carried_chars -= sum(each.chars for each in done)
            self._lock.notify_all()  # a record waiting for fewer of them to carry
        for each in done:
            each.done(error)

    def _snapshot(self, family: str, journal: _Family, state: str, fields: dict[str, Any],
                  ids: list[str], fresh: int, upto: int) -> None:
        """Write the snapshot after ``upto`` (``ids``: the last ones recorded, ``fresh`` of
        them since the last snapshot).

        A store that bounds a record's size (``max_value_bytes``: the shard tier's) takes only
        the fresh ids, in chunks (``<family>/snapshot/ids``, each tagged with ``upto``), and,
        once they are all durable, the snapshot, which names the chunks of this and earlier
        snapshots that hold the last ``capacity`` ids (``refs``): a snapshot never names a
        chunk that is missing, and each id is written in a chunk once."""
        limit = getattr(self.store, "max_value_bytes", None)
        if limit is None:
            journal.snapshotting = False
            body = _encode({"state": state, "fields": fields, "ids": ids, "upto": upto}).encode()
            self._insert_quietly(family + _SNAPSHOT, body, upto)
            return
        new_ids = ids[len(ids) - min(fresh, len(ids)):]
        chunks = [_encode({"upto": upto, "ids": chunk}).encode()
                  for chunk in _chunks(new_ids, min(limit, SNAPSHOT_CHUNK_BYTES))]
        remaining = [len(chunks)]

        def write_head() -> None:
            with self._lock:
                refs = [*journal.refs, [upto, len(chunks), len(new_ids)]]
                while len(refs) > 1 and sum(r[2] for r in refs[1:]) >= len(ids):
                    refs.pop(0)  # the later chunks hold every id the dedup memory keeps
                journal.refs = refs
                journal.snapshotting = False
            head = _encode({"state": state, "fields": fields, "upto": upto, "refs": refs})
            self._insert_quietly(family + _SNAPSHOT, head.encode(), upto)

        def chunk_durable(receipt: Any, error: BaseException | None) -> None:
            with self._lock:
                if remaining[0] <= 0:
                    return  # abandoned already, by an earlier chunk's failure
                if error is not None:  # this snapshot is abandoned; the next one will do
                    remaining[0] = 0
                    journal.snapshotting = False
                    journal.since_snapshot += fresh  # so the next one writes them
                    log.warning("%s: a snapshot's ids could not be written: %s", family, error)
                    return
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                write_head()

        if not chunks:
            write_head()
        for number, chunk in enumerate(chunks):
            self._insert_quietly(family + _SNAPSHOT_IDS, chunk, upto + number, chunk_durable)

    def _insert_quietly(self, family: str, body: bytes, when: int,
                        durable: Callable[[Any, BaseException | None], None] | None = None) -> None:
        """Submit a snapshot's record; one refused at once is failed as a later error would
        be (``durable``), so the snapshot it belongs to ends."""
        try:
            self.store.insert_nowait(family, body, durable, time=when)
        except CellframeError as error:  # the next snapshot will do; recovery reads more tail
            log.warning("%s: a snapshot could not be written: %s", family, error)
            if durable is not None:
                durable(None, error)

    def refresh(self, family: str) -> None:
        """Claim the ids that other instances of the role recorded in ``family`` since the
        last look, on a store they write too (``shared``: the shard tier; else nothing to
        do). Reads the records from ``REFRESH_OVERLAP`` before the newest one seen, so a record
        that reached the store up to that much after a newer one is still found, and none
        older than ``REFRESH_HORIZON``, so the read after a long quiet spell stays short."""
        if not getattr(self.store, "shared", False):
            return
        with self._lock:
            journal = self._family(family, self.snapshot_every)
            since = max(journal.seen_upto - REFRESH_OVERLAP,
                        time.time_ns() // 1000 - REFRESH_HORIZON)
        read = getattr(self.store, "select_recent", None)  # asked once: no waiting
        records = read(family, since=since) if read is not None else \
            self.store.select_history(family, since=since)
        try:
            found = [(record.time, json.loads(record.value)) for record in records]
            ids = [i for _, body in found for i in _ids_of(body)]
        except (ValueError, KeyError, TypeError) as error:
            raise StoreError(f"{family}: an unreadable durable-cell record: {error}") from error
        with self._lock:
            for message_id in ids:
                journal.claims.claim(message_id)
            journal.seen_upto = max([journal.seen_upto, *(when for when, _ in found)])

    def drain(self, family: str, timeout: float) -> bool:
        """Wait until every record of ``family`` submitted so far is durable and its delivery
        settled (a node stopping does, before it closes its role consumer: an applied
        message whose acknowledgement is still to come would go back to the queue, and to
        another instance of the role). False if ``timeout`` passed first."""
        with self._lock:
            journal = self._families.get(family)
            if journal is None:
                return True
            journal.recovering += 1
            try:
                return self._lock.wait_for(lambda: journal.in_flight == 0, timeout)
            finally:
                journal.recovering -= 1

    def recover(self, family: str, capacity: int) -> Recovered | None:
        """The recorded state (state, fields) and the ids of the last ``capacity`` applied
        messages, oldest first; None if the family holds nothing."""
        with self._lock:
            journal = self._family(family, capacity)
            journal.recorded = deque(journal.recorded, maxlen=max(capacity, self.snapshot_every))
            journal.recovering += 1
            try:
                drained = self._lock.wait_for(lambda: journal.in_flight == 0, 30.0)
            finally:
                journal.recovering -= 1
            if not drained:
                raise StoreError(f"{family}: records still not durable after 30 s")
        try:
            state, fields, ids, upto, refs = self._read_snapshot(family)
            snapshotted = len(ids)
            tail = self.store.select_history(family, since=upto + 1)
            for record in tail:
                latest = json.loads(record.value)
                ids += _ids_of(latest)
                state, fields = latest["state"], latest["fields"]
        except (ValueError, KeyError, TypeError) as error:
            raise StoreError(f"{family}: an unreadable durable-cell record: {error}") from error
        if state is None:
            return None
        # A record names again (``carried``) the ids of the records before it that were not
        # yet durable when it was made: each id counts once, where it first appears.
        ids = list(dict.fromkeys(ids))
        tail_ids = len(ids) - min(snapshotted, len(ids))
        ids = ids[-capacity:]
        with self._lock:
            journal.broken = None  # what the recovering cell holds is what is recorded
            journal.claims.capacity = max(journal.claims.capacity, capacity)
            for message_id in ids:
                journal.claims.claim(message_id)
            if not journal.recorded:
                journal.recorded.extend(ids)
                journal.last_time = max(journal.last_time, tail[-1].time if tail else upto)
                journal.refs = refs
                journal.since_snapshot = tail_ids  # in no snapshot yet
            journal.seen_upto = max(journal.seen_upto, tail[-1].time if tail else upto)
        return state, fields, ids

    def _read_snapshot(self, family: str
                       ) -> tuple[Any, dict[str, Any], list[str], int, list[list[int]]]:
        """The newest snapshot: state, fields, ids, the time of the last record it covers, and
        the chunks of ids it names (none if it holds its ids itself)."""
        snapshot = self.store.select(family + _SNAPSHOT)
        if snapshot is None:
            return None, {}, [], -1, []
        body = json.loads(snapshot.value)
        upto = body["upto"]
        if "refs" not in body:
            return body["state"], body["fields"], body["ids"], upto, []
        ranges = [(family + _SNAPSHOT_IDS, at, at + count - 1) for at, count, _ in body["refs"]]
        select_pages = getattr(self.store, "select_pages", None)  # one round trip for all
        pages = select_pages(ranges) if select_pages is not None else [None] * len(ranges)
        ids: list[str] = []
        for (chunks_family, at, until), page in zip(ranges, pages, strict=True):
            mine = _chunks_of(page or [], at)
            if len(mine) != until - at + 1:  # not all in one answer: read the whole range
                mine = _chunks_of(self.store.select_history(chunks_family, since=at, until=until),
                                  at)
            if len(mine) != until - at + 1:
                raise StoreError(f"{family}: the snapshot at {at} has {until - at + 1} chunks "
                                 f"of ids, {len(mine)} were found")
            ids += [i for chunk in mine for i in chunk]
        return body["state"], body["fields"], ids, upto, body["refs"]


#: How far (microseconds) before the newest record seen ``refresh`` reads again: records of
#: other instances that reached the shard tier up to this much late, or stamped by a clock up
#: to this much behind, are still found.
REFRESH_OVERLAP = 2_000_000
#: How old (microseconds) a record of another instance ``refresh`` still reads: a message
#: it applied and recorded longer before the broker handed it out again is not looked for.
REFRESH_HORIZON = 120_000_000

#: What the ids a record carries from earlier records not yet durable may cost (``id_cost``)
#: on a store with no bound on a record (on one with a bound: a quarter of it), and the most
#: a record waits for them to be fewer.
CARRY_BUDGET = 64 * 1024
CARRY_WAIT = 30.0

#: The suffix of the family that holds a durable cell's snapshots, and of the one that holds
#: their ids in chunks (on a store that bounds a record's size).
_SNAPSHOT = "/snapshot"
_SNAPSHOT_IDS = "/snapshot/ids"

#: The most a chunk of a snapshot's ids holds (bytes of JSON), well under a shard cell's
#: largest record, so each chunk is read back in one answer.
SNAPSHOT_CHUNK_BYTES = 12 * 1024


def _ids_of(record: dict[str, Any]) -> list[str]:
    """The ids a record says are applied: those of earlier records not yet durable when it
    was made (``carried``), then its own (``ids``; ``id`` before records took groups)."""
    own = record["ids"] if "ids" in record else [record["id"]]
    return [*record["carried"], *own] if "carried" in record else own


def _chunks_of(records: list[Any], upto: int) -> list[list[str]]:
    """The lists of ids of the chunks among ``records`` written for the snapshot at ``upto``."""
    found = [json.loads(record.value) for record in records]
    return [chunk["ids"] for chunk in found if chunk["upto"] == upto]


def _forget(journal: _Family, message_ids: list[str]) -> None:
    """Take the ids of a record that was lost out of those a snapshot will name (a snapshot
    that named them would make a recovery drop their copies given back to the queue).
    Rare: a pass over the ids recorded."""
    lost = set(message_ids)
    journal.since_snapshot = max(0, journal.since_snapshot - len(lost))
    journal.recorded = deque((i for i in journal.recorded if i not in lost),
                             maxlen=journal.recorded.maxlen)


def id_cost(message_id: str) -> int:
    """About what ``message_id`` adds to a record as the shard tier measures one
    (``cellframe.node.shard_journal.record_cost``): its JSON (non-ASCII as ``\\uXXXX``) and a
    comma, each quote and backslash of it escaped twice more (the record is written as a
    string, then in a row): 4 bytes each. A plain id costs its length and 9."""
    if message_id.isascii() and message_id.isprintable() and '"' not in message_id \
            and "\\" not in message_id:
        return len(message_id) + 9
    text = _encode(message_id)
    return len(text) + 1 + 3 * (text.count('"') + text.count("\\"))


def _chunks(ids: list[str], budget: int) -> list[list[str]]:
    """``ids`` in order, cut into lists that cost at most about ``budget`` (``id_cost``)."""
    out: list[list[str]] = []
    chunk: list[str] = []
    size = 0
    for message_id in ids:
        cost = id_cost(message_id)
        if chunk and size + cost > budget:
            out.append(chunk)
            chunk, size = [], 0
        chunk.append(message_id)
        size += cost
    if chunk:
        out.append(chunk)
    return out


class _Family:
    """What a journal knows of one durable family (under the journal's lock)."""

    __slots__ = ("claims", "recorded", "in_flight", "last_time", "since_snapshot", "recovering",
                 "seen_upto", "snapshotting", "refs", "unconfirmed", "next_seq", "broken",
                 "carried_chars")

    def __init__(self, capacity: int) -> None:
        self.claims = _Claims(capacity)
        self.recorded: deque[str] = deque(maxlen=capacity)
        self.in_flight = 0
        self.last_time = 0
        self.since_snapshot = 0
        self.recovering = 0  # recoveries (and drains) waiting for in_flight to reach 0
        self.seen_upto = 0  # the newest record time read from a shared store (``refresh``)
        self.snapshotting = False  # a snapshot is on its way (one at a time)
        self.refs: list[list[int]] = []  # the chunks of ids the newest snapshot names
        self.unconfirmed: list[_Unconfirmed] = []  # records not yet durable, oldest first
        self.carried_chars = 0  # the length of their ids
        self.next_seq = 0
        self.broken: str | None = None  # why a record was lost, until a recovery


class _Unconfirmed:
    """A record on its way: its number in its family, its own ids, and who to tell."""

    __slots__ = ("seq", "ids", "done", "chars")

    def __init__(self, seq: int, ids: list[str], done: Callable[[BaseException | None], None]):
        self.seq, self.ids, self.done = seq, ids, done
        self.chars = sum(map(id_cost, ids))  # what they add to a record that carries them


class _Claims:
    """The last ``capacity`` ids claimed for one role (FIFO), like a cell's DedupMemory but
    one may be released."""

    __slots__ = ("capacity", "ids", "order")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ids: set[str] = set()
        self.order: deque[str] = deque()

    def claim(self, message_id: str) -> bool:
        if message_id in self.ids:
            return False
        self.ids.add(message_id)
        self.order.append(message_id)
        if len(self.order) > self.capacity:
            self.ids.discard(self.order.popleft())
        return True
