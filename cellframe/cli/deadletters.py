"""``cellframe dead-letters``: read the dead-letter queue, where a node in diagnostic mode
reflects every message it ignored or refused, with the reason.

Reading leaves the letters in the queue (they are consumed unsettled, and go back when the
consumer is cancelled) unless ``take`` is given, which acknowledges, and so removes, the ones
shown. The reading stops after ``limit`` letters, or once none has come for ``idle`` seconds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from ..transports.base import DEAD_LETTER_REASON, Delivery
from .times import moment, shown

__all__ = ["DeadLetter", "format_letter", "read_dead_letters"]


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter: what was sent, to where, by whom, and why it died."""

    message_id: str
    routing_key: str
    sender: str | None
    sent_at: float
    reason: str
    body: str

    def as_dict(self) -> dict[str, Any]:
        return {**vars(self), "sent_at": shown(self.sent_at)}


def _letter(delivery: Delivery) -> DeadLetter:
    envelope = delivery.envelope
    reason = envelope.headers.get(DEAD_LETTER_REASON, "")
    return DeadLetter(envelope.message_id, delivery.routing_key, envelope.sender,
                      envelope.timestamp, str(reason or "(no reason given)"),
                      envelope.body.decode("utf-8", "replace"))


def read_dead_letters(transport: Any, *, limit: int, idle: float,
                      take: bool = False) -> list[DeadLetter]:
    """Up to ``limit`` letters from ``transport``'s dead-letter queue, oldest first."""
    letters: list[DeadLetter] = []
    held: list[Delivery] = []
    arrived = threading.Condition()

    def on_delivery(delivery: Delivery) -> None:
        with arrived:
            if len(letters) < limit:
                letters.append(_letter(delivery))
                if take:
                    delivery.ack()
            held.append(delivery)  # unsettled ones go back when the consumer is cancelled
            arrived.notify_all()

    tag = transport.consume(transport.dead_letter_queue, on_delivery, prefetch=min(limit, 1000))
    try:
        with arrived:
            last = time.monotonic()
            while len(letters) < limit:
                seen = len(held)
                arrived.wait(max(0.0, last + idle - time.monotonic()))
                if len(held) > seen:
                    last = time.monotonic()
                elif time.monotonic() >= last + idle:
                    break
            return list(letters)
    finally:
        transport.cancel(tag)


def format_letter(letter: DeadLetter, width: int = 200) -> str:
    """When, id, from whom, why it died; and on a second line what it said."""
    sent = moment(letter.sent_at, local=True)
    when = sent.strftime("%H:%M:%S") if sent is not None else "??:??:??"
    body = letter.body if len(letter.body) <= width else letter.body[:width - 3] + "..."
    return f"{when} {letter.message_id[:8]} from {letter.sender or '?'}: {letter.reason}\n    {body}"
