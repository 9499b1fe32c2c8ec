"""The part of ``Node`` that answers, and asks, the other instances of its role about a
redelivered role message (``cellframe.node.siblings`` has the exchange and its policy): which
instances there are, by membership; the question; and the answer, from the durable role cells
here once each has handled what its mailbox held before the question.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pykka

from ..cell.cell import AppliedQuery
from ..cell.durable import CellJournal
from ..cell.fence import PauseFence
from ..errors import CellframeError
from ..healing.membership import Membership
from ..language.symbols import Keyword, Symbol
from ..wire.routing import node_key
from .hosted import Hosted, NodeParts
from .siblings import APPLIED, BUSY, NOT_APPLIED, SiblingCheck

__all__ = ["AnsweringSiblings"]

log = logging.getLogger(__name__)

#: Membership's statuses of a member no longer asked about a message.
_GONE = frozenset({"down", "left"})


class AnsweringSiblings(NodeParts):
    """Asks and answers the role's other instances (see the module's docstring)."""

    siblings: SiblingCheck
    journal: CellJournal | None
    fence: PauseFence | None

    def role_siblings(self) -> list[str]:
        """The other instances of this node's role that its membership holds neither down nor
        left (none without a membership cell: then a redelivered message is not held)."""
        role = self.role
        membership = next((h.cell for h in self._routes.everyone
                           if isinstance(h.cell, Membership)), None)
        if role is None or membership is None:
            return []
        return [m["name"] for m in membership.cell_view()
                if m["role"] == role and m["status"] not in _GONE and m["name"] != self.name]

    def _ask_sibling(self, sibling: str, message_id: str) -> None:
        self._send_quietly(node_key(sibling), [
            Symbol("was-applied"), Keyword("message"), message_id, Keyword("role"),
            self.role, Keyword("by"), self.name])

    def answer_sibling(self, asker: str, role: str, message_id: str) -> None:
        """Answer ``asker`` whether this node applied ``message_id`` of ``role``: from its
        durable role cells, once each has handled what its mailbox held before the question;
        from its journal if it no longer plays the role; ``busy`` if it holds a redelivered
        copy itself (see ``SiblingCheck.answer_for``) or a cell of the role is restarting."""
        def reply(answer: str) -> None:
            self._send_quietly(node_key(asker), [
                Symbol("applied-answer"), Keyword("message"), message_id, Keyword("node"),
                self.name, Keyword("answer"), answer])

        held = self.siblings.answer_for(message_id, asker)
        if held is not None:
            reply(held)
            return
        fence = self.fence
        if fence is not None and fence.holding:
            reply(BUSY)  # what it holds behind the fence may yet be applied here
            return
        cells = [h for h in self._routes.role_cells if h.cell.durable] if role == self.role else []
        if not cells:
            journal = self.journal
            applied = journal is not None and journal.claimed_in_role(role, message_id)
            reply(APPLIED if applied else NOT_APPLIED)
            return
        _ask_cells(cells, message_id, reply)

    def _send_quietly(self, target: str, expr: list[Any]) -> None:
        try:
            self.send(target, expr, on_return=lambda *_: None)
        except CellframeError as error:  # a closed transport: the asker asks again
            log.debug("%s: not sent to %s: %s", self.name, target, error)


def _ask_cells(cells: list[Hosted], message_id: str, reply: Callable[[str], None]) -> None:
    """Put the question in each cell's mailbox; ``reply`` once all answered (``applied`` if
    one did), or ``busy`` at once if one is not running (restarting: its held messages are
    not in its mailbox yet)."""
    if any(h.condition != "running" for h in cells):
        reply(BUSY)
        return
    remaining = [len(cells)]
    applied = [False]
    lock = threading.Lock()

    def answer(was_applied: bool) -> None:
        with lock:
            remaining[0] -= 1
            applied[0] = applied[0] or was_applied
            last = remaining[0] == 0
        if last:
            reply(APPLIED if applied[0] else NOT_APPLIED)

    for hosted in cells:
        try:
            hosted.ref.tell(AppliedQuery(message_id, answer))
        except pykka.ActorDeadError:
            reply(BUSY)  # dying: asked again once it is restarted
            return
