"""A node's intake: a delivery from the transport passes the gate (size, signature,
replay, read, capabilities), then goes to the cells it is for, held behind the pause fence
or for a restarting cell, and is settled once they applied it, or refused with a reason.

All of it runs on the transport's I/O thread: it never blocks and never takes the node's
lock. ``Receiving`` is the part of ``Node`` that does it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pykka

from ..cell.cell import Inbound
from ..cell.fence import PauseFence
from ..errors import RefusedError
from ..failures import LineBudget, log_limited
from ..language.symbols import Keyword, Symbol
from ..transports.base import Delivery, Transport, sent_before, taken_back
from ..wire import tracing
from ..wire.envelope import (
    CONTENT_TYPE,
    Envelope,
    Message,
    envelope_for,
    is_cellframe_content,
    request_id,
)
from ..wire.routing import topic_matches
from .audit import AuditTrail
from .gate import Admitted, Gate, head_verb
from .hosted import HeldDelivery, Hosted, NodeParts
from .replays import ReplayGossip, replay_id
from .siblings import SiblingCheck

__all__ = ["Receiving"]

log = logging.getLogger(__name__)

#: Unsigned refusal notices a node sends a second at most (see ``Receiving._notice``).
NOTICES_PER_SECOND = 20


class Receiving(NodeParts):
    """The intake of ``Node`` (a base class of it): what it uses of the node besides
    ``NodeParts`` is below."""

    signer: Any
    gate: Gate
    transport: Transport
    diagnostic: bool
    lines: LineBudget
    _leaving_role: bool
    _role_consumers_closed: int
    fence: PauseFence | None
    _held: list[HeldDelivery]
    _held_lock: threading.Lock
    _admission_lock: threading.Lock
    _notices: tuple[int, int]
    emit_settled: Callable[[str, dict[str, Any], Callable[[], None] | None], None]
    dead_letter: Callable[[Message, str], None]
    siblings: SiblingCheck
    role_siblings: Callable[[], list[str]]
    replay_check: SiblingCheck
    replay_gossip: ReplayGossip
    replays_across_role: str

    # -- receiving: on the transport's I/O thread, so never blocking and never taking _lock --

    def _on_node_delivery(self, delivery: Delivery) -> None:
        decoded = self._decode(delivery, "node")
        if decoded is None:
            return
        message, trail, _ = decoded
        key = delivery.routing_key
        if key.startswith("cell."):
            targets = self._cells_named(key[5:])
        else:
            targets = self._cells_bound_to(key) or self._cells_for_verb(message.expr)
        self._tell(targets, message, delivery, from_role_queue=False, trail=trail)

    def _on_role_delivery(self, delivery: Delivery) -> None:
        if self._leaving_role:
            return  # left unsettled: the broker requeues it when the role consumer closes
        decoded = self._decode(delivery, "role")
        if decoded is None:
            return
        message, trail, admitted = decoded
        if admitted.entry is not None and self._hold_for_replays(message, delivery, trail,
                                                                 admitted):
            return  # until the role's other instances say whether they admitted it
        self._role_admitted(message, delivery, trail, admitted)

    def _role_admitted(self, message: Message, delivery: Delivery, trail: AuditTrail | None,
                       admitted: Admitted) -> None:
        """A role delivery no other instance admitted before: told to the role's other
        instances (signed), then to the cells, after the sibling check if redelivered."""
        if admitted.entry is not None:
            self.replay_gossip.admitted(admitted.entry, admitted.expires)
        if sent_before(delivery) and self._hold_for_siblings(message, delivery, trail):
            return  # until the role's other instances say whether they applied it
        self._tell_role_cells(message, delivery, trail)

    def _tell_role_cells(self, message: Message, delivery: Delivery,
                         trail: AuditTrail | None) -> None:
        cells = self._routes.role_cells
        verb = head_verb(message.expr)
        declaring = [h for h in cells if verb in h.cell.cell_verbs()]
        self._tell(declaring or list(cells[:1]), message, delivery, from_role_queue=True,
                   trail=trail)

    # -- a replay to another instance of the role (``cellframe.node.replays``) --

    def _hold_for_replays(self, message: Message, delivery: Delivery,
                          trail: AuditTrail | None, admitted: Admitted) -> bool:
        """A signed role message the broker hands out for the first time: hold it and ask
        the role's other live instances whether their gates admitted it (a copy replayed
        to the role may reach an instance that never saw the first). False (go on now) if
        the node only gossips (``replays_across_role="gossip"``), the broker redelivered it
        (a lost ack's message must be applied somewhere), or membership knows no other
        instance."""
        if self.replays_across_role != "ask" or delivery.redelivered:
            return False
        siblings = self.role_siblings()
        if not siblings:
            return False
        assert admitted.entry is not None
        self.replay_check.hold(replay_id(admitted.entry), siblings, functools.partial(
            self._replay_decided, message, delivery, trail, admitted,
            self._role_consumers_closed))
        return True

    def _replay_decided(self, message: Message, delivery: Delivery, trail: AuditTrail | None,
                        admitted: Admitted, consumer: int, admitted_elsewhere: bool) -> bool:
        """A held role message decided: refused as ``replayed`` if another instance admitted
        a copy first, else on its way to the cells here, unless the node left the role
        meanwhile: then back to the role queue, never to cells. Once the role consumer it came
        from is closed (``consumer``: those closed before it), the broker has requeued it
        already: the new role's cells, or the role's new ones if the node came back to it,
        applied it a second time. False if the delivery went back to the queue meanwhile
        (``SiblingCheck`` then decides a copy held with it in its place)."""
        if taken_back(delivery):
            log.info("%s: %s went back to the role queue while the role's other instances were "
                     "asked: not applied here", self.name, message.id)
            return False
        if admitted_elsewhere:
            key, result = admitted.key, "refused: replayed"
            self._refuse(delivery, f"refused: message {message.id!r} was admitted by another "
                         f"instance of {self.role} (a replay within its life)",
                         reason="replayed", audit=lambda settle: self._audit(
                             delivery, key, admitted.verb, result, settle))
        elif self._routes.role_cells and not self._leaving_role \
                and consumer == self._role_consumers_closed:
            self._role_admitted(message, delivery, trail, admitted)
        else:
            self._give_back_fenced(delivery, True, "the node left the role while it asked the "
                                   "role's other instances", trail)
        return True

    # -- once per role across processes (``cellframe.node.siblings``) --

    def _hold_for_siblings(self, message: Message, delivery: Delivery,
                           trail: AuditTrail | None) -> bool:
        """A redelivered role message for a durable cell: hold it and ask the role's other
        live instances whether they applied it. False (tell the cells now) if no cell here
        is durable or membership knows no other instance."""
        if not any(h.cell.durable for h in self._routes.role_cells):
            return False
        siblings = self.role_siblings()
        if not siblings:
            return False
        self.siblings.hold(message.id, siblings, functools.partial(
            self._sibling_decided, message, delivery, trail, self._role_consumers_closed))
        return True

    def _sibling_decided(self, message: Message, delivery: Delivery, trail: AuditTrail | None,
                         consumer: int, applied_elsewhere: bool) -> bool:
        """A held redelivered message decided: acknowledged as a duplicate (another instance
        applied it), or told to the cells here, or given back if the node left the role
        meanwhile (see ``_replay_decided``); False if its delivery went back to the queue."""
        if taken_back(delivery):
            log.info("%s: %s went back to the role queue while the role's other instances were "
                     "asked: not applied here", self.name, message.id)
            return False
        if applied_elsewhere:
            self.counters.sibling_duplicates += 1
            log.info("%s: %s was applied by another instance of %s: acknowledged as a "
                     "duplicate", self.name, message.id, self.role)
            if trail is None:
                _ack_quietly(delivery)
            else:
                trail.report("", "duplicate")
                trail.publish(then=functools.partial(_ack_quietly, delivery))
        elif self._routes.role_cells and consumer == self._role_consumers_closed:
            self._tell_role_cells(message, delivery, trail)
        else:
            self._give_back_fenced(delivery, True, "the node left the role while it asked the "
                                   "role's other instances", trail)
        return True

    def _cells_named(self, name: str) -> list[Hosted]:
        return [h for h in self._routes.everyone if h.cell.cell_name == name]

    def _cells_bound_to(self, key: str) -> list[Hosted]:
        return [h for h in self._routes.everyone
                if any(topic_matches(p, key) for p in h.patterns)]

    def _cells_for_verb(self, expr: Any) -> list[Hosted]:
        routes = self._routes
        daemon = routes.daemon
        if daemon is None:
            return []
        verb = head_verb(expr)
        if verb is None or verb in daemon.cell.cell_verbs():
            return [daemon]
        declaring = [h for h in routes.role_cells if verb in h.cell.cell_verbs()]
        return declaring or [daemon]

    def _tell(self, targets: list[Hosted], message: Message, delivery: Delivery, *,
              from_role_queue: bool = False, trail: AuditTrail | None = None) -> None:
        """Hand a delivery to its cells; a cell that is down has it held for its restart.
        ``from_role_queue``: a refused message may go back to its queue (a role queue, where
        another node may apply it), else it is dead-lettered (this node's own queue).
        ``trail``: an operator's message, audited once settled (``cellframe.node.audit``)."""
        if not targets:
            why = "no cell here to receive it"
            self._refuse(delivery, why, message.reply_to,
                         audit=None if trail is None else functools.partial(trail.given_back, why))
            return
        admit = None
        fence = self.fence
        if fence is not None and all(t in self._routes.role_cells for t in targets):
            with self._held_lock:
                generation, holding = fence.stamp()
                if holding:
                    self._held.append(HeldDelivery(targets, message, delivery, from_role_queue,
                                            self.role, trail))
                    return
            admit = _Admission(self, fence, generation, delivery, from_role_queue, trail)
        with self._intake:
            if self._stopped.is_set() or (from_role_queue and self._leaving_role):
                return  # left unsettled: the broker gives it to another node
            self.counters.delivered += 1
            alone = len(targets) == 1
            if trail is None:
                report = None
                settle = _countdown(len(targets), delivery.ack)
                refuse = self._refusal(delivery, message, settle, alone, from_role_queue)
            else:
                report = trail.report
                settle = _countdown(len(targets), trail.settler(delivery.ack))
                refuse = trail.refuser(
                    self._refusal(delivery, message, settle, alone, from_role_queue), alone)
            redelivered = from_role_queue and sent_before(delivery)
            received = time.monotonic() if redelivered else 0.0
            for hosted in targets:
                self._hand(hosted, Inbound(message, settle, refuse, admit, report, redelivered,
                                           received), refuse)

    @staticmethod
    def _hand(hosted: Hosted, inbound: Inbound, refuse: Callable[[str, bool], None]) -> None:
        """Tell ``hosted`` the message if it runs, hold it for its restart if it is
        restarting, or refuse it (hold ``_intake``)."""
        if hosted.condition == "running":
            try:
                hosted.ref.tell(inbound)
                return
            except pykka.ActorDeadError:
                pass  # it is dying: its supervisor is about to hear of it
        if hosted.condition in ("failed", "stopped"):
            refuse(f"{hosted.cell.cell_name}: cell crashed", True)
        else:
            hosted.pending.append(inbound)

    def _give_back_fenced(self, delivery: Delivery, from_role_queue: bool, why: str,
                          trail: AuditTrail | None) -> None:
        """A delivery a fenced role cell must not apply: back to its role queue for another
        holder, or, addressed to this node, to the dead letters with the reason."""
        self.counters.fenced += 1
        reason = f"{self.name}: not applied: {why}"
        log_limited(log, self.lines, "fenced", logging.INFO, "%s (message %s)", reason,
                    delivery.envelope.message_id)

        def give_back() -> None:
            try:
                delivery.reject(requeue=from_role_queue, reason=reason)
            except Exception:  # a consumer closed meanwhile: the broker requeued it already
                log.debug("%s: giving back %s failed", self.name, delivery.envelope.message_id,
                          exc_info=True)

        if trail is None:
            give_back()
        else:
            trail.given_back(why, then=give_back)

    def _refusal(self, delivery: Delivery, message: Message, settle: Callable[[], None],
                 alone: bool, requeue: bool) -> Callable[[str, bool], None]:
        """The ``refuse`` of an Inbound: settle the delivery without applying it."""
        return _Refusal(self, delivery, message, settle, alone, requeue)

    def _decode(self, delivery: Delivery, where: str,
                ) -> tuple[Message, AuditTrail | None, Admitted] | None:
        """Pass the delivery through the gate (size, signature, replay, read, capabilities);
        refuse it with the reason, or make it a message for the cells (with its audit trail
        if an operator key sent it, and what the gate admitted)."""
        envelope = delivery.envelope
        if not is_cellframe_content(envelope.content_type):
            # Its reply_to is not verified yet: answered only in an unsigned cluster.
            self._refuse(delivery, f"foreign content type {str(envelope.content_type)[:80]!r}: "
                                   f"a node reads only {CONTENT_TYPE}",
                         envelope.reply_to if self.signer is None else None,
                         reason="content-type", dead_letter=True)
            return None
        try:
            admitted = self.gate.admit(delivery, where)
        except RefusedError as error:
            verified = error.reason in ("unreadable", "not-allowed", "replayed")
            key, result = getattr(error, "key", None), f"refused: {error.reason}"
            self._refuse(delivery, f"refused: {error}", envelope.reply_to if verified else None,
                         reason=error.reason,
                         audit=lambda settle: self._audit(delivery, key, None, result, settle))
            if not verified:
                self._notice(envelope, error.reason)
            return None
        key = admitted.key
        trail = (AuditTrail(self.emit_settled, delivery, key, admitted.verb)
                 if key is not None and key.kind == "operator" else None)
        return Message(admitted.expr, id=envelope.message_id, reply_to=envelope.reply_to,
                       sender=envelope.sender, sent_at=envelope.timestamp,
                       correlation_id=envelope.correlation_id,
                       trace=None if tracing.active is None
                       else tracing.active.on_deliver(envelope, delivery.routing_key)), \
            trail, admitted

    def _notice(self, envelope: Envelope, reason: str) -> None:
        """Tell a client whose message failed verification, unsigned (it could not verify an
        answer anyway), so ``cellframe send`` with a wrong key fails at once instead of
        waiting for nothing. Only to ``reply.*`` addresses, at most ``NOTICES_PER_SECOND``: a
        forged reply address can make a node send no more than that."""
        reply_to = envelope.reply_to
        if not (isinstance(reply_to, str) and reply_to.startswith("reply.")):
            return
        now = time.monotonic()
        second, sent = self._notices
        if int(now) != second:
            second, sent = int(now), 0
        if sent >= NOTICES_PER_SECOND:
            return
        self._notices = (second, sent + 1)
        expr = [Symbol("refused"), Keyword("node"), self.name, Keyword("id"),
                str(envelope.message_id)[:200], Keyword("reason"), reason]
        try:
            notice = envelope_for(expr, sender=self.name,
                                  correlation_id=str(envelope.message_id)[:200])
            self.transport.publish(reply_to, notice, on_return=lambda *_: None)
        except Exception:  # best effort: the refusal is counted and logged already
            log.debug("%s: refusal notice not sent", self.name, exc_info=True)

    def _audit(self, delivery: Delivery, key: Any, verb: str | None, result: str,
               then: Callable[[], None]) -> None:
        """An ``event.audit.<node>`` for a message the gate refused, and ``then`` (settling the
        delivery) once the broker has the event, so a node that dies between loses no event:
        the broker redelivers the message (one it admits from an operator key is audited the
        same way: ``cellframe.node.audit``)."""
        if self.signer is None:
            then()
            return
        self.emit_settled("audit", {"key": getattr(key, "id", None),
                                    "target": delivery.routing_key, "verb": verb,
                                    "message_id": str(delivery.envelope.message_id)[:200],
                                    "result": result,
                                    "redelivered": bool(delivery.redelivered)}, then)

    def _refuse(self, delivery: Delivery, detail: str, reply_to: str | None = None, *,
                reason: str = "no-cell", dead_letter: bool = False,
                audit: Callable[[Callable[[], None]], None] | None = None) -> None:
        """Count and log a refused delivery; dead-letter it in diagnostic mode (or always, with
        ``dead_letter``: a message meant for something else), else drop it; with ``audit``,
        once ``audit`` has the event out (it is given the settling to do)."""
        self.counters.rejected += 1
        refused = self.counters.refused
        refused[reason] = refused.get(reason, 0) + 1
        log_limited(log, self.lines, reason, logging.WARNING, "%s: %s (message %r)", self.name,
                    detail, str(delivery.envelope.message_id)[:200])
        settle: Callable[[], None]
        if self.diagnostic or dead_letter:
            settle = functools.partial(delivery.reject, requeue=False,
                                       reason=f"{self.name}: {reason}: {detail}")
        else:
            settle = delivery.ack
        if audit is None:
            settle()
        else:
            audit(settle)
        if reply_to:
            self.send(reply_to, [Symbol("error"), Keyword("node"), self.name, Keyword("id"),
                                 delivery.envelope.message_id, Keyword("reason"), detail],
                      correlation_id=request_id(delivery.envelope))



class _Admission:
    """What a role cell asks just before applying a delivery stamped ``generation``: one
    decision for all the cells it went to, and the delivery given back at most once.

    An object with slots and the node's lock, where it was a closure over a list and a lock of
    its own, made on the I/O thread for every delivery to a role cell: ``Receiving._tell`` for one
    cell behind the fence (the bench's counting node) took 7.1 us of that thread's CPU with the
    closures (this and ``_Refusal``'s), 4.0 us with the objects, the cell applying the
    messages on its own thread meanwhile. One lock for all the node's deliveries costs no
    concurrency: the cells that ask take the fence's own lock one at a time anyway.
    """

    __slots__ = ("_decided", "_delivery", "_fence", "_from_role_queue", "_generation",
                 "_lock", "_node", "_trail")

    def __init__(self, node: Receiving, fence: PauseFence, generation: int, delivery: Delivery,
                 from_role_queue: bool, trail: AuditTrail | None) -> None:
        self._node, self._fence, self._generation = node, fence, generation
        self._delivery, self._from_role_queue, self._trail = delivery, from_role_queue, trail
        self._decided: bool | None = None
        self._lock = node._admission_lock

    def __call__(self) -> bool:
        with self._lock:
            if self._decided is None:
                self._decided = admitted = self._fence.admits(self._generation)
                if not admitted:
                    self._node._give_back_fenced(self._delivery, self._from_role_queue,
                                                 "it arrived before the node was paused",
                                                 self._trail)
            return self._decided


class _Refusal:
    """``Receiving._refusal``'s answer, ``refuse(reason, again)``: a delivery that went to one cell
    is rejected (given back to its queue if ``again`` and it came from a role queue); one of
    several cells refusing dead-letters a copy and counts down, the others still apply it.

    An object with slots where it was a closure: see ``_Admission`` for what the two saved.
    """

    __slots__ = ("_alone", "_delivery", "_message", "_node", "_requeue", "_settle")

    def __init__(self, node: Receiving, delivery: Delivery, message: Message,
                 settle: Callable[[], None], alone: bool, requeue: bool) -> None:
        self._node, self._delivery, self._message = node, delivery, message
        self._settle, self._alone, self._requeue = settle, alone, requeue

    def __call__(self, reason: str, again: bool) -> None:
        if self._alone:
            self._delivery.reject(requeue=again and self._requeue, reason=reason)
            return
        try:
            self._node.dead_letter(self._message, reason)
        finally:
            self._settle()



def _ack_quietly(delivery: Delivery) -> None:
    try:
        delivery.ack()
    except Exception:  # its channel closed meanwhile: the broker redelivers it, asked again
        log.debug("acknowledging %s failed", delivery.envelope.message_id, exc_info=True)


def _countdown(count: int, done: Callable[[], None]) -> Callable[[], None]:
    """A callback that calls ``done`` once it has itself been called ``count`` times."""
    if count == 1:
        return done
    remaining = [count]
    lock = threading.Lock()

    def settle() -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            done()

    return settle

