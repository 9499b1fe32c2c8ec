"""The transport interface: the one small contract every transport implements.

A transport owns one topic exchange for control traffic and one dead-letter queue. Cells
never talk to a transport directly; a Node does, and every call here is non-blocking for the
caller (fire and forget): ``publish`` hands the message over and returns; problems that are
only known later (an unroutable message, a broker that refused it) come back through the
``on_return`` callback. ``flush`` is the one call that waits: until what was published is
settled, for a program that must know before it exits (``cellframe send``).

A transport is closed by whoever made it (``close``, or leaving ``with transport:``); a Node or
a Client given one never closes it.

Both ``MemoryTransport`` and ``AmqpTransport`` pass the conformance suite in
``cellframe.testing``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, Self, runtime_checkable

from ..wire.envelope import Envelope

__all__ = ["DEAD_LETTER_REASON", "RESENT_HEADER", "Delivery", "DeliveryHandler", "ReturnHandler",
           "SettledHandler", "Transport", "sent_before", "taken_back"]

#: Header that carries, on a dead-lettered envelope, why it was dead-lettered.
DEAD_LETTER_REASON = "x-cellframe-reason"

#: Header a publisher puts on a message it sends again because its connection closed before
#: the broker confirmed it: the broker may hold the first copy too, so a consumer treats the
#: copy as it treats a redelivered message (``sent_before``). Anyone can set a header: it
#: only buys the message a check, never a pass (the replay cache reads the broker's flag).
RESENT_HEADER = "x-cellframe-resent"


def taken_back(delivery: Delivery) -> bool:
    """Did the broker take this unsettled delivery back (its channel or consumer closed)?
    Then settling it does nothing, and another consumer may have the message already
    (``redelivered``): one held while a question went round must not be applied too. False
    where the transport cannot tell (a ``taken_back`` attribute says it)."""
    return getattr(delivery, "taken_back", False) is True


def sent_before(delivery: Delivery) -> bool:
    """Might another copy of this message have been delivered, and applied, before it? The
    broker's ``redelivered``, or a publisher's resend (``RESENT_HEADER``)."""
    return delivery.redelivered or RESENT_HEADER in delivery.envelope.headers


@runtime_checkable
class Delivery(Protocol):
    """One delivery of an envelope to a consumer; settle it exactly once."""

    envelope: Envelope
    routing_key: str
    redelivered: bool

    def ack(self) -> None:
        """The message was applied: the transport may forget it."""

    def reject(self, *, requeue: bool = False, reason: str = "") -> None:
        """Give the message back: redeliver it later (``requeue``) or dead-letter it with
        ``reason`` stored in the ``DEAD_LETTER_REASON`` header."""


DeliveryHandler = Callable[[Delivery], None]
ReturnHandler = Callable[[Envelope, str], None]
SettledHandler = Callable[[], None]


@runtime_checkable
class Transport(Protocol):
    """Topic-routed, at-least-once messaging with dead-lettering."""

    @property
    def dead_letter_queue(self) -> str:
        """Name of the queue that receives dead-lettered envelopes."""
        ...

    def declare_queue(
        self, name: str, *, durable: bool = False, exclusive: bool = False
    ) -> None:
        """Create ``name`` if it does not exist (idempotent). Durable queues outlive their
        consumers and keep a backlog; exclusive queues vanish with their owner."""

    def delete_queue(self, name: str) -> None:
        """Remove a queue and whatever it holds (idempotent)."""

    def bind(self, queue: str, pattern: str) -> None:
        """Route envelopes whose routing key matches the topic ``pattern`` to ``queue``."""

    def unbind(self, queue: str, pattern: str) -> None:
        """Undo ``bind`` (idempotent)."""

    def publish(
        self,
        routing_key: str,
        envelope: Envelope,
        *,
        persistent: bool = False,
        on_return: ReturnHandler | None = None,
        on_settled: SettledHandler | None = None,
    ) -> None:
        """Send without waiting. If no queue receives it, ``on_return(envelope, reason)`` is
        called (from any thread), else the transport logs it as unroutable. ``on_settled()``
        is called (from any thread, never the caller's) once the broker has settled it, as
        ``flush`` waits for: confirmed, or returned or refused, after its ``on_return``; a
        message resent after a lost connection is settled once, when its copy is. Not called
        if the transport closes first."""

    def dead_letter(self, envelope: Envelope, reason: str) -> None:
        """Put a copy of ``envelope`` on the dead-letter queue with ``reason``."""

    def consume(self, queue: str, handler: DeliveryHandler, *, prefetch: int = 256,
                inline: bool = False) -> str:
        """Call ``handler`` (on a transport thread) for each delivery from ``queue``, with at
        most ``prefetch`` unsettled at once. Returns a consumer tag for ``cancel``. Deliveries
        left unsettled when the consumer is cancelled are redelivered to others.

        ``inline`` promises that ``handler`` is quick and never blocks; a transport may then
        call it on its own I/O thread instead of handing each delivery to a worker (a
        handler that blocks there stalls the whole connection). It is a hint: a transport
        without an I/O thread of its own ignores it."""

    def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer; its unsettled deliveries go back to the queue."""

    def flush(self, timeout: float) -> bool:
        """Wait until every envelope published before this call is settled: confirmed by the
        broker, or returned or refused, its ``on_return`` having then run. True once it is;
        False if ``timeout`` seconds passed first."""
        ...

    def close(self) -> None:
        """Stop every consumer and release resources; later calls raise ClosedTransportError."""

    def __enter__(self) -> Self:
        """``with transport:`` closes it on the way out."""
        ...

    def __exit__(self, *exc_info: object) -> None:
        """Close the transport."""
