"""The cluster's replicated store, reached through its shard cells, as a durable cell's journal
sees a store: so a durable cell's state lives on the shard tier, not on its node's disk, and a
spare on any other machine resumes it.

``ShardStore`` sends ``(insert ...)``, ``(select ...)`` and ``(history ...)`` to the
``role.shard`` queue, as any client does (``cellframe.replication.coordinate``), and matches
each call-back to its request by ``:request``:

* ``insert_nowait`` never waits: its call-back runs once W replicas hold the record durably
  (``(inserted ...)``), or with a ``StoreError`` on ``(error ...)`` or when no answer came in
  ``timeout`` seconds. A record whose answer was lost may still be there: the journal's
  recovery reads it, and a delivery given back for it then finds its id applied.
* ``select`` and ``select_history`` are quorum reads (R replicas, read repair), and block the
  caller: a durable cell reads them once, in ``on_start``, before it applies anything (messages
  wait in its mailbox meanwhile). A read that fails is asked again, for up to ``patience``
  seconds: a durable cell that starts with its cluster waits for the shard tier. A shard
  cell answers a history with the newest records that fit a message; ``select_history`` asks
  again for what is older until an answer is empty.

``shard_journal`` is the journal source a node takes (``Node(journal=shard_journal)``, or the
DNS setting ``durable.journal=shards``): the node makes the store on its own connection, signed
with its key, at start, if a role it may play has a durable cell.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ..cell.durable import CellJournal
from ..client import Client, Reply
from ..errors import LanguageError, StoreError
from ..failures import log_failure
from ..language.plist import from_plist
from ..language.printer import write
from ..language.symbols import Keyword, Symbol
from ..replication.wire import MAX_RECORD_BYTES, row_size, value_text

if TYPE_CHECKING:
    from ..transports.base import Transport

__all__ = ["ShardStore", "Version", "shard_journal"]

log = logging.getLogger(__name__)

#: The largest record sent, measured as a shard cell measures it (``record_cost``): a shard
#: cell refuses one over ``MAX_RECORD_BYTES``, so this store refuses it first, at once.
MAX_VALUE_BYTES = MAX_RECORD_BYTES

#: Pages a history read may take before it gives up (each is one quorum read).
MAX_PAGES = 10_000


class Version(NamedTuple):
    """A record as a shard cell answers it: its time (int microseconds) and value."""

    time: int
    value: str


class _Pending:
    __slots__ = ("deadline", "done", "answer", "arrived")

    def __init__(self, deadline: float, done: Callable[[Any, BaseException | None], None] | None):
        self.deadline = deadline
        self.done = done  # an insert's call-back; None for a read, whose caller waits
        self.answer: tuple[str, dict[str, Any]] | None = None
        self.arrived = threading.Event()


class ShardStore:
    """``insert_nowait``, ``select`` and ``select_history`` of ``cellframe.store.Store``, on
    the shard cells reached over ``transport`` (which stays open: its owner closes it)."""

    max_value_bytes = MAX_VALUE_BYTES
    #: Records of different families go to different partitions and replicas: one submitted
    #: later may be durable first (``CellJournal`` writes a snapshot once its record is in).
    commits_in_order = False
    #: Other instances of a role write the same family here: a durable cell reads what they
    #: recorded before it applies a redelivered message (``CellJournal.refresh``).
    shared = True

    def __init__(self, transport: Transport, *, signer: Any | None = None, queue_prefix: str = "",
                 target: str = "role.shard", timeout: float = 10.0, patience: float = 60.0,
                 name: str | None = None) -> None:
        self.target = target
        self.timeout = timeout  # for one answer
        self.patience = patience  # for a read that keeps failing
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Condition()
        self._closed = False
        self._client = Client(transport, signer=signer, queue_prefix=queue_prefix,
                              name=name or f"journal-{uuid.uuid4().hex[:12]}",
                              on_reply=self._answered, keep_replies=1)
        self._sweeper = threading.Thread(target=self._sweep, name="shard-store-timeouts",
                                         daemon=True)
        self._sweeper.start()

    # -- the calls a journal makes ---------------------------------------------------------------

    def insert_nowait(self, family: str, value: bytes, callback: Callable[[Any, BaseException | None], None]
                      | None = None, *, time: int | None = None) -> None:
        """Send the record; ``callback(answer_fields, error)`` once W replicas hold it, or with
        the error that came back instead, or when ``timeout`` passed with no answer."""
        text = value.decode("utf-8")
        size = record_cost(family, text)
        if size > self.max_value_bytes:
            raise StoreError(f"{family}: a record of about {size} bytes as a shard cell counts "
                             f"it; the shard tier takes at most {self.max_value_bytes}")
        expr = [Symbol("insert"), family, text]
        if time is not None:
            expr += [Keyword("time"), time]
        self._request(expr, callback or _ignore)

    def select(self, family: str) -> Version | None:
        """The newest record of ``family`` (a quorum read), or None."""
        fields = self._call([Symbol("select"), family], "selected")
        if not fields.get("found"):
            return None
        return _version(fields.get("time"), _unquoted(fields.get("value")))

    def select_recent(self, family: str, *, since: int) -> list[Version]:
        """``select_history`` asked once, not again while it fails: what a cell reads before
        a redelivered message, which goes back to its queue if the read fails (a cell must
        not wait a minute a message, whoever marks them)."""
        return self.select_history(family, since=since, patience=0.0)

    def select_history(self, family: str, *, since: int | None = None,
                       until: int | None = None, patience: float | None = None
                       ) -> list[Version]:
        """Every record of ``family`` from ``since`` to ``until``, oldest first (quorum
        reads, each asked again while it fails for ``patience`` seconds, the store's own by
        default)."""
        found: dict[tuple[int, str], Version] = {}
        for _ in range(MAX_PAGES):
            expr: list[Any] = [Symbol("history"), family]
            if since is not None:
                expr += [Keyword("since"), since]
            if until is not None:
                expr += [Keyword("until"), until]
            page = _versions(self._call(expr, "history-selected", patience).get("versions"))
            if not page:
                break
            found.update(((v.time, v.value), v) for v in page)
            until = min(v.time for v in page) - 1
            if since is not None and until < since:
                break
        else:
            raise StoreError(f"{family}: a history of more than {MAX_PAGES} pages")
        return sorted(found.values())

    def select_pages(self, reads: list[tuple[str, int, int]]) -> list[list[Version] | None]:
        """The first answer to each ``(family, since, until)`` history read, all sent at once
        (a recovery reads a snapshot's chunks so): the newest records of the range that fit
        an answer, oldest first, or None for a read that failed; ``select_history`` reads a
        whole range."""
        sent = []
        for family, since, until in reads:
            expr = [Symbol("history"), family, Keyword("since"), since, Keyword("until"), until]
            sent.append(self._request(expr, None))
        deadline = time.monotonic() + self.timeout + 1.0
        pages: list[list[Version] | None] = []
        for request_id, pending in sent:
            pending.arrived.wait(max(0.0, deadline - time.monotonic()))
            answer = pending.answer
            if answer is None or answer[0] != "history-selected":
                with self._lock:
                    self._pending.pop(request_id, None)
                pages.append(None)
                continue
            try:
                pages.append(sorted(_versions(answer[1].get("versions"))))
            except StoreError:  # as a read that failed: its caller reads the range again
                pages.append(None)
        return pages

    def close(self) -> None:
        """Stop waiting for answers (those still due fail) and delete the reply queue."""
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, {}
            self._lock.notify_all()
        for request in pending.values():
            self._settle(request, None, StoreError("the shard store was closed"))
        self._client.close()

    # -- requests and answers --------------------------------------------------------------------

    def _request(self, expr: list[Any], done: Callable[[Any, BaseException | None], None] | None
                 ) -> tuple[str, _Pending]:
        request_id = uuid.uuid4().hex
        pending = _Pending(time.monotonic() + self.timeout, done)
        with self._lock:
            if self._closed:
                raise StoreError("the shard store is closed")
            self._pending[request_id] = pending
            self._lock.notify_all()
        self._client.send(self.target, [*expr, Keyword("request"), request_id])
        return request_id, pending

    def _call(self, expr: list[Any], verb: str, patience: float | None = None) -> dict[str, Any]:
        """Send a read and wait for its answer: its fields, or a StoreError once it failed
        for ``patience`` seconds. A read is asked again while it fails (the tier is starting,
        or healing: no live owner, too few replicas answering, no answer), so a durable cell
        that starts with its cluster waits for the tier instead of crashing."""
        deadline = time.monotonic() + (self.patience if patience is None else patience)
        pause = 0.05
        while True:
            try:
                return self._call_once(expr, verb)
            except StoreError as error:
                if self._closed or time.monotonic() + pause > deadline:
                    raise
                log.info("%s %r: %s; asking again", expr[0], expr[1], error)
                time.sleep(pause)  # a read that failed: back off before the next
                pause = min(pause * 2, 1.0)

    def _call_once(self, expr: list[Any], verb: str) -> dict[str, Any]:
        request_id, pending = self._request(expr, None)
        if not pending.arrived.wait(self.timeout + 1.0) or pending.answer is None:
            with self._lock:
                self._pending.pop(request_id, None)
            raise StoreError(f"no shard cell answered {expr[0]} {expr[1]!r} within "
                             f"{self.timeout} s")
        answered, fields = pending.answer
        if answered != verb:
            raise StoreError(f"{expr[0]} {expr[1]!r}: {fields.get('reason') or answered}")
        return fields

    def _answered(self, reply: Reply) -> None:
        expr = reply.expr
        if not (isinstance(expr, list) and expr and len(expr) % 2 == 1):
            return
        try:
            fields = from_plist(expr[1:])
        except Exception:  # not a plist: not an answer of ours
            return
        request_id = fields.get("request")
        with self._lock:
            pending = self._pending.pop(request_id, None) if isinstance(request_id, str) else None
        if pending is None:
            return  # late, after its time-out, or not ours
        verb = str(expr[0])
        error = None if verb in ("inserted", "selected", "history-selected") else \
            StoreError(str(fields.get("reason") or verb))
        pending.answer = (verb, fields)
        self._settle(pending, fields, error)

    def _settle(self, pending: _Pending, fields: Any, error: BaseException | None) -> None:
        pending.arrived.set()
        if pending.done is not None:
            try:
                pending.done(fields, error)
            except Exception as error:
                log_failure(log, error, "an insert's call-back")

    def _sweep(self) -> None:
        """Fail the inserts whose answer did not come in time (a read's caller times out)."""
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                late = [key for key, p in self._pending.items() if p.deadline < now]
                expired = [self._pending.pop(key) for key in late]
                if not expired:
                    nearest = min((p.deadline for p in self._pending.values()), default=now + 60)
                    self._lock.wait(max(0.01, nearest - now))
                    continue
            for pending in expired:
                self._settle(pending, None, StoreError(
                    f"no shard cell answered within {self.timeout} s"))


def shard_journal(node: Any) -> CellJournal:
    """The journal of durable cells on ``node``'s cluster shard tier (a node's journal source)."""
    return CellJournal(ShardStore(node.transport, signer=node.signer, queue_prefix=node.queue_prefix,
                                  name=f"journal-{node.name}-{uuid.uuid4().hex[:6]}"),
                       snapshot_every=1_000)


def record_cost(family: str, text: str) -> int:
    """A record's size as a shard cell measures it before it takes an insert (its row, as
    replication sends it: ``cellframe.replication.coordinate``): the value written as a
    string, then as a row, each time with its quotes and backslashes escaped."""
    return row_size(value_text(write(text).encode("utf-8"))) + len(family) + 64


def _unquoted(value: Any) -> Any:
    """A call-back's ``(quote X)`` argument as X (``cellframe.replication.wire.quoted``)."""
    if isinstance(value, list) and len(value) == 2 and value[0] == Symbol("quote"):
        return value[1]
    return value


def _versions(answer: Any) -> list[Version]:
    """A history answer's ``:versions`` as Versions; a StoreError if it is not a list of
    ``(:time INT :value TEXT)`` (a malformed answer fails the read, never the reader)."""
    versions = _unquoted(answer) or []
    if not isinstance(versions, list):
        raise StoreError(f"a history answer whose versions are not a list: {str(versions)[:80]!r}")
    try:
        found = [from_plist(fields) for fields in versions]
    except LanguageError as error:
        raise StoreError(f"a malformed history answer: {error}") from error
    return [_version(fields.get("time"), fields.get("value")) for fields in found]


def _version(when: Any, value: Any) -> Version:
    if type(when) is not int:
        raise StoreError(f"a journal record whose time is not an int: {str(when)[:80]!r}")
    return Version(when, _text(value))


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise StoreError(f"a journal record that is not text: {str(value)[:80]!r}")
    return value


def _ignore(fields: Any, error: BaseException | None) -> None:
    return None
