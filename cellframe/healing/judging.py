"""How a node judges its peers: blind spells of its own, phi, probes of the broker, and the
verdicts (down, refuted, left) it reaches and spreads.

``Judging`` is a part of ``cellframe.healing.membership.Membership`` (a base class of it): the
transitions here are Membership's. It declares below what it uses of the rest of Membership.
See docs/healing.md ("Detection", "Blind spells").
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from ..cell.fence import PauseFence
from ..cell.host import CellHost
from ..cell.statemachine import transition
from ..language.symbols import Keyword, Symbol
from ..wire.envelope import Message
from ..wire.routing import cell_key, down_key, probe_key
from .brokercheck import BrokerCheck
from .config import HealingConfig
from .detector import FlapDamper
from .member import ALIVE, DOWN, HELD, LEFT, LIVE, SUSPECT, Member
from .reconciler import Reconciler

__all__ = ["Judging"]

_LIVE = LIVE


class Judging:
    """Membership's judging of its peers (see the module's docstring)."""

    # What it uses of Membership, set in Membership.__init__ or defined there.
    cell_host: CellHost
    cell_name: str
    actor_ref: Any
    node_name: str
    view: dict[str, Member]
    config: HealingConfig
    damper: FlapDamper
    reconciler: Reconciler
    role_since: float
    last_heartbeat: float
    last_tick: float | None
    _pause_seen_at: float | None
    _blind_since: float | None
    _cut_off: bool
    _fence: PauseFence | None
    _fence_seen: int
    _fence_tripped_at: float | None
    _returned: list[tuple[str, int, float]]
    _returned_lock: threading.Lock
    _brokers: BrokerCheck
    _ring_dirty: bool
    _ring_moved: set[str]
    membership_clock: Callable[[], float]
    membership_wall: Callable[[], float]
    _own: Callable[[Member], Member]
    _watched: Callable[[str], bool]
    _judged: Callable[[], list[Member]]
    _publish: Callable[..., None]
    _broadcast: Callable[..., None]
    _emit: Callable[..., None]
    _heartbeat: Callable[[float], None]
    _announce: Callable[..., None]

    @property
    def incarnation(self) -> int:
        return self.cell_host.incarnation

    # -- the pause and broker rule (docs/healing.md, "Blind spells") ---------------------------

    def _sighted(self, now: float) -> bool:
        """May this node judge its peers now? Not while its broker connection is down; after
        it comes back, or after a pause of its own, it doubts: it judges each peer again only
        once it has heard from it (or after ``rejoin_grace``)."""
        gap = 0.0 if self.last_tick is None else now - self.last_tick
        self._notice_pause(now)
        self.last_tick = now
        if not self.cell_host.broker_connected:
            if self._blind_since is None:
                self._blind_since = now
                self._cut_off = True
                self._emit("blind", reason="broker")
            return False
        if self._blind_since is not None:
            self._doubt(now, "broker", now - self._blind_since)
            self._blind_since = None
        fence = self._fence
        if fence is not None and fence.generation != self._fence_seen:
            self._fence_seen = fence.generation
            self._fence_tripped_at = now
            self._doubt(now, "pause", max(gap, fence.longest))
            # Peers may have declared this life down: start a newer one, whose role-since is
            # now, so that if the slot was refilled meanwhile this node is the one to step down.
            self._refute(self.incarnation, "pause")
        return True

    def _notice_pause(self, now: float) -> None:
        """Own ticks late by more than the pause gap: the silence of others measured since is
        partly our own. Called first on a tick and on every heartbeat (those parked while we
        were stopped are read before the tick that would notice). A gap past the fence gap
        is a blind spell: doubt. A shorter one (a busy host) is taken off every member's
        silence: doubting on each late tick kept a loaded node from ever finding the dead."""
        if self.last_tick is None or self._pause_seen_at == self.last_tick:
            return
        gap = now - self.last_tick
        if gap <= self.config.pause_gap_s:
            return
        self._pause_seen_at = self.last_tick
        if gap >= self.config.fence_gap_s:
            self._doubt(now, "pause", gap)
            return
        late = gap - self.config.heartbeat_interval
        for member in self._judged():
            if member.detector is not None:
                member.detector.forgive(late, now)

    def _doubt(self, now: float, reason: str, seconds: float) -> None:
        """Restart every live member's silence at ``now`` and judge none of them before it is
        heard from again (or ``rejoin_grace`` has passed)."""
        for member in self._judged():
            detector = member.detector
            if member.status in (*_LIVE, HELD) and detector is not None:
                detector.rebase(now)
                member = self._own(member)
                member.doubted_until = now + self.config.rejoin_grace
        self._emit("doubting", reason=reason, seconds=round(seconds, 3))

    # -- detection ----------------------------------------------------------------------------

    def _judge(self, member: Member, now: float) -> None:
        """Move one member along alive -> suspect -> down, probing the broker on the way."""
        detector = member.detector
        if member.status not in (*_LIVE, HELD) or detector is None:
            return
        if not self._watched(member.name):
            return  # its watchers judge it, and tell everyone
        member = self._own(member)
        if member.doubted_until is not None:
            if now < member.doubted_until:
                return  # not heard since we were blind: no verdict yet
            member.doubted_until = None  # never heard: judge it afresh from now
            detector.rebase(now)
            return
        if member.status == HELD and not self.damper.held(member.name, now):
            self._set_status(member, ALIVE, now)
            self._emit("up", member=member.name, role=member.role,
                       incarnation=member.incarnation, rejoined=True)
        # Two readings of one history: the raw phi suspects early (and only costs a probe);
        # the phi that grants the acceptable pause is the one that may declare down alone.
        phi = detector.phi(now, pause=False)
        if phi < self.config.suspect_phi:
            return  # the reading with the pause granted is lower still, and down >= suspect
        if detector.phi(now) >= self.config.down_phi:
            self._declare_down(member, now, "phi")
        elif phi >= self.config.suspect_phi:
            if member.status == ALIVE:
                self._set_status(member, SUSPECT, now)
                self._emit("suspected", member=member.name, phi=round(phi, 2),
                           silence=round(now - member.last_seen, 3))
            self._probe(member, now)

    def _probe(self, member: Member, now: float) -> None:
        """Ask the broker whether ``member``'s queue still exists (at most once an interval)."""
        if now - member.probed_at < self.config.heartbeat_interval:
            return
        member = self._own(member)
        member.probed_at = now
        name, incarnation, sent = member.name, member.incarnation, now

        def returned(envelope: Any, reason: str) -> None:  # a broker thread: hand it over
            with self._returned_lock:
                self._returned.append((name, incarnation, sent))
            try:
                self.actor_ref.tell(Message([Symbol("probe-returned")]))
            except Exception:  # the cell stopped meanwhile: nothing left to tell
                pass

        self._publish(probe_key(name), [Symbol("probe"), Keyword("by"), self.node_name],
                      on_return=returned)

    @transition("probe-returned")
    def probe_returned(self) -> None:
        self._drain_returns()

    def _drain_returns(self) -> None:
        with self._returned_lock:
            returned, self._returned = self._returned, []
        now = self.membership_clock()
        for name, incarnation, sent in returned:
            member = self.view.get(name)
            if member is None or member.incarnation != incarnation:
                continue  # a newer life answered meanwhile: the probe was about the old one
            if member.doubted_until is not None:
                continue  # sent before or while we were blind: its queue may be rebuilding
            if member.status not in (*_LIVE, HELD):
                continue
            member = self._own(member)
            if member.gone_since is None or sent < member.gone_since:
                member.gone_since = sent  # gone, or failing over to another broker node?
                member.probed_at = -math.inf  # probe again on the next tick
                self._broker_up(member)  # on another broker node: ask now if it is up
            elif sent - member.gone_since >= self.config.broker_confirm_s:
                self._confirm_gone(member, now)
            else:
                member.probed_at = -math.inf

    def _broker_up(self, member: Member) -> bool | None:
        """Is the broker node ``member`` was connected to up? True if it is ours (we are
        connected to it) or unnamed; None while a check of it is on its way."""
        if member.broker is None or member.broker == self.cell_host.broker_address:
            return True
        return self._brokers.up(member.broker)

    def _confirm_gone(self, member: Member, now: float) -> None:
        """``member``'s queue stayed gone for ``broker-confirm``: it is down, unless its broker
        node is what died (``cellframe.healing.brokercheck``): then it is only cut off and
        failing over, and is doubted like a peer after a blind spell of ours."""
        up = self._broker_up(member)
        if up:
            self._declare_down(member, now, "broker")
        elif up is None:
            member.probed_at = -math.inf  # the check is on its way: probe again meanwhile
        else:
            member.gone_since = None
            member.doubted_until = now + self.config.rejoin_grace
            if member.detector is not None:
                member.detector.rebase(now)
            self._emit("broker-lost", member=member.name, broker=member.broker)

    @transition("probe")
    def probed(self, by: str | None = None, **extra: Any) -> None:
        """Someone suspects us: answer with a heartbeat now (at most twice an interval)."""
        now = self.membership_clock()
        if now - self.last_heartbeat >= self.config.heartbeat_interval / 2:
            self._heartbeat(now)

    def _declare_down(self, member: Member, now: float, evidence: str, *,
                      publish: bool = True) -> None:
        member = self._own(member)
        phi = member.detector.phi(now) if member.detector is not None else 0.0
        silence = now - member.last_seen
        hold = 0.0 if member.status == HELD else self.damper.record_down(member.name, now)
        self._set_status(member, DOWN, now)
        member.queue_gone = evidence.startswith("broker")
        self.reconciler.forget(member.name)
        news = [Symbol("member-down"), Keyword("node"), member.name,
                Keyword("incarnation"), member.incarnation, Keyword("by"), self.node_name,
                Keyword("evidence"), evidence]
        self._tell_local(news)
        self._emit("down", member=member.name, role=member.role, incarnation=member.incarnation,
                   evidence=evidence, phi=round(min(phi, 1e6), 2), silence=round(silence, 3),
                   hold=hold)
        if publish:
            self._broadcast(down_key(member.name), news, senders=self.config.watchers)

    def _remind_down(self, member: Member, now: float) -> None:
        """A member we declared down is heartbeating in the same life: our notice may have
        been lost while its queue was gone (a dropped connection). Tell it again, at most once
        a second, so it refutes with a new incarnation instead of staying down for ever. To
        it alone: broadcast, the reminders of a healed partition made every node of the
        member's own side find it down too (1,600 such verdicts at 60 nodes, a 0.3 split)."""
        if now - member.probed_at < 1.0:
            return
        member = self._own(member)
        member.probed_at = now
        self._publish(cell_key(f"{member.name}-membership"), [
            Symbol("member-down"), Keyword("node"), member.name,
            Keyword("incarnation"), member.incarnation, Keyword("by"), self.node_name,
            Keyword("evidence"), "reminder"])

    def _tell_local(self, expr: list[Any]) -> None:
        """Hand membership news to this node's cells that declare its verb, at once: a proxy
        here then drops a dead backend without waiting for the broker's copy (which follows,
        and is a no-op since the news is applied idempotently)."""
        verb = expr[0].name
        for cell in self.cell_host.cells().values():
            if verb in cell.cell_verbs():
                try:
                    cell.actor_ref.tell(Message(expr, sender=self.cell_name))
                except Exception:  # the cell is stopping: it needs no news
                    pass

    @transition("member-down")
    def heard_down(self, node: str, incarnation: int = 0, by: str | None = None,
                   evidence: str | None = None, **extra: Any) -> None:
        """Another node declared ``node`` down: refute it if it is us, else check for ourselves."""
        if by == self.node_name or not isinstance(incarnation, int):
            return
        if node == self.node_name:
            if incarnation >= self.incarnation:
                self._refute(incarnation, by)
            return
        member = self.view.get(node)
        if member is None or incarnation != member.incarnation or member.status not in _LIVE:
            return  # late, about an older life, or already known: changes nothing
        if member.doubted_until is not None or not self.cell_host.broker_connected:
            return  # we cannot judge it now; we will once we hear it, or after the grace
        if not self._watched(node):
            # Its watchers judged it; we hear none of its heartbeats to judge by ourselves.
            self._declare_down(member, self.membership_clock(), f"{evidence or 'phi'} by {by}",
                               publish=False)
            return
        member = self._own(member)
        member.probed_at = -math.inf
        self._probe(member, self.membership_clock())

    def _refute(self, incarnation: int, by: str | None) -> None:
        """We are alive but were declared down: start a new life that supersedes that news."""
        new = self.cell_host.renew_incarnation(incarnation)
        if by == "pause" or self._cut_off:
            # Cut off (paused, blind, outvoted): the newest holder if the role was refilled.
            # A node on the larger side keeps its role-since: the smaller side's verdicts
            # would otherwise make every holder new at a heal, and which stepped down a race.
            self.role_since = self.membership_wall()
        self._emit("refuted", incarnation=new, by=by)
        self._heartbeat(self.membership_clock())
        if self.config.watchers > 0:
            self._announce()

    @transition("member-leave")
    def heard_leave(self, node: str, incarnation: int = 0, **extra: Any) -> None:
        member = self.view.get(node) if isinstance(node, str) else None
        if member is None or incarnation != member.incarnation or member.status in (DOWN, LEFT):
            return
        self._set_status(member, LEFT, self.membership_clock())
        self.reconciler.forget(node)
        self._emit("left", member=node, incarnation=incarnation)

    def _set_status(self, member: Member, status: str, now: float) -> None:
        if (status in _LIVE) != (member.status in _LIVE):
            self._ring_dirty = True
        member = self._own(member)
        self._ring_moved.add(member.name)
        member.status = status
        member.changed_at = now
