"""Client: how a program outside the cluster (the CLI, the REPL, a service) talks to it.

A client sends s-expressions to any target and receives the call-backs addressed to its own
reply queue, asynchronously: ``send`` never waits, and each call-back is handed to
``on_reply`` as it arrives. ``replies`` holds the newest of them (``keep_replies``), so a
client that runs for weeks (a REPL, a service) does not grow without end.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, overload

from .errors import CellframeError, LanguageError, SecurityError
from .language.printer import write
from .language.reader import read
from .transports.base import Delivery, Transport
from .wire import tracing
from .wire.envelope import Envelope, envelope_for, is_cellframe_content
from .wire.routing import is_persistent, reply_key

__all__ = ["Client", "Reply", "ReplyLog"]

#: Call-backs a client holds by default; older ones are forgotten.
DEFAULT_KEEP_REPLIES = 10_000

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    """A call-back received by a client: the expression, who sent it, its text, its own id,
    and the id of the message it answers (``correlation_id``; None from a sender that did not
    say)."""

    expr: Any
    sender: str | None
    text: str
    message_id: str
    correlation_id: str | None = None


class ReplyLog:
    """The call-backs a client received, numbered 0, 1, 2... in arrival order, holding only
    the newest ``keep``.

    ``len`` counts every call-back ever received, and indexes and slices use those numbers:
    ``first = len(log)`` before sending, then ``log[first:]`` is what arrived since, as long
    as fewer than ``keep`` did. A forgotten reply is absent from a slice; indexing it raises
    IndexError. Appends come from a transport thread; every read sees a consistent state.
    """

    def __init__(self, keep: int = DEFAULT_KEEP_REPLIES) -> None:
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise ValueError(f"keep_replies must be a positive int, not {keep!r}")
        self.keep = keep
        self._held: list[Reply] = []
        self._forgotten = 0  # the number of the first reply held
        self._lock = threading.Lock()

    def append(self, reply: Reply) -> None:
        with self._lock:
            self._held.append(reply)
            if len(self._held) >= 2 * self.keep:  # forget in halves: O(1) a reply
                drop = len(self._held) - self.keep
                del self._held[:drop]
                self._forgotten += drop

    @property
    def forgotten(self) -> int:
        """How many of the oldest replies are no longer held."""
        return self._forgotten

    def __len__(self) -> int:
        with self._lock:
            return self._forgotten + len(self._held)

    @overload
    def __getitem__(self, index: int) -> Reply: ...

    @overload
    def __getitem__(self, index: slice) -> list[Reply]: ...

    def __getitem__(self, index: int | slice) -> Reply | list[Reply]:
        with self._lock:
            first, held = self._forgotten, self._held
            if isinstance(index, slice):
                start, stop, step = index.indices(first + len(held))
                if step == 1:
                    return held[max(start - first, 0):max(stop - first, 0)]
                return [held[i - first] for i in range(start, stop, step) if i >= first]
            number = index + first + len(held) if index < 0 else index
            if not first <= number < first + len(held):
                raise IndexError(f"reply {index} is not held ({first} forgotten, "
                                 f"{first + len(held)} received)")
            return held[number - first]

    def __iter__(self) -> Iterator[Reply]:
        with self._lock:
            return iter(list(self._held))

    def __repr__(self) -> str:
        return f"<ReplyLog {len(self)} received, {len(self._held)} held>"


class Client:
    """Sends to the cluster and collects call-backs on a private, exclusive reply queue.

    ``inline=True`` promises that ``on_reply`` is quick and never blocks (it appends, or puts
    on a queue): the transport may then run it on its I/O thread, which saves a thread
    hand-off per call-back. A callback that prints to a terminal or waits must not use it.
    ``keep_replies``: how many of the newest call-backs ``replies`` holds.

    ``close`` (or leaving ``with Client(...) as client:``) deletes the reply queue the client
    declared; the transport it was given stays open for whoever made it to close.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        signer: Any | None = None,
        name: str | None = None,
        on_reply: Callable[[Reply], None] | None = None,
        queue_prefix: str = "",
        inline: bool = False,
        keep_replies: int = DEFAULT_KEEP_REPLIES,
    ) -> None:
        self.transport = transport
        self.signer = signer
        self.name = name or f"client-{uuid.uuid4().hex[:12]}"
        self.reply_to = reply_key(self.name)
        self.queue = queue_prefix + self.reply_to
        self.replies = ReplyLog(keep_replies)
        self.on_reply = on_reply
        #: Call-backs refused (unverifiable or unreadable), newest last: the errors.
        self.refused: list[CellframeError] = []
        self._arrived = threading.Condition()
        transport.declare_queue(self.queue, exclusive=True)
        transport.bind(self.queue, self.reply_to)
        self._consumer = transport.consume(self.queue, self._on_delivery, inline=inline)

    def send(self, target: str, expr: Any, *, expect_reply: bool = True,
             on_return: Callable[[Envelope, str], None] | None = None) -> str:
        """Send ``expr`` (data, or text to be read first) to the routing key ``target``;
        returns the message id. Never waits for an answer."""
        if isinstance(expr, str | bytes):
            expr = read(expr)
        envelope = envelope_for(expr, sender=self.name, signer=self.signer,
                                reply_to=self.reply_to if expect_reply else None, target=target)
        self.transport.publish(target, envelope, on_return=on_return or self._returned,
                               persistent=is_persistent(target))
        return envelope.message_id

    def answers(self, message_id: str, *, or_unnamed: bool = False) -> list[Reply]:
        """The held call-backs that answer the message ``send`` returned ``message_id`` for
        (with ``or_unnamed``, also those that name no message they answer)."""
        return [reply for reply in self.replies if reply.correlation_id == message_id
                or (or_unnamed and reply.correlation_id is None)]

    def wait_for_answers(self, message_id: str, count: int, timeout: float, *,
                         or_unnamed: bool = False) -> list[Reply]:
        """Block this (non-cell) caller until ``count`` call-backs answering ``message_id``
        arrived or ``timeout`` passed; return those held, oldest first."""
        with self._arrived:
            self._arrived.wait_for(
                lambda: len(self.answers(message_id, or_unnamed=or_unnamed)) >= count, timeout)
            return self.answers(message_id, or_unnamed=or_unnamed)

    def wait_for_replies(self, count: int, timeout: float) -> list[Reply]:
        """Block this (non-cell) caller until ``count`` replies arrived in all (``len`` of
        ``replies``) or ``timeout`` passed; return the replies held, oldest first."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.replies) >= count, timeout)
            return self.replies[:]

    def close(self) -> None:
        """Stop consuming and delete the reply queue (idempotent); the transport stays open."""
        try:
            self.transport.cancel(self._consumer)
            self.transport.delete_queue(self.queue)
        except Exception:  # closing must succeed even if the transport is already gone
            log.debug("client %s: cleanup failed", self.name, exc_info=True)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _on_delivery(self, delivery: Delivery) -> None:
        envelope = delivery.envelope
        try:
            if not is_cellframe_content(envelope.content_type):
                raise LanguageError(f"foreign content type {str(envelope.content_type)[:80]!r}")
            if self.signer is not None:
                self.signer.verify(envelope, delivery.routing_key)
            expr = read(envelope.body)
        except (SecurityError, LanguageError) as error:
            log.warning("client %s: refused a reply: %s", self.name, error)
            with self._arrived:
                self.refused.append(error)
                del self.refused[:-DEFAULT_KEEP_REPLIES]
                self._arrived.notify_all()
            delivery.ack()
            return
        reply = Reply(expr, envelope.sender, write(expr), envelope.message_id,
                      envelope.correlation_id)
        with self._arrived:
            self.replies.append(reply)
            self._arrived.notify_all()
        delivery.ack()
        on_reply = self.on_reply
        if tracing.active is not None:  # the call-back's deliver span, around on_reply
            tracing.active.delivering(envelope, delivery.routing_key,
                                      lambda: on_reply(reply) if on_reply is not None else None)
        elif on_reply is not None:
            on_reply(reply)

    def _returned(self, envelope: Envelope, reason: str) -> None:
        log.warning("message %s was not delivered: %s", envelope.message_id, reason)
