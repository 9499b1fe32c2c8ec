"""The audit trail: what became of each message an operator key sent, one event per delivery.

An operator's message that the gate admits is audited when its outcome is final, on
``event.audit.<node>``: key, target, verb, message id, whether the broker redelivered it, and
the result, ``applied``, ``duplicate``, ``ignored: REASON``, ``failed: TYPE: MESSAGE``,
``refused: bad input: ...`` or ``not applied: REASON`` (the cell crashed on it, stopped, or
the node was paused). A message that waits in a mailbox (a busy cell, a cell restarting, a
paused node) is audited when it is applied.

At least once: the delivery is settled (acked, given back or dead-lettered) only once the
broker has settled the event (``Transport.publish``'s ``on_settled``), so a node that dies
before, even with the event sent, leaves the message to be redelivered, and whoever applies it
audits it again. Two events with one message id are one message: the later one says
``:redelivered true``. (Before, the event followed the ack, and a node that died between lost
it.) Each cell that applies it reports its outcome (``Inbound.report``); a message that
reached several cells (``each.*``, a node's cells bound to one key) gives one event whose
result is the outcome they share, or each cell's when they differ.

Node keys are not audited: their deliveries carry no trail, and a cell checks ``report is
None`` and nothing more (see ``Cell.on_receive``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..transports.base import Delivery

__all__ = ["AuditTrail"]


class AuditTrail:
    """The outcomes of one operator's delivery, published as one audit event, then settled.

    ``emit(kind, fields, then)`` publishes the event and calls ``then`` once the broker has
    settled it (``Node.emit_settled``).

    ``report`` is called from the cells' threads, ``given_back`` and ``settle`` from any: a
    lock keeps the outcomes and publishes once.
    """

    __slots__ = ("_delivery", "_emit", "_key", "_lock", "_outcomes", "_published", "_verb")

    def __init__(self, emit: Callable[[str, dict[str, Any], Callable[[], None] | None], None],
                 delivery: Delivery, key: Any, verb: str | None) -> None:
        self._emit, self._delivery, self._key, self._verb = emit, delivery, key, verb
        self._outcomes: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._published = False

    def report(self, cell: str, outcome: str) -> None:
        """A cell's outcome (``Inbound.report``)."""
        with self._lock:
            self._outcomes.append((cell, outcome))

    def refuser(self, refuse: Callable[[str, bool], None],
                alone: bool) -> Callable[[str, bool], None]:
        """``refuse`` that records why first; alone (the delivery went to one cell), the
        refusal settles the delivery, so the event is published after it."""
        def refused(reason: str, again: bool) -> None:
            self.report("", f"not applied: {reason}")
            if alone:
                self.publish(then=lambda: refuse(reason, again))
            else:
                refuse(reason, again)
        return refused

    def settler(self, settle: Callable[[], None]) -> Callable[[], None]:
        """The event (once every cell is done), then ``settle`` (the delivery's ack) once the
        broker has it."""
        def settled() -> None:
            self.publish(then=settle)
        return settled

    def given_back(self, reason: str, then: Callable[[], None] | None = None) -> None:
        """The node took the delivery back before any cell applied it (a pause, no cell to
        take it); ``then`` (giving it back) once the broker has the event."""
        self.report("", f"not applied: {reason}")
        self.publish(then)

    def publish(self, then: Callable[[], None] | None = None) -> None:
        """The audit event, once, with the result of every cell that reported; ``then`` once
        the broker has settled it (at once if the event was published before)."""
        with self._lock:
            published, self._published = self._published, True
            outcomes = list(self._outcomes)
        if published:
            if then is not None:
                then()
            return
        delivery = self._delivery
        self._emit("audit", {"key": getattr(self._key, "id", None),
                             "target": delivery.routing_key, "verb": self._verb,
                             "message_id": str(delivery.envelope.message_id)[:200],
                             "result": result_of(outcomes),
                             "redelivered": bool(delivery.redelivered)}, then)


def result_of(outcomes: list[tuple[str, str]]) -> str:
    """One result for a delivery's outcomes: the one they share, else each cell's."""
    distinct = {outcome for _, outcome in outcomes}
    if len(distinct) == 1:
        return distinct.pop()
    if not distinct:
        return "not applied: no cell reported"
    return "; ".join(f"{cell}: {outcome}" if cell else outcome for cell, outcome in outcomes)
