"""Where a cell's outgoing messages go: the Outbox interface, and one that records them.

A running Node sends for its cells (it signs, writes and publishes): the Outbox is the sending
half of the ``CellHost`` it is to them. A cell started on its own, in a test or a script, can
be given a ``RecordingOutbox`` instead, which its ``StandaloneHost`` sends through.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..wire.envelope import Envelope, Message

__all__ = ["DeadLetter", "Outbox", "RecordingOutbox", "Sent"]


class Outbox(Protocol):
    """Fire-and-forget sending on behalf of a cell; never blocks on the receiver."""

    def send(self, target: str, expr: Any, *, reply_to: str | None = None,
             sender: str | None = None,
             on_return: Callable[[Envelope, str], None] | None = None,
             correlation_id: str | None = None) -> None:
        """Send ``expr`` to the routing key ``target``; ``on_return`` (called from any thread)
        hears if no queue received it; ``correlation_id`` names the message a call-back
        answers."""

    def dead_letter(self, message: Message, reason: str) -> None:
        """Reflect an errant ``message`` to the dead letters, with ``reason``."""


@dataclass(frozen=True, slots=True)
class Sent:
    target: str
    expr: Any
    reply_to: str | None
    sender: str | None
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: Message
    reason: str


class RecordingOutbox:
    """An Outbox that keeps what it is given, for tests and scripts (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: list[Sent] = []
        self.dead_letters: list[DeadLetter] = []

    def send(self, target: str, expr: Any, *, reply_to: str | None = None,
             sender: str | None = None,
             on_return: Callable[[Envelope, str], None] | None = None,
             correlation_id: str | None = None) -> None:
        with self._lock:
            self.sent.append(Sent(target, expr, reply_to, sender, correlation_id))

    def dead_letter(self, message: Message, reason: str) -> None:
        with self._lock:
            self.dead_letters.append(DeadLetter(message, reason))
