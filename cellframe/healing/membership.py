"""Membership: heartbeats, failure detection and the cluster view, as a system cell on every node.

Every node hosts one ``Membership`` cell (``Node(system_cells=(Membership,))``). Each tick it

1. publishes ``(heartbeat :node N :role R :incarnation I :seq S :role-since T :interval H)``
   on ``heartbeat.<node>``; every membership cell binds ``heartbeat.*``, so every live node
   hears every heartbeat and the views converge without gossip rounds;
2. runs a phi-accrual detector (``cellframe.healing.detector``) over every member it knows. Above
   ``suspect_phi`` the member is *suspected* and probed: a mandatory publish to
   ``probe.<member>``, a key only that member's queue binds. The broker deletes a dead node's
   exclusive queue when its connection drops (RabbitMQ: at once on SIGKILL, the kernel closes
   the socket; the memory broker: on ``abort()``), so the probe comes back unroutable and the
   member is declared *down* with evidence ``broker``. A member that is only slow still has
   its queue: the probe is delivered, and only a silence past ``down_phi`` (which includes the
   ``acceptable_pause``) declares it down with evidence ``phi``;
3. runs the reconciler (``cellframe.healing.reconciler``) once warm, and carries out what it
   decides, but only while its view holds a majority of the cluster (keep-majority, see
   ``_keep_majority`` and docs/healing.md, "Partitions").

Membership changes are messages, applied idempotently: ``(member-down :node N :incarnation
I)`` on ``membership.down.<N>`` (others take it as a hint and probe N themselves; N itself,
if alive, refutes it by bumping its incarnation), ``(member-leave ...)`` on a clean stop,
``(claim ...)`` and ``(claim-withdrawn ...)``. Anything about an incarnation older than the
one known is ignored, so a 'down' heard twice, late, or after the node came back changes
nothing. Every step is also an event on ``event.<kind>.<node>``: up, suspected, down, held,
left, claimed, stood-down, ready, stepped-down, refuted, outvoted, rejoined, claim-failed (a
role whose cells failed to start on this node: the claim is withdrawn, and the node leaves
that role to others for ``failed_role_hold`` seconds).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from typing import Any, ClassVar

from ..cell.cell import Cell
from ..cell.fence import PauseFence
from ..cell.statemachine import transition
from ..config.txtconfig import ClusterIntent
from ..config.watchers import IntentWatcher
from ..errors import CellframeError, ConfigError
from ..failures import log_failure
from ..language.symbols import Keyword, Symbol
from ..wire.envelope import Envelope
from ..wire.routing import (
    announce_key,
    cell_key,
    claim_key,
    heartbeat_key,
    leave_key,
)
from .brokercheck import BrokerCheck
from .capacity import CapacityPlanner, ScaleSettings
from .config import HealingConfig
from .detector import FlapDamper, PhiAccrual
from .judging import Judging
from .majority import holds_majority
from .member import ALIVE, DOWN, HELD, LEFT, LIVE, SUSPECT, Member
from .reconciler import Claim, LiveMember, Reconciler
from .watchring import LiveRing

__all__ = [
    "ALIVE",
    "DOWN",
    "HELD",
    "LEFT",
    "SUSPECT",
    "HealingConfig",
    "Member",
    "Membership",
]

log = logging.getLogger(__name__)

#: The role a node announces while it may not play the role it gave up when a cell failed
#: (see ``cellframe.node.supervisor``): not a role any intent counts, so it is no spare.
QUARANTINED = "quarantined"

_LIVE = LIVE
# A heartbeat's verb and keywords, made once: one is sent every interval.
_HEARTBEAT_WORDS = (Symbol("heartbeat"), Keyword("node"), Keyword("role"), Keyword("incarnation"),
                    Keyword("seq"), Keyword("role-since"), Keyword("interval"))


def _unheard(envelope: Envelope, reason: str) -> None:
    """A heartbeat nobody binds yet (a watch ring still forming) is no error worth a warning."""


class Membership(Judging, Cell):
    """Heartbeats, the failure detector, the membership view and the reconciler of one node.

    Configure with ``Membership.configured(HealingConfig(...))`` (a subclass with those
    defaults); otherwise the timing comes from DNS settings (see ``HealingConfig``).
    """

    states = ("joining", "running")
    initial = "joining"
    bindings = ("heartbeat.*", "membership.#", "probe.{node}")
    #: Membership news only nodes send, each naming its speaker: a node speaks for itself
    #: with ``:node``, and of another node (down, probed) with ``:by``.
    node_verbs: ClassVar[Mapping[str, str | None]] = {
        "heartbeat": "node", "announce": "node", "member-leave": "node", "claim": "node",
        "claim-withdrawn": "node", "member-down": "by", "probe": "by"}
    healing: ClassVar[HealingConfig | None] = None
    #: How long a node whose cells failed to start for a role leaves that role to others.
    failed_role_hold: ClassVar[float] = 30.0

    @classmethod
    def configured(cls, config: HealingConfig | None = None, **overrides: Any) -> type[Membership]:
        """A Membership class whose timing is ``config`` (DNS settings are then ignored)."""
        base = config or HealingConfig()
        return type("Membership", (cls,), {"healing": replace(base, **overrides),
                                           "__module__": cls.__module__})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.node_name: str = self.cell_host.name
        self.view: dict[str, Member] = {}
        self.config = self._read_config()
        config = self.config
        self.damper = FlapDamper(config.hold_base, config.hold_cap, config.flap_memory)
        self.reconciler = Reconciler(self.node_name, self.config.claim_window_s,
                                     claim_ttl=5 * self.config.claim_window_s + 1.0)
        self.seq = 0
        self.node_role: str | None = None
        self.role_since = self.membership_wall()
        self.started = self.membership_clock()
        self.last_heartbeat = -math.inf
        self._returned: list[tuple[str, int, float]] = []
        self._returned_lock = threading.Lock()
        self._brokers = BrokerCheck()
        self._intent: IntentWatcher | None = None
        self._intent_failed = False
        self.last_tick: float | None = None
        self._pause_seen_at: float | None = None  # the last_tick whose gap was noticed
        self._blind_since: float | None = None
        # Blind, or on the smaller side of a split, since this node last reconciled: its role
        # may have been refilled meanwhile (see _keep_majority).
        self._cut_off = False
        self._rejoined_at = -math.inf
        self._fence: PauseFence | None = self.cell_host.guard_pauses(self.config.fence_gap_s)
        self._fence_seen = 0  # the fence generation membership has answered
        self._fence_tripped_at: float | None = None  # while the fence waits to be cleared
        # The watch ring (config.watchers > 0): the members whose heartbeats this node binds.
        self._watching: set[str] = set()
        self._watching_in_order: list[str] = []  # sorted once per change, read on every tick
        # The members this node watched until it found them down: their heartbeats stay bound
        # (a dead node's cost nothing), so one that was only cut off is answered with the
        # down notice when it is heard again (_remind_down), refutes, and is seen again by
        # all. Without it the two sides of a healed partition never met again in the ring
        # (60 nodes, k=3: every cross-side entry still down 20 s after the heal).
        self._kept_bound: set[str] = set()
        self._ring_dirty = True
        # The live members' ring, kept by the names whose entry or status changed since it
        # was last brought up to date (on a dirty tick, see _live_ring); None: build afresh.
        self._ring: LiveRing | None = None
        self._ring_moved: set[str] = set()
        self._announced = False
        self._news: list[tuple[str, list[Any], int]] = []  # (key, broadcast, copies left)
        self.heard_counts = {"heartbeat": 0, "announce": 0, "other": 0}
        self.capacity = CapacityPlanner()
        self._capacity_rows: dict[str, dict[str, Any]] = {}
        self._scale_error = ""

    def cell_bindings(self, node: str, role: str | None) -> list[str]:
        patterns = super().cell_bindings(node, role)
        if self.config.watchers > 0:  # only the watched members' heartbeats (see _rewatch)
            patterns = [p for p in patterns if p != "heartbeat.*"]
        return patterns

    # -- configuration ------------------------------------------------------------------------

    def membership_clock(self) -> float:
        """Local monotonic time, the only clock membership judges by (``cellframe.simulation``
        overrides it with its virtual clock)."""
        return time.monotonic()

    def membership_wall(self) -> float:
        """Wall time, for ``role-since`` (comparable across nodes)."""
        return time.time()

    def _read_config(self) -> HealingConfig:
        if self.healing is not None:
            return self.healing
        layers: list[Mapping[str, str]] = []
        resolver = self.cell_host.resolver
        if resolver is not None:
            try:
                layers.append(resolver.cluster_intent().settings)
            except CellframeError as error:
                log.warning("%s: no cluster settings (%s); default timing", self.cell_name, error)
        layers.append(self.cell_settings)
        try:
            return HealingConfig.from_settings(*layers)
        except ConfigError as error:
            log.warning("%s: %s; default timing", self.cell_name, error)
            return HealingConfig()

    def cell_tick_interval(self) -> float | None:
        return self.config.heartbeat_interval

    def on_stop(self) -> None:
        """Say goodbye (a clean stop); a killed node cannot, and must not be able to."""
        self._publish(leave_key(self.node_name), [
            Symbol("member-leave"), Keyword("node"), self.node_name,
            Keyword("incarnation"), self.incarnation])
        if self._intent is not None:
            self._intent.stop(timeout=1.0)

    # -- heartbeats ---------------------------------------------------------------------------

    # Stacked: the inner (joining -> running once warm) is tried first.
    @transition("tick")
    @transition("tick", source="joining", target="running", guard="_warm")
    def tick(self) -> None:
        now = self.membership_clock()
        self._sync_role()
        if not self._sighted(now):
            return
        self._heartbeat(now)
        if self.config.watchers > 0:
            self._repeat_news()  # first: news made on this tick is repeated on the next
            if not self._announced:
                self._announced = True
                self._announce(hello=True)
            self._rewatch(now)
        self._drain_returns()
        for member in self._judged():
            if member.name != self.node_name:
                self._judge(member, now)
        fresh = not self._doubting()
        if fresh and self.cell_state == "running" and self.config.reconcile:
            if self._keep_majority(now):
                self._reconcile(now)
        if fresh:
            self._clear_fence(now)

    # -- keep-majority (docs/healing.md, "Partitions") -------------------------------------

    def _keep_majority(self, now: float) -> bool:
        """May this node reconcile now? Not on the smaller side of a split. A node back from
        it (or from a blind spell) first takes a new role-since, so that where its role was
        refilled by the majority it is the newest holder and steps down, and then waits for
        the views to settle (a claim window and three heartbeats) before it claims anything."""
        live, unreachable = self._sides(now)
        counts = {"live": len(live) + 1, "of": len(live) + len(unreachable) + 1}
        if not holds_majority(self.node_name, live, unreachable):
            if not self._cut_off:
                self._emit("outvoted", **counts)
            self._cut_off = True
            return False
        if self._cut_off:
            self._cut_off = False
            self._rejoined_at = now
            self.role_since = self.membership_wall()
            self._emit("rejoined", **counts)
            if self.config.watchers > 0:
                self._announce()
        settle = self.config.claim_window_s + 3 * self.config.heartbeat_interval
        return now - self._rejoined_at >= settle

    def _sides(self, now: float) -> tuple[list[str], list[str]]:
        """(the live members, those that may be on another side: found down by silence alone
        in the last ``majority_memory``). A member whose queue the broker deleted is on no
        side: it is dead or blind, and with two nodes one crash would otherwise leave the
        survivor outvoted (the tutorial's failover)."""
        live: list[str] = []
        unreachable: list[str] = []
        memory = self.config.majority_memory
        for member in self.view.values():
            if member.status in (*_LIVE, HELD):
                live.append(member.name)
            elif (member.status == DOWN and not member.queue_gone
                  and now - member.changed_at <= memory):
                unreachable.append(member.name)
        return live, unreachable

    # -- the watch ring (config.watchers > 0; see cellframe.healing.watchring) ---------------

    def _rewatch(self, now: float) -> None:
        """Bind the heartbeats of the members this node now watches, and unbind the rest."""
        if not self._ring_dirty:
            return
        self._ring_dirty = False
        wanted = set(self._live_ring().watched_by(self.node_name, self.config.watchers))
        for name in sorted(wanted - self._watching):
            member = self._own(self.view[name])
            member.detector = self._detector()
            member.detector.heartbeat(now)  # its silence counts from now: a dead one is found
            member.doubted_until = None
            self.cell_host.cell_bind(self.cell_name, heartbeat_key(name))
        self._release(wanted)
        self._watching = wanted
        self._watching_in_order = sorted(wanted)

    def _live_ring(self) -> LiveRing:
        """The ring of the members now alive, suspect or held: the view's, brought up to
        date by the members that changed since (the same ring as a pass over the view)."""
        ring = self._ring
        if ring is None:
            ring = self._ring = LiveRing(m.name for m in self.view.values()
                                         if m.status in (*_LIVE, HELD))
        else:
            for name in self._ring_moved:
                member = self.view.get(name)
                if member is not None and member.status in (*_LIVE, HELD):
                    ring.add(name)
                else:
                    ring.discard(name)
        self._ring_moved.clear()
        return ring

    def _release(self, wanted: set[str]) -> None:
        """Unbind the heartbeats of members no longer watched, but a down one's (see
        ``_kept_bound``) until it comes back in a new life."""
        for name in sorted(self._watching - wanted):
            left = self.view.get(name)
            if left is not None and left.detector is not None:
                self._own(left).detector = None  # not judged here any more
            if left is not None and left.status == DOWN:
                self._kept_bound.add(name)
            else:
                self.cell_host.cell_unbind(self.cell_name, heartbeat_key(name))
        for name in sorted(self._kept_bound - wanted - self._watching):
            kept = self.view.get(name)
            if kept is None or kept.status != DOWN:  # back in a new life: the ring decides
                self._kept_bound.discard(name)
                self.cell_host.cell_unbind(self.cell_name, heartbeat_key(name))
        self._kept_bound -= wanted

    def membership_known(self) -> None:
        """Take this node as announced already: every peer knows it (a simulation that starts
        from a converged view), so its first tick sends no hello for every node to answer,
        the cold start's n**2 deliveries (2 * 10**6 at 1,000 nodes)."""
        self._announced = True

    def membership_adopt(self, shared: Mapping[str, Member]) -> None:
        """Start from ``shared`` as the view (this node's own entry left out), its entries the
        same objects in the views of other nodes: a simulation's converged start, where most
        entries are the same on every node. At 10,000 nodes a view of its own per node was
        10**8 entries, about 19 GB (docs/scale.md). Each entry is marked shared, and this
        node copies it into its own view before any change (``_own``)."""
        for member in shared.values():
            if member.detector is not None:  # a detector is one node's readings: never shared
                raise ValueError(f"{member.name}: an entry with a detector cannot be shared")
            member.shared = True
        view = dict(shared)  # a copy of the table, not n inserts: 0.1 ms at 10,000 entries
        view.pop(self.node_name, None)
        self.view = view
        self._ring_dirty = True
        self._ring = None

    def _own(self, member: Member) -> Member:
        """``member`` as this node's own entry, to change: a shared entry (see
        ``membership_adopt``) is first replaced in the view by a copy of this node's, so no
        other node sees the change. In production every entry is the node's own already."""
        if not member.shared:
            return member
        mine = replace(member, shared=False)
        if self.view.get(member.name) is member:  # else a stale entry: the copy stays apart
            self.view[member.name] = mine
        return mine

    def _broadcast(self, key: str, expr: list[Any], again: list[Any] | None = None, *,
                   senders: int = 1) -> None:
        """Publish membership news to every node now, and ``again`` (default: the same) on
        the next ticks (see ``HealingConfig.repeat_factor``): in the ring nothing else
        repeats it, and at 1 % loss one node in a hundred missed each announce. News that
        ``senders`` nodes send each (a down, by each of the member's watchers) is repeated
        by each a share of the times: 6 copies of a down at 100 nodes and k = 3, not 9."""
        self._publish(key, expr)
        copies = 0
        if self.config.watchers > 0:
            wanted = self.config.repeat_factor * math.log10(max(10, len(self.view)))
            copies = math.ceil(wanted / max(1, senders))
        if copies > 0:
            self._news = [item for item in self._news if item[0] != key]  # superseded
            self._news.append((key, expr if again is None else again, copies))

    def _repeat_news(self) -> None:
        """Send each piece of news still due once more (one copy per tick: spread in time)."""
        news, self._news = self._news, []
        for key, expr, copies in news:
            self._publish(key, expr)
            if copies > 1:
                self._news.append((key, expr, copies - 1))

    def _watched(self, name: str) -> bool:
        return self.config.watchers <= 0 or name in self._watching

    def _announce(self, *, hello: bool = False, to: str | None = None) -> None:
        """Tell every node (or ``to``) this node's life and role: in the watch ring this is
        how nodes that do not watch it learn of it, once per change. ``hello`` asks every
        node to answer with its own announce (a joiner learning the view)."""
        news = [Symbol("announce"), Keyword("node"), self.node_name, Keyword("role"),
                self.node_role, Keyword("incarnation"), self.incarnation,
                Keyword("role-since"), self.role_since,
                Keyword("interval"), self.config.heartbeat_interval, Keyword("hello"), hello]
        if to is not None:
            self._publish(to, news)
        else:  # repeated without the hello: answered once is enough
            self._broadcast(announce_key(self.node_name), news, [*news[:-1], False])

    @transition("announce")
    def heard_announce(self, node: str, role: str | None = None, incarnation: int = 0,
                       role_since: float = 0.0, interval: float | None = None,
                       hello: bool = False, **extra: Any) -> None:
        self.heard_counts["announce"] += 1
        if not isinstance(node, str) or node == self.node_name or not isinstance(incarnation, int):
            return
        now = self.membership_clock()
        member = self.view.get(node)
        if member is None or incarnation > member.incarnation:
            member = self._new_life(node, role, incarnation, interval, now, member)
            member.last_seen = now
            self._ring_dirty = True
        elif incarnation < member.incarnation or member.status in (DOWN, LEFT):
            return
        self._learn_role(member, role, role_since)
        if hello is True and self.config.watchers > 0:
            self._announce(to=cell_key(f"{node}-membership"))

    def _doubting(self) -> bool:
        return any(m.doubted_until is not None for m in self._judged())

    def _judged(self) -> list[Member]:
        """The members this node judges: all it knows, or in the watch ring those it watches
        (a tick then costs O(k), not O(n): at 1,000 simulated nodes the whole-view loop was
        most of the time)."""
        if self.config.watchers <= 0:
            return list(self.view.values())
        # Sorted: a set of names iterates in an order that changes with the hash seed, and a
        # simulated run with two verdicts in one tick then differed from process to process.
        view = self.view
        return [view[name] for name in self._watching_in_order if name in view]

    def _clear_fence(self, now: float) -> None:
        """After a pause the role cells serve again once this node heard every peer, waited
        out any claim in flight, and its role is not over-filled (if it was the newest holder
        it has stepped down by now, and its held deliveries go back)."""
        if self._fence_tripped_at is None:
            return
        settle = self.config.claim_window_s + 3 * self.config.heartbeat_interval
        if now - self._fence_tripped_at < settle or self._role_overfilled():
            return
        self._fence_tripped_at = None
        self.cell_host.clear_fence(self._fence_seen)

    def _role_overfilled(self) -> bool:
        intent = self._current_intent()
        if intent is None or self.node_role is None or self.node_role not in intent.roles:
            return False
        holders = 1 + sum(1 for m in self.view.values()
                          if m.status in _LIVE and m.role == self.node_role)
        return holders > intent.roles[self.node_role]

    def _warm(self) -> bool:
        return self.membership_clock() - self.started >= self.config.reconcile_period_s

    def _heartbeat(self, now: float) -> None:
        self.seq += 1
        self.last_heartbeat = now
        heartbeat, node, role, incarnation, seq, role_since, interval = _HEARTBEAT_WORDS
        self._publish(heartbeat_key(self.node_name), [
            heartbeat, node, self.node_name, role, self.node_role, incarnation, self.incarnation,
            seq, self.seq, role_since, self.role_since, interval, self.config.heartbeat_interval,
            *self._load_fields(), *self._broker_fields()], on_return=_unheard)

    def _broker_fields(self) -> list[Any]:
        address = self.cell_host.broker_address
        return [] if address is None else [Keyword("broker"), address]

    def _load_fields(self) -> list[Any]:
        load = self.cell_host.load()
        return [] if load is None else [Keyword("load"), load]

    @transition("heartbeat")
    def heard_heartbeat(self, node: str, role: str | None = None, incarnation: int = 0,
                        seq: int = 0, role_since: float = 0.0, interval: float | None = None,
                        load: Any = None, broker: Any = None, **extra: Any) -> None:
        if not isinstance(node, str) or node == self.node_name or not isinstance(incarnation, int):
            return
        now = self.membership_clock()
        self.heard_counts["heartbeat"] += 1
        self._notice_pause(now)
        member = self.view.get(node)
        if member is None or incarnation > member.incarnation:
            member = self._new_life(node, role, incarnation, interval, now, member)
            self._ring_dirty = True
        elif incarnation < member.incarnation or member.status in (DOWN, LEFT):
            if incarnation == member.incarnation and member.status == DOWN:
                self._remind_down(member, now)
            return  # news from an older life, or from a life already declared over
        if isinstance(seq, int) and seq <= member.seq:
            return  # duplicate or reordered: arrival times only from fresh heartbeats
        member = self._own(member)
        member.seq = seq if isinstance(seq, int) else member.seq + 1
        member.last_seen = now
        member.doubted_until = None
        member.gone_since = None
        member.load = float(load) if isinstance(load, int | float) and not isinstance(load, bool) else None
        member.broker = broker if isinstance(broker, str) else None
        if member.detector is None:  # in flight when we stopped watching it, or a new life
            member.detector = self._detector(interval)
        member.detector.heartbeat(now)
        self._learn_role(member, role, role_since)
        if member.status == SUSPECT:
            self._set_status(member, ALIVE, now)

    def _new_life(self, node: str, role: Any, incarnation: int, interval: Any, now: float,
                  previous: Member | None) -> Member:
        judged = self.config.watchers <= 0 or node in self._watching
        member = Member(node, None, incarnation, changed_at=now,
                        detector=self._detector(interval) if judged else None)
        self.view[node] = member
        self._ring_moved.add(node)
        rejoined = previous is not None and previous.status in (DOWN, LEFT, HELD)
        if self.damper.held(node, now):
            member.status = HELD
            until = self.damper.held_until(node) or now
            self._emit("held", member=node, incarnation=incarnation, seconds=round(until - now, 3))
        else:
            self._emit("up", member=node, role=role if isinstance(role, str) else None,
                       incarnation=incarnation, rejoined=rejoined)
        return member

    def _detector(self, interval: Any = None) -> PhiAccrual:
        """A fresh detector, expecting ``interval`` (the member's own, if it said one)."""
        expected = interval if isinstance(interval, int | float) and interval > 0 else None
        config = self.config
        return PhiAccrual(expected or config.heartbeat_interval, config.min_std_s,
                          config.acceptable_pause, config.window)

    def _learn_role(self, member: Member, role: Any, role_since: Any) -> None:
        role = role if isinstance(role, str) else None
        since = float(role_since) if isinstance(role_since, int | float) else member.role_since
        if (role, since) == (member.role, member.role_since):
            return  # what we knew: a shared entry stays shared
        member = self._own(member)
        member.role_since = since
        if role != member.role:
            member.role = role
            if role is not None:
                self.reconciler.forget(member.name)

    # -- healing ------------------------------------------------------------------------------

    @transition("claim")
    def heard_claim(self, node: str, role: str, incarnation: int = 0, **extra: Any) -> None:
        if not isinstance(node, str) or not isinstance(role, str) or node == self.node_name:
            return
        member = self.view.get(node)
        if member is not None and (member.status in (DOWN, LEFT) or member.role is not None):
            return  # a claim from a node already gone, or already playing a role: stale
        self.reconciler.hear_claim(Claim(node, role, incarnation, self.membership_clock()))

    @transition("claim-withdrawn")
    def heard_withdrawal(self, node: str, role: str | None = None, failed: Any = False,
                         **extra: Any) -> None:
        if isinstance(node, str):
            self.reconciler.forget(node, role)
            if failed is True and isinstance(role, str):  # it cannot play the role: skip it
                self.reconciler.cannot_play(node, role, self.membership_clock() + self.failed_role_hold)

    def _reconcile(self, now: float) -> None:
        intent = self._current_intent()
        if intent is None:
            return
        registry = self.cell_host.registry
        roles = {role: count for role, count in intent.roles.items()
                 if registry is None or role in registry}
        live = [LiveMember(m.name, m.role, m.role_since, m.load)
                for m in self.view.values() if m.status in _LIVE and m.name != self.node_name]
        live.append(LiveMember(self.node_name, self.node_role, self.role_since,
                               self.cell_host.load()))
        if intent.ranges:
            roles = self._plan_capacity(now, intent, roles, live)
        decision = self.reconciler.tick(now, roles, live)
        if decision.withdraw:
            self._publish(claim_key(self.node_name), [
                Symbol("claim-withdrawn"), Keyword("node"), self.node_name,
                Keyword("role"), decision.withdraw])
            self._emit("stood-down", role=decision.withdraw, reason=decision.reason)
        if decision.send_claim:
            self._publish(claim_key(self.node_name), [
                Symbol("claim"), Keyword("node"), self.node_name, Keyword("role"),
                decision.send_claim, Keyword("incarnation"), self.incarnation])
            self._emit("claimed", role=decision.send_claim)
        if decision.differentiate:
            self._become(decision.differentiate, "ready")
        elif decision.step_down:
            self._become(None, "stepped-down")

    def _become(self, role: str | None, event: str) -> None:
        previous = self.node_role
        try:
            self.cell_host.differentiate(role)
        except CellframeError as error:
            log_failure(log, error, "%s: could not become %s", self.cell_name, role or "a spare",
                        level=logging.WARNING)
            if role is not None:
                self._claim_failed(role, error)
            return
        self._sync_role()
        self._emit(event, role=role, previous=previous)
        self._heartbeat(self.membership_clock())
        if self.config.watchers > 0:
            self._announce()

    def _plan_capacity(self, now: float, intent: ClusterIntent, roles: dict[str, int],
                       live: list[LiveMember]) -> dict[str, int]:
        """Move the counts of ranged roles (``web=3..6``) with load; each move is an event."""
        try:
            settings = ScaleSettings.from_settings(intent.settings)
        except ConfigError as error:
            if str(error) != self._scale_error:  # once per distinct mistake, not every tick
                log.warning("%s: %s; default scaling", self.cell_name, error)
            self._scale_error = str(error)
            settings = ScaleSettings()
        self.capacity.settings = settings
        wanted, moves = self.capacity.plan(now, roles, intent.ranges, live)
        for move in moves:
            self._emit("scale-out" if move.after > move.before else "scale-in", role=move.role,
                       before=move.before, after=move.after, load=round(move.load, 3),
                       reason=move.reason)
        self._capacity_rows = {
            role: {"held": sum(1 for m in live if m.role == role), "want": wanted[role],
                   "min": low, "max": high, "load": self.capacity.loads.get(role)}
            for role, (low, high) in intent.ranges.items() if role in wanted}
        return wanted

    def _claim_failed(self, role: str, error: CellframeError) -> None:
        """This node cannot play ``role`` (its cells failed to start): say so, give the slot
        back so that another spare claims it, and claim other roles only for a while."""
        self.reconciler.cannot_play(self.node_name, role, self.membership_clock() + self.failed_role_hold)
        self._publish(claim_key(self.node_name), [
            Symbol("claim-withdrawn"), Keyword("node"), self.node_name, Keyword("role"), role,
            Keyword("failed"), True])
        self._emit("claim-failed", role=role, error=str(error))

    def _current_intent(self) -> ClusterIntent | None:
        resolver = self.cell_host.resolver
        if resolver is None:
            return None
        if self._intent is None:
            # Its own thread: a DNS server that does not answer must never delay heartbeats
            # (reading on the tick once made a node flap every few seconds while DNS was down).
            self._intent = IntentWatcher(resolver, lambda old, new: None, min_interval=1.0)
            self._intent.start()
        return self._intent.current

    def _sync_role(self) -> None:
        role = self.cell_host.role
        if role is None and self.cell_host.quarantined:
            # Announced as no spare while it may not take back the role it gave up, so that
            # every view (this one too) gives the role to another spare.
            role = QUARANTINED
        if role != self.node_role:
            self.node_role, self.role_since = role, self.membership_wall()
            if self.config.watchers > 0 and self._announced:
                self._announce()

    # -- queries ------------------------------------------------------------------------------

    @transition("members")
    def members(self) -> None:
        """Reply ``(members :node N :view '((name role status incarnation) ...))``."""
        rows = [[m["name"], m["role"], m["status"], m["incarnation"]] for m in self.cell_view()]
        self.cell_reply([Symbol("members"), Keyword("node"), self.node_name,
                         Keyword("view"), [Symbol("quote"), rows]])

    def cell_view(self) -> list[dict[str, Any]]:
        """The view as plain dicts (safe to call from any thread), this node included."""
        now = self.membership_clock()
        others = self._members()
        me = {"name": self.node_name, "role": self.node_role, "status": ALIVE,
              "incarnation": self.incarnation, "seq": self.seq, "role_since": self.role_since,
              "silence": 0.0, "phi": 0.0}
        return sorted([me, *(m.public(now) for m in others if m.name != self.node_name)],
                      key=lambda m: m["name"])

    def others_in_role(self, role: str) -> list[str]:
        """The other members playing ``role`` that are neither down nor left, by name (safe
        to call from any thread). Cheap, unlike ``cell_view``: no phi is computed, so a node
        may ask it for every message (``cellframe.node.replays``)."""
        me = self.node_name
        return sorted(m.name for m in self._members()
                      if m.role == role and m.status not in (DOWN, LEFT) and m.name != me)

    def members_in_role(self, role: str) -> list[str]:
        """Every member the view holds to play ``role``, down and left ones too, by name (safe
        to call from any thread): the nodes whose replay news is taken
        (``cellframe.node.replays``; a node's last news may come after its leave)."""
        return [m.name for m in self._members() if m.role == role]

    def _members(self) -> list[Member]:
        """The members of the view, read from any thread."""
        while True:
            try:
                return list(self.view.values())
            except RuntimeError:  # resized by the cell's thread meanwhile: read again
                continue

    def cell_snapshot(self) -> dict[str, Any]:
        snapshot = super().cell_snapshot()
        snapshot["members"] = self.cell_view()
        snapshot["heard"] = dict(self.heard_counts)
        # The clock the counts were read at: two snapshots give a rate without the skew of
        # when each reply travelled (issue 16 compares the rate per node at 10 and 30 nodes).
        snapshot["heard_at"] = round(self.membership_clock(), 4)
        snapshot["watching"] = sorted(self._watching)
        snapshot["healing"] = {f.name: getattr(self.config, f.name) for f in fields(self.config)}
        intent = self._intent.current if self._intent is not None else None
        if intent is not None:  # what the reconciler counts, for `cellframe status`
            registry = self.cell_host.registry
            snapshot["intent"] = {role: count for role, count in intent.roles.items()
                                  if registry is None or role in registry}
        if self._capacity_rows:  # roles with a range: held against wanted, min..max, load
            snapshot["capacity"] = dict(self._capacity_rows)
        return snapshot

    # -- sending ------------------------------------------------------------------------------

    def _publish(self, key: str, expr: list[Any], *,
                 on_return: Callable[[Envelope, str], None] | None = None) -> None:
        try:
            self.cell_send(key, expr, on_return=on_return)
        except CellframeError as error:  # a closed transport (a killed node) sends nothing
            log.debug("%s: not sent to %s: %s", self.cell_name, key, error)

    def _emit(self, kind: str, **fields_: Any) -> None:
        self.cell_host.emit(kind, **fields_)
