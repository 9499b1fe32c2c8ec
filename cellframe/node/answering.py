"""The part of ``Node`` that answers, and asks, the other instances of its role about a role
message (``cellframe.node.siblings`` has the exchange and its policy): which instances there
are, by membership; and two questions. Whether a redelivered message was applied, answered by
the durable role cells here once each has handled what its mailbox held before the question;
and whether a signed message's copy was admitted (``cellframe.node.replays``), answered by the
gate's replay cache.
"""

from __future__ import annotations

import logging
import threading
import time
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
from .gate import Gate
from .hosted import Hosted, NodeParts
from .replays import Asked, Questions, replay_entry, replay_id
from .siblings import APPLIED, BUSY, NOT_APPLIED, SiblingCheck

__all__ = ["AnsweringSiblings"]

log = logging.getLogger(__name__)

_QUOTE = Symbol("quote")


class AnsweringSiblings(NodeParts):
    """Asks and answers the role's other instances (see the module's docstring)."""

    siblings: SiblingCheck
    replay_check: SiblingCheck
    questions: Questions
    gate: Gate
    journal: CellJournal | None
    fence: PauseFence | None

    def role_siblings(self) -> list[str]:
        """The other instances of this node's role that its membership holds neither down nor
        left (none without a membership cell: then a redelivered message is not held)."""
        role, membership = self.role, self._membership()
        if role is None or membership is None:
            return []
        return membership.others_in_role(role)

    def replay_tellers(self) -> list[str] | None:
        """The nodes whose news of what they admitted this node takes: those its membership
        has seen play its role, live or not (a node's last news may come after its leave);
        None without a membership cell (then anyone's)."""
        role, membership = self.role, self._membership()
        if membership is None:
            return None
        return [] if role is None else membership.members_in_role(role)

    def _membership(self) -> Membership | None:
        return next((h.cell for h in self._routes.everyone if isinstance(h.cell, Membership)),
                    None)

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

    def _ask_replay(self, sibling: str, held_id: str) -> None:
        key, message, route, _ = replay_entry(held_id)
        self.questions.ask(sibling, (key, message, route))

    def _send_replay_questions(self, sibling: str, batch: list[Asked]) -> None:
        self._send_quietly(node_key(sibling), [
            Symbol("were-admitted"), Keyword("by"), self.name,
            Keyword("entries"), [_QUOTE, [list(asked) for asked in batch]]])

    def answer_replays(self, asker: str, entries: list[Asked]) -> None:
        """Answer ``asker`` whether this node's gate admitted each signed role message
        (key id, message id, routing key): ``busy`` if it holds a copy that goes first,
        ``not-applied`` if it holds one that does not (the asker goes first, and is asked
        again here), else its replay cache says."""
        now = time.time()
        answers = []
        for key, message, route in entries:
            entry = (key, message, route, "role")
            held_id = replay_id(entry)
            answer = self.replay_check.answer_for(held_id, asker)
            if answer is None:
                if self.replay_check.holds(held_id):
                    answer = NOT_APPLIED
                else:
                    answer = APPLIED if self.gate.replays.contains(entry, now) else NOT_APPLIED
            answers.append([key, message, route, answer])
        self._send_quietly(node_key(asker), [
            Symbol("admitted-answers"), Keyword("node"), self.name,
            Keyword("answers"), [_QUOTE, answers]])

    def heard_replay_answers(self, sibling: str, answers: list[tuple[str, str, str, str]],
                             ) -> None:
        """``sibling``'s answers to a batch of ``were-admitted``; the next batch goes."""
        for key, message, route, answer in answers:
            self.replay_check.heard(sibling, replay_id((key, message, route, "role")), answer)
        self.questions.answered(sibling)

    def heard_replay_news(self, sibling: str, entries: list[tuple[str, str, str, str]]) -> None:
        """``sibling``'s news names what its gate admitted: for a copy held here that it was
        asked about, that is its answer ``applied``. Its answer may never come (it stopped
        after sending its last news, and was held for the give-up, then applied here too)."""
        for entry in entries:
            if entry[3] == "role":
                self.replay_check.heard(sibling, replay_id(entry), APPLIED)

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
