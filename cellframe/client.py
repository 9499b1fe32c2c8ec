"""Client: how a program outside the cluster (the CLI, the REPL, a service) talks to it.

A client sends s-expressions to any target and receives the call-backs addressed to its own
reply queue, asynchronously: ``send`` never waits, and each call-back is handed to
``on_reply`` as it arrives.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .envelope import Envelope
from .errors import LanguageError, SecurityError
from .printer import write
from .reader import read
from .routing import reply_key
from .transports.base import Delivery, Transport

__all__ = ["Client", "Reply"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    """A call-back received by a client: the expression, who sent it, and its raw text."""

    expr: Any
    sender: str | None
    text: str
    message_id: str


class Client:
    """Sends to the cluster and collects call-backs on a private, exclusive reply queue.

    ``inline=True`` promises that ``on_reply`` is quick and never blocks (it appends, or puts
    on a queue): the transport may then run it on its I/O thread, which saves a thread
    hand-off per call-back. A callback that prints to a terminal or waits must not use it.
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
    ) -> None:
        self.transport = transport
        self.signer = signer
        self.name = name or f"client-{uuid.uuid4().hex[:12]}"
        self.reply_to = reply_key(self.name)
        self.queue = queue_prefix + self.reply_to
        self.replies: list[Reply] = []
        self.on_reply = on_reply
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
        envelope = Envelope(write(expr).encode(), reply_to=self.reply_to if expect_reply else None,
                            sender=self.name)
        if self.signer is not None:
            envelope = self.signer.sign(envelope)
        # Role queues are durable mailboxes: what waits there must survive a broker restart.
        self.transport.publish(target, envelope, on_return=on_return or self._returned,
                               persistent=target.startswith("role."))
        return envelope.message_id

    def wait_for_replies(self, count: int, timeout: float) -> list[Reply]:
        """Block this (non-cell) caller until ``count`` replies arrived or ``timeout`` passed."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.replies) >= count, timeout)
            return list(self.replies)

    def close(self) -> None:
        try:
            self.transport.cancel(self._consumer)
            self.transport.delete_queue(self.queue)
        except Exception:  # closing must succeed even if the transport is already gone
            log.debug("client %s: cleanup failed", self.name, exc_info=True)

    def _on_delivery(self, delivery: Delivery) -> None:
        envelope = delivery.envelope
        try:
            if self.signer is not None:
                self.signer.verify(envelope)
            expr = read(envelope.body)
        except (SecurityError, LanguageError) as error:
            log.warning("client %s: refused a reply: %s", self.name, error)
            delivery.ack()
            return
        reply = Reply(expr, envelope.sender, write(expr), envelope.message_id)
        with self._arrived:
            self.replies.append(reply)
            self._arrived.notify_all()
        delivery.ack()
        if self.on_reply is not None:
            self.on_reply(reply)

    def _returned(self, envelope: Envelope, reason: str) -> None:
        log.warning("message %s was not delivered: %s", envelope.message_id, reason)
