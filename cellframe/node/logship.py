"""Shipping a node's Python log records to the log sump over AMQP: ``SumpHandler``.

Every ``cellframe node`` process installs one on the root logger (``install``). Its rules:

- *Never blocks the caller.* ``emit`` turns the record into a small dict (the message is
  formatted there, since its arguments may change later) and appends it to a bounded queue;
  that is all the logging thread pays (about 4 us a record here, beside logging's own 6 us).
- *Bounded.* At ``capacity`` records waiting, a new record is dropped and counted. The count
  travels with every batch (``:dropped``, cumulative), so the sump reports drops per node, and
  the shipper says so on the node's own stderr once shipping resumes.
- *Batched.* One thread (the shipper) sends up to ``batch_records`` records at once, or what
  has gathered after ``interval`` seconds, as one message to ``log.<node>.records``::

      (log-records :node "web-01" :dropped 0 :records ("{json}" "{json}" ...))

  each record one JSON object: time, node, role, cell, level, logger, message, exception,
  trace id. A batch stays under the node's message limit (64 KiB), split if it would not.
- *Confirmed.* After each batch the shipper waits (on its own thread) until the broker
  confirmed it (``Transport.flush``): ``confirmed`` counts records the broker acknowledged,
  ``last_confirmed`` is the newest of them. A batch the transport refuses (its buffer full,
  the broker gone) goes back to the front of the queue and is sent again.

Records logged on the shipper's own thread are not shipped (a transport warning about a
batch would otherwise make another batch about itself).
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from ..errors import CellframeError
from ..language.symbols import Keyword, Symbol
from ..roles.logsump import LOG_RECORDS_VERB, pages
from ..transports.base import Transport
from ..wire import tracing
from ..wire.envelope import envelope_for
from ..wire.routing import log_key

__all__ = ["RECORDS_LEVEL", "SumpHandler", "install", "record_fields", "uninstall"]

log = logging.getLogger(__name__)

#: The last word of a batch's routing key, ``log.<node>.records``: a batch mixes levels.
RECORDS_LEVEL = "records"
#: Longest message or exception text shipped; the rest is cut, with a note.
MAX_FIELD_CHARS = 8_000


def _cut(text: str) -> str:
    if len(text) <= MAX_FIELD_CHARS:
        return text
    return text[:MAX_FIELD_CHARS] + f"... ({len(text) - MAX_FIELD_CHARS} more characters cut)"


def _cell_of(thread_name: str) -> str | None:
    """A cell's thread is named ``cell:<name>`` (``Cell._start_actor_loop``)."""
    return thread_name[5:] if thread_name.startswith("cell:") else None


def record_fields(record: logging.LogRecord, node: str, role: str | None) -> dict[str, Any]:
    """The JSON object of one record: what the sump stores and ``cellframe logs`` shows."""
    fields: dict[str, Any] = {
        "time": record.created,
        "node": node,
        "role": role,
        "cell": getattr(record, "cell", None) or _cell_of(record.threadName or ""),
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": _cut(record.getMessage()),
    }
    if record.exc_info and record.exc_info[0] is not None:
        fields["exception"] = _cut("".join(traceback.format_exception(*record.exc_info)))
    elif record.exc_text:
        fields["exception"] = _cut(record.exc_text)
    if tracing.active is not None:  # off: nothing imported, nothing paid
        trace = tracing.active.trace_id()
        if trace:
            fields["trace_id"] = trace
    return fields


class SumpHandler(logging.Handler):
    """A logging handler that ships records to the log sump (see the module doc)."""

    def __init__(
        self,
        transport: Transport,
        node: str,
        *,
        role: Callable[[], str | None] = lambda: None,
        signer: Any | None = None,
        capacity: int = 20_000,
        batch_records: int = 500,
        interval: float = 0.2,
        confirm_timeout: float = 5.0,
        level: int = logging.INFO,
    ) -> None:
        super().__init__(level)
        self.transport = transport
        self.node = node
        self.role = role
        self.signer = signer
        self.capacity = capacity
        self.batch_records = batch_records
        self.interval = interval
        self.confirm_timeout = confirm_timeout
        self.key = log_key(node, RECORDS_LEVEL)
        self.dropped = 0
        self.shipped = 0
        self.confirmed = 0
        self.unrouted = 0
        self.last_confirmed: dict[str, Any] | None = None
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._reported_drops = 0
        self._in_flight = 0
        #: Held for the few microseconds it takes to count and add a record, or to take a
        #: batch: without it a caller saw room while the shipper was moving a batch out of the
        #: queue, and 1,271 records waited for a capacity of 1,000 (seen under load).
        self._room = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"logship-{node}", daemon=True)
        self._thread.start()

    # -- the caller's side: never blocks --------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        if threading.get_ident() == self._thread.ident:
            return
        try:
            fields = record_fields(record, self.node, self.role())
        except Exception:  # a record whose message cannot be formatted: logging's way
            self.handleError(record)
            return
        queue = self._queue
        with self._room:
            if len(queue) + self._in_flight >= self.capacity:  # a batch being sent still counts
                self.dropped += 1
                return
            queue.append(fields)
            full = len(queue) == self.batch_records
        if full:
            self._wake.set()

    # -- the shipper's side -----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            self._ship_all()

    def _ship_all(self, deadline: float | None = None) -> bool:
        """Send what waits, batch by batch; False if the transport refused one."""
        while self._queue:
            if deadline is not None and time.monotonic() > deadline:
                return False
            batch = self._take()
            refused = False
            try:
                refused = not self._send(batch)
            finally:
                with self._room:
                    if refused:
                        self._queue.extendleft(reversed(batch))  # back to the front, in order
                    self._in_flight = 0
            if refused:
                return False
        return True

    def _take(self) -> list[dict[str, Any]]:
        queue = self._queue
        with self._room:
            batch = [queue.popleft() for _ in range(min(len(queue), self.batch_records))]
            self._in_flight = len(batch)  # still counted against the capacity while it is sent
        return batch

    def _send(self, batch: list[dict[str, Any]]) -> bool:
        texts = [json.dumps(fields, ensure_ascii=False, default=str) for fields in batch]
        head = [Symbol(LOG_RECORDS_VERB), Keyword("node"), self.node, Keyword("dropped"), self.dropped]
        for part in pages(texts, head):
            try:
                envelope = envelope_for(part, sender=self.node)  # not traced: no target
                if self.signer is not None:
                    envelope = self.signer.sign(envelope, self.key)
                self.transport.publish(self.key, envelope, on_return=self._on_return)
            except CellframeError as error:  # a full buffer, a closed transport: try later
                log.debug("log batch not sent: %s", error)
                return False
        self.shipped += len(batch)
        self._report_drops()
        self._confirm(batch)
        return True

    def _confirm(self, batch: list[dict[str, Any]]) -> None:
        try:
            confirmed = self.transport.flush(self.confirm_timeout)
        except CellframeError:
            confirmed = False
        if confirmed:
            self.confirmed = self.shipped
            self.last_confirmed = batch[-1]

    def _on_return(self, envelope: Any, reason: str) -> None:
        self.unrouted += 1  # no log sump bound to log.#: these records are gone

    def _report_drops(self) -> None:
        if self.dropped > self._reported_drops:
            # Logged on this thread, so to the node's stderr only, never shipped.
            log.warning("%s: dropped %d log records while the broker was slow or gone",
                        self.node, self.dropped - self._reported_drops)
            self._reported_drops = self.dropped

    # -- closing ----------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Ship what is left (for up to ``timeout`` seconds), then stop the shipper."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._ship_all(deadline=time.monotonic() + timeout)
        super().close()

    def counters(self) -> dict[str, int]:
        return {"shipped": self.shipped, "confirmed": self.confirmed, "dropped": self.dropped,
                "unrouted": self.unrouted, "waiting": len(self._queue) + self._in_flight}


def install(transport: Transport, node: Any, *, signer: Any | None = None,
            **options: Any) -> SumpHandler:
    """Install a ``SumpHandler`` for ``node`` (a Node) on the root logger, and let INFO
    records reach it without making the other handlers (stderr) any chattier."""
    handler = SumpHandler(transport, node.name, role=lambda: node.role, signer=signer, **options)
    root = logging.getLogger()
    if root.level > handler.level or root.level == logging.NOTSET:
        for other in root.handlers:
            if other.level < root.getEffectiveLevel():
                other.setLevel(root.getEffectiveLevel())
        root.setLevel(handler.level)
    root.addHandler(handler)
    return handler


def uninstall(handler: SumpHandler, timeout: float = 5.0) -> None:
    """Remove ``handler`` from the root logger and ship what it still holds."""
    logging.getLogger().removeHandler(handler)
    handler.close(timeout)
    if handler.dropped:
        print(f"log shipping: {handler.dropped} records dropped", file=sys.stderr)
