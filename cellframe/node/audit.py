"""The audit trail: what became of each message an operator key sent, one event per delivery.

An operator's message that the gate admits is audited once its delivery is settled (acked,
given back or dead-lettered), on ``event.audit.<node>``: key, target, verb, message id and the
result, ``applied``, ``duplicate``, ``ignored: REASON``, ``failed: TYPE: MESSAGE``,
``refused: bad input: ...`` or ``not applied: REASON`` (the cell crashed on it, stopped, or
the node was paused). Settlement is where the outcome is final: a message that waits in a
mailbox (a busy cell, a cell restarting, a paused node) is audited when it is applied, and one
the node never settles (it died first) is redelivered by the broker and audited by whoever
applies it. Each cell that applies it reports its outcome (``Inbound.report``); a message that
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
    """The outcomes of one operator's delivery, published as one audit event once settled.

    ``report`` is called from the cells' threads, ``given_back`` and ``settle`` from any: a
    lock keeps the outcomes and publishes once.
    """

    __slots__ = ("_delivery", "_emit", "_key", "_lock", "_outcomes", "_published", "_verb")

    def __init__(self, emit: Callable[..., None], delivery: Delivery, key: Any,
                 verb: str | None) -> None:
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
            refuse(reason, again)
            if alone:
                self.publish()
        return refused

    def settler(self, settle: Callable[[], None]) -> Callable[[], None]:
        """``settle`` (the delivery's ack, once every cell is done) then the event."""
        def settled() -> None:
            settle()
            self.publish()
        return settled

    def given_back(self, reason: str) -> None:
        """The node took the delivery back before any cell applied it (a pause)."""
        self.report("", f"not applied: {reason}")
        self.publish()

    def publish(self) -> None:
        """The audit event, once, with the result of every cell that reported."""
        with self._lock:
            if self._published:
                return
            self._published = True
            outcomes = list(self._outcomes)
        delivery = self._delivery
        self._emit("audit", key=getattr(self._key, "id", None), target=delivery.routing_key,
                   verb=self._verb, message_id=str(delivery.envelope.message_id)[:200],
                   result=result_of(outcomes))


def result_of(outcomes: list[tuple[str, str]]) -> str:
    """One result for a delivery's outcomes: the one they share, else each cell's."""
    distinct = {outcome for _, outcome in outcomes}
    if len(distinct) == 1:
        return distinct.pop()
    if not distinct:
        return "not applied: no cell reported"
    return "; ".join(f"{cell}: {outcome}" if cell else outcome for cell, outcome in outcomes)
