"""A deterministic simulation of membership: the real ``Membership`` class, thousands of nodes
in one process, on a virtual clock and a virtual broker driven by one seeded scheduler.

Each simulated node is a ``Membership`` cell (the production class, with its clock replaced by
the scheduler's) hosted by a ``SimHost``; no actor thread is started: the scheduler hands each
cell its ticks and deliveries by calling ``on_receive`` itself, one at a time. The virtual
broker routes by the same keys the real one does (exact keys, ``membership.#`` to everyone,
and ``heartbeat.*`` when there is no watch ring), drops a message with probability ``loss``,
delays each by a uniform random latency (so reorders them), and returns a publish that no
queue binds (a probe to a crashed node). Faults: ``crash`` (the node's queue goes, as on
SIGKILL), ``pause`` (SIGSTOP: no ticks, deliveries parked until it resumes), ``partition``
(the nodes split into sides: every message between two sides is dropped, probes included, as
by a cut link that returns nothing; ``heal`` joins them again).

``converged=True`` (what ``simulate`` and ``cellframe simulate`` use) starts every node with
the view a cold start ends in, through the real ``heard_announce``, and no hello: a cold
start is n**2 deliveries through the evaluator (2 * 10**6 at 1,000 nodes, more than 400 s of
CPU), the steady state about 40 per node-second. With the watch ring the nodes share those
view entries until one changes its copy (``share_views``; ``Membership.membership_adopt``):
n**2 entries of their own were 19 GB at 10,000 nodes. Figures and profile: docs/scale.md.

The reconciler runs when an ``intent`` (role -> count) is given: every node reads it in
process, as ``resolver.cluster_intent()`` would from DNS; the first nodes start holding it,
and ``roles`` (``RoleLedger``) records who holds what, when. What it does not run (yet): the
fence of a paused node's role cells (there are none).

The same seed gives the same run: every random choice comes from one ``random.Random(seed)``
and events are ordered by (virtual time, sequence number).
"""

from __future__ import annotations

import collections
import functools
import heapq
import itertools
import math
import random
import statistics
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..cell.fence import PauseFence
from ..config.txtconfig import ClusterIntent
from ..errors import ConfigError
from ..healing.membership import DOWN, HealingConfig, Membership
from ..language.symbols import Symbol
from ..wire.envelope import Envelope, Message
from .roles import RoleLedger

__all__ = ["PartitionFault", "SimHost", "Simulation", "SimulationReport", "simulate"]

_TICK = [Symbol("tick")]


class _Scheduler:
    """Virtual time and the queue of what happens next."""

    def __init__(self, seed: int) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        # (time, sequence, action, its arguments): a heap, so each event costs O(log events);
        # the arguments ride along instead of a closure per delivery (one allocation less).
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), action, ()))

    def after(self, when: float, action: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), action, args))

    def run_until(self, until: float) -> None:
        queue, pop = self._queue, heapq.heappop
        while queue and queue[0][0] <= until:
            when, _, action, args = pop(queue)
            self.now = when
            action(*args)
        self.now = until


class SimHost:
    """The ``CellHost`` of one simulated node: sends through the virtual broker."""

    def __init__(self, sim: Simulation, name: str) -> None:
        self.sim, self.name = sim, name
        self.incarnation = 1
        self.role: str | None = None
        self.resolver = None
        self.registry = None
        self.broker_connected = True
        self.broker_address: str | None = None  # one virtual broker: never a node of it lost

    def send(self, target: str, expr: Any, *, reply_to: str | None = None,
             sender: str | None = None,
             on_return: Callable[[Envelope, str], None] | None = None,
             **options: Any) -> None:
        self.sim.publish(self.name, target, expr, on_return)

    def dead_letter(self, message: Message, reason: str) -> None:
        """Nothing to keep: the simulation counts, it does not store."""

    def cells(self) -> Mapping[str, Any]:
        return {}

    def status(self) -> dict[str, Any]:
        return {"node": self.name, "role": None, "counters": {}, "cells": []}

    def emit(self, kind: str, **fields_: Any) -> None:
        self.sim.record(self.name, kind, fields_)

    def differentiate(self, role: str | None) -> bool:
        self.sim.roles.move(self.sim.scheduler.now, self.name, self.role, role)
        self.role = role
        return True

    def renew_incarnation(self, above: int) -> int:
        self.incarnation = max(self.incarnation, above) + 1
        return self.incarnation

    def attach_cell(self, cell: Any) -> None:
        """The simulation holds its cells itself."""

    @property
    def quarantined(self) -> bool:
        return False

    def load(self) -> float | None:
        return None

    def monitor(self, watcher: str, watched: str, node: str | None = None) -> None:
        """No other cells to watch."""

    def monitor_node(self, watcher: str, node: str) -> None:
        """The simulation tells no cell of nodes going down."""

    def demonitor(self, watcher: str, watched: str, node: str | None = None) -> None:
        """Nothing was watched."""

    def demonitor_node(self, watcher: str, node: str) -> None:
        """Nothing was watched."""

    def cell_crashed(self, cell: Any, message: Message | None, error: BaseException | None) -> None:
        raise RuntimeError(f"{cell.cell_name} crashed in the simulation") from error

    def cell_stopped(self, cell: Any, orphans: list[Any]) -> None:
        """Nothing to give back: the simulation's messages are not deliveries."""

    def guard_pauses(self, gap: float) -> PauseFence | None:
        return None  # no role cells to fence

    def clear_fence(self, generation: int) -> None:
        """No fence."""

    def cell_bind(self, cell: str, pattern: str) -> None:
        self.sim.bind(self.name, pattern)

    def cell_unbind(self, cell: str, pattern: str) -> None:
        self.sim.unbind(self.name, pattern)


@dataclass
class _Node:
    name: str
    host: SimHost
    cell: Membership
    crashed: bool = False
    paused_until: float | None = None
    parked: list[Message] = field(default_factory=list)
    received: int = 0


@dataclass
class SimulationReport:
    """What a run measured (times are virtual seconds)."""

    nodes: int
    seconds: float
    seed: int
    loss: float
    watchers: int
    detection: dict[str, float]  # crash -> down on every live node: median, p99, worst
    #: The news of a crash, from the first node's down verdict to the last live node that
    #: heard it (the time for a change to reach every node): median, p99, worst.
    spread: dict[str, float]
    undetected: int  # crashes some live node never saw down (or never knew of)
    false_downs: int  # 'down' verdicts about nodes that were neither crashed nor paused
    messages_per_node_s: float  # membership deliveries received, per node-second alive
    cpu_seconds: float  # CPU seconds of the whole run, the start included
    wall_seconds: float  # real seconds of the whole run, the start included
    node_seconds_per_cpu_second: float  # simulated node-seconds per CPU second, after the start
    node_seconds_per_wall_second: float  # the same per real second: lower on a busy machine
    start_seconds: float = 0.0  # CPU seconds to build the nodes (and converge their views)
    partition: dict[str, Any] = field(default_factory=dict)  # the split, if one ran

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _quantiles(values: list[float]) -> dict[str, float]:
    """Median, p99 and worst of ``values`` (rounded to the ms; -1.0 each when there are none)."""
    ordered = sorted(values)
    if not ordered:
        return {"median": -1.0, "p99": -1.0, "worst": -1.0}
    return {"median": round(statistics.median(ordered), 3),
            "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
            "worst": round(ordered[-1], 3)}


class Simulation:
    """``n`` nodes named ``node-00000`` ... running the real Membership on a virtual clock."""

    def __init__(self, n: int, *, seed: int = 0, loss: float = 0.0, watchers: int = 3,
                 latency: tuple[float, float] = (0.0005, 0.005),
                 healing: HealingConfig | None = None, converged: bool = False,
                 intent: Mapping[str, int] | None = None, share_views: bool = True) -> None:
        self.scheduler = _Scheduler(seed)
        self.loss, self.latency, self.seed = loss, latency, seed
        config = replace(healing or HealingConfig(), watchers=watchers,
                         reconcile=intent is not None)
        self.config = config
        # The DNS intent, handed to every node in-process; the first nodes start holding it.
        self.intent = ClusterIntent(roles=dict(intent)) if intent is not None else None
        self.roles = RoleLedger(dict(intent or {}))
        starting = [role for role, count in (intent or {}).items() for _ in range(count)]
        self.membership = self._membership_class(config)
        self.exact: dict[str, set[str]] = {}
        self.everyone: set[str] = set()  # nodes bound to membership.# (and heartbeat.* if k=0)
        self._everyone_sorted: tuple[str, ...] | None = None  # sorted once per change
        self.nodes: dict[str, _Node] = {}
        self.events: list[tuple[float, str, str, dict[str, Any]]] = []
        self.crashes: dict[str, float] = {}
        self.paused: set[str] = set()
        self.side: dict[str, int] = {}  # node -> its side while partitioned; empty when whole
        self.partitions: list[tuple[float, float | None]] = []  # (split at, healed at)
        self.last_split: dict[str, int] = {}  # the sides of the last partition, kept after heal
        self._ids = itertools.count()
        for index in range(n):
            self._add(f"node-{index:05d}", starting[index] if index < len(starting) else None)
        if converged:
            self._converge(share=share_views and watchers > 0 and n > 1)

    def _membership_class(self, config: HealingConfig) -> type[Membership]:
        scheduler, sim = self.scheduler, self
        base = Membership.configured(config)

        class SimMembership(base):  # type: ignore[valid-type, misc]
            def _current_intent(self) -> ClusterIntent | None:
                return sim.intent  # no DNS server: the intent as a resolver would read it

            def membership_clock(self) -> float:
                return scheduler.now

            def membership_wall(self) -> float:
                return 1_700_000_000.0 + scheduler.now

        SimMembership.__name__ = "Membership"
        return SimMembership

    def _add(self, name: str, role: str | None = None) -> None:
        host = SimHost(self, name)
        host.differentiate(role)
        cell = self.membership(f"{name}-membership", host=host, dedup_capacity=64)
        cell.node_role = role
        node = _Node(name, host, cell)
        self.nodes[name] = node
        for pattern in cell.cell_bindings(name, None):
            self.bind(name, pattern)
        self.bind(name, f"cell.{name}-membership")
        phase = self.scheduler.rng.random() * self.config.heartbeat_interval
        self.scheduler.at(phase, lambda: self._tick(node))

    def _converge(self, *, share: bool) -> None:
        """Start from the view a cold start ends in: each node has heard every other's
        announce (the real ``heard_announce``, called without the wire) and sends no hello.
        A cold start costs n**2 deliveries through the evaluator (at 1,000 nodes more than
        400 s of CPU, docs/scale.md). With ``share`` (the watch ring: no detector in an
        entry until its node watches it) two nodes hear every announce and every node adopts
        their entries, shared until it changes one (``Membership.membership_adopt``): n
        calls and n copies of one table, where n**2 entries were 1.7 GB at 3,000 nodes."""
        names = sorted(self.nodes)
        interval = self.config.heartbeat_interval
        roles = {name: (self.nodes[name].host.role, self.nodes[name].cell.role_since)
                 for name in names}
        learners = [self.nodes[name] for name in names[:2]] if share else list(self.nodes.values())
        for node in learners:
            learn = node.cell.heard_announce
            for name in names:
                if name != node.name:
                    learn(name, roles[name][0], 1, roles[name][1], interval)
            node.cell.membership_known()
        if not share:
            return
        first, second = learners[0].cell.view, learners[1].cell.view
        shared = {name: first[name] if name in first else second[name] for name in names}
        for node in self.nodes.values():  # the two learners too: their entries are shared
            node.cell.membership_adopt(shared)
            node.cell.membership_known()

    # -- the virtual broker ---------------------------------------------------------------------

    def bind(self, name: str, pattern: str) -> None:
        if pattern in ("membership.#", "heartbeat.*"):
            self.everyone.add(name)
            self._everyone_sorted = None
        else:
            self.exact.setdefault(pattern, set()).add(name)

    def unbind(self, name: str, pattern: str) -> None:
        self.exact.get(pattern, set()).discard(name)

    def _route(self, key: str) -> tuple[str, ...]:
        """The bound nodes, sorted: set order must not decide a seeded run."""
        if key.startswith("membership.") or (key.startswith("heartbeat.")
                                             and self.config.watchers <= 0):
            if self._everyone_sorted is None:  # a broadcast sorted n names each time before
                self._everyone_sorted = tuple(sorted(self.everyone))
            return self._everyone_sorted
        bound = self.exact.get(key)
        return tuple(sorted(bound)) if bound else ()

    def publish(self, sender: str, key: str, expr: Any,
                on_return: Callable[[Envelope, str], None] | None) -> None:
        if key.startswith("event."):
            return
        scheduler, rng = self.scheduler, self.scheduler.rng
        targets = self._route(key)
        if not targets or (len(targets) == 1 and targets[0] == sender
                           and not key.startswith("cell.")):
            if on_return is not None:
                when = scheduler.now + rng.uniform(*self.latency)
                scheduler.at(when, lambda: on_return(Envelope(b""), "no route"))
            return
        # One frozen Message for every copy: a cell never changes what it is handed.
        message = Message(expr, id=f"{sender}-{next(self._ids)}", sender=sender,
                          sent_at=scheduler.now)
        low, high = self.latency
        loss, nodes, deliver = self.loss, self.nodes, self._deliver
        side = self.side.get(sender) if self.side else None
        for target in targets:
            if target == sender and not key.startswith("cell."):
                continue
            if side is not None and self.side.get(target) != side:
                continue  # across the cut: lost, and nothing comes back
            if loss and rng.random() < loss:
                continue
            scheduler.after(scheduler.now + rng.uniform(low, high), deliver, nodes[target],
                            message)

    def _deliver(self, node: _Node, message: Message) -> None:
        if node.crashed:
            return
        if node.paused_until is not None:
            node.parked.append(message)
            return
        node.received += 1
        node.cell.on_receive(message)

    def _tick(self, node: _Node) -> None:
        if node.crashed:
            return
        if node.paused_until is None:
            node.cell.on_receive(Message(_TICK, id=f"tick-{next(self._ids)}"))
            when = self.scheduler.now + self.config.heartbeat_interval
        else:
            when = node.paused_until
        self.scheduler.at(when, lambda: self._tick(node))

    # -- faults -------------------------------------------------------------------------------

    def crash(self, name: str) -> None:
        """SIGKILL: the node stops, and the broker deletes its queue (probes come back)."""
        node = self.nodes[name]
        node.crashed = True
        self.crashes[name] = self.scheduler.now
        self.roles.move(self.scheduler.now, name, node.host.role, None)
        self.everyone.discard(name)
        self._everyone_sorted = None
        for bound in self.exact.values():
            bound.discard(name)

    def pause(self, name: str, seconds: float) -> None:
        """SIGSTOP for ``seconds``: no ticks, deliveries parked, its queue stays."""
        node = self.nodes[name]
        node.paused_until = self.scheduler.now + seconds
        self.paused.add(name)

        def resume() -> None:
            node.paused_until = None
            parked, node.parked = node.parked, []
            for message in parked:
                self._deliver(node, message)

        self.scheduler.at(node.paused_until, resume)

    def partition(self, *sides: Collection[str]) -> None:
        """Split the nodes: each of ``sides`` hears only itself; the nodes named in none
        form one more side together."""
        self.side = {name: index for index, names in enumerate(sides) for name in names}
        rest = len(sides)
        for name in self.nodes:
            self.side.setdefault(name, rest)
        self.last_split = dict(self.side)
        self.partitions.append((self.scheduler.now, None))

    def heal(self) -> None:
        """Join the sides again: messages sent from now on reach every node."""
        self.side = {}
        if self.partitions and self.partitions[-1][1] is None:
            self.partitions[-1] = (self.partitions[-1][0], self.scheduler.now)

    def split_off(self, fraction: float) -> list[str]:
        """The nodes of a side of ``fraction`` of the cluster, chosen by the seed."""
        count = max(1, min(len(self.nodes) - 1, round(fraction * len(self.nodes))))
        return sorted(self.scheduler.rng.sample(sorted(self.nodes), count))

    # -- running and measuring ----------------------------------------------------------------

    def record(self, node: str, kind: str, fields_: dict[str, Any]) -> None:
        if kind in ("down", "refuted", "doubting"):
            if self.side and self.side.get(fields_.get("member", node)) != self.side.get(node):
                fields_ = {**fields_, "across": True}  # a verdict about the other side
            self.events.append((self.scheduler.now, node, kind, fields_))

    def run(self, seconds: float) -> None:
        self.scheduler.run_until(self.scheduler.now + seconds)

    def report(self, seconds: float, cpu: float, *, wall: float | None = None,
               node_seconds: float | None = None, start: float = 0.0,
               start_wall: float = 0.0) -> SimulationReport:
        """The figures of a run: messages counted over ``seconds`` (since the counts were
        reset), speed over ``node_seconds`` simulated in ``cpu`` CPU seconds and ``wall`` real
        ones (``cpu`` if not given), of which ``start`` and ``start_wall`` built the nodes
        (n**2 view entries: not counted in the speed)."""
        wall = cpu if wall is None else wall
        simulated = node_seconds or len(self.nodes) * seconds
        live = [n for n in self.nodes.values() if not n.crashed]
        times = []
        undetected = 0
        spreads = []
        for name, crashed_at in self.crashes.items():
            seen = {node: t for t, node, kind, f in self.events
                    if kind == "down" and f.get("member") == name}
            if any(n.name not in seen for n in live):
                undetected += 1
            elif seen:
                everywhere = max(seen[n.name] for n in live)
                times.append(everywhere - crashed_at)
                spreads.append(everywhere - min(seen.values()))  # from the first verdict on
        times.sort()
        false_downs = sum(1 for _, _, kind, f in self.events if kind == "down"
                          and not f.get("across") and f.get("member") not in self.crashes
                          and f.get("member") not in self.paused)
        received = sum(n.received for n in self.nodes.values())
        # Per node-second alive: a crashed node hears nothing after it, and 10 crashes of 100
        # nodes counted as live for the whole run showed 3 % fewer messages than at 1,000.
        since = self.scheduler.now - seconds
        alive = sum(seconds if name not in self.crashes
                    else min(seconds, max(0.0, self.crashes[name] - since))
                    for name in self.nodes)
        n = len(self.nodes)
        return SimulationReport(
            nodes=n, seconds=seconds, seed=self.seed, loss=self.loss,
            watchers=self.config.watchers,
            detection={**_quantiles(times), "crashes": len(self.crashes)},
            spread=_quantiles(spreads),
            undetected=undetected, false_downs=false_downs,
            messages_per_node_s=round(received / alive, 2) if alive > 0 else 0.0,
            cpu_seconds=round(cpu, 2), wall_seconds=round(wall, 2),
            node_seconds_per_cpu_second=round(simulated / (cpu - start), 1) if cpu > start else 0.0,
            node_seconds_per_wall_second=round(simulated / (wall - start_wall), 1)
            if wall > start_wall else 0.0, start_seconds=round(start, 2))

    def roles_after_heal(self) -> dict[str, Any]:
        """Roles held twice (more than wanted) during the last split and after its heal, for
        how long, and how long after the heal every role was held exactly as wanted (-1:
        not yet at the end of the run)."""
        split, healed = self.partitions[-1] if self.partitions else (0.0, None)
        if healed is None:
            return {}
        now = self.scheduler.now
        during = self.roles.overheld(split, healed)
        after = self.roles.overheld(healed, now)
        exact = self.roles.exact_from(healed)
        sizes = collections.Counter(self.last_split.values())
        smaller = {name for name, side in self.last_split.items()
                   if sizes[side] < max(sizes.values())}
        return {"roles": len(self.roles.wanted),
                "held_on_smaller_side_at_split": sum(
                    1 for role, _, held in self._holders_at(split) if held & smaller),
                "held_on_smaller_side_at_end": sum(
                    1 for held in self.roles.holders.values() if held & smaller),
                "held_twice_while_split": len(during),
                "held_twice_after_heal": len(after),
                "longest_held_twice_after_heal": max(after.values(), default=0.0),
                "exactly_once_after_heal_s": exact if exact is not None else -1.0}

    def _holders_at(self, when: float) -> list[tuple[str, int, set[str]]]:
        """Each role's holders at ``when``, replayed from the ledger's changes."""
        holders: dict[str, set[str]] = {role: set() for role in self.roles.wanted}
        for at, node, before, after in self.roles.moves:
            if at > when:
                break
            if before is not None:
                holders.setdefault(before, set()).discard(node)
            if after is not None:
                holders.setdefault(after, set()).add(node)
        return [(role, len(held), held) for role, held in holders.items()]

    def views_agree_down(self, name: str) -> bool:
        return all(n.cell.view.get(name) is not None and n.cell.view[name].status == DOWN
                   for n in self.nodes.values() if not n.crashed and n.name != name)


@dataclass(frozen=True)
class PartitionFault:
    """A split of ``fraction`` of the nodes (chosen by the seed) from the rest, ``at`` virtual
    seconds after the warm-up, healed ``seconds`` later. Written ``FRACTION@AT+SECONDS``
    (``0.3@10+5``) on the command line."""

    fraction: float
    at: float
    seconds: float

    @classmethod
    def parse(cls, text: str) -> PartitionFault:
        try:
            fraction, rest = text.split("@")
            at, seconds = rest.split("+")
            fault = cls(float(fraction), float(at.rstrip("s")), float(seconds.rstrip("s")))
        except ValueError:
            raise ConfigError(f"partition {text!r}: expected FRACTION@AT+SECONDS, e.g."
                              " 0.3@10+5") from None
        if not 0 < fault.fraction < 1 or not 0 <= fault.at < math.inf or \
                not 0 < fault.seconds < math.inf:
            raise ConfigError(f"partition {text!r}: need 0 < fraction < 1, at >= 0, seconds > 0,"
                              " all finite")
        return fault

    def schedule(self, sim: Simulation, start: float) -> list[str]:
        """Split at ``start + at`` and heal ``seconds`` later; the side split off, sorted."""
        side = sim.split_off(self.fraction)
        sim.scheduler.at(start + self.at, lambda: sim.partition(side))
        sim.scheduler.at(start + self.at + self.seconds, sim.heal)
        return side


def simulate(n: int, *, seconds: float = 30.0, seed: int = 0, loss: float = 0.0,
             watchers: int = 3, crashes: int = 10, warmup: float = 5.0,
             converged: bool = True, partition: PartitionFault | None = None,
             roles: int = 0) -> SimulationReport:
    """Run ``n`` nodes for ``warmup`` virtual seconds, then ``seconds`` more in which
    ``crashes`` nodes (chosen by the seed) are crashed at random times, and the cluster is
    split by ``partition`` if given; report. ``roles`` one-slot roles (``role-000`` ...) are
    held by the first nodes at the start and reconciled by every node (the rest are spares).
    ``converged=False`` runs the cold start's hellos too (n**2 deliveries)."""
    started, started_wall = time.process_time(), time.perf_counter()
    intent = {f"role-{index:03d}": 1 for index in range(roles)} if roles else None
    sim = Simulation(n, seed=seed, loss=loss, watchers=watchers, converged=converged,
                     intent=intent)
    start, start_wall = time.process_time() - started, time.perf_counter() - started_wall
    sim.run(warmup)
    for node in sim.nodes.values():  # steady state only: the cold start's announces are n**2
        node.received = 0
    side = partition.schedule(sim, warmup) if partition is not None else []
    victims = sim.scheduler.rng.sample(sorted(sim.nodes), min(crashes, n - 1))
    for name in victims:
        at = warmup + sim.scheduler.rng.uniform(0, max(0.0, seconds - 5.0))
        sim.scheduler.at(at, functools.partial(sim.crash, name))
    sim.run(seconds)
    report = sim.report(seconds, time.process_time() - started,
                        wall=time.perf_counter() - started_wall,
                        node_seconds=n * (warmup + seconds), start=start, start_wall=start_wall)
    if partition is not None:
        report.partition = {"side": len(side), "of": n, "at": partition.at,
                            "seconds": partition.seconds, "split": bool(sim.partitions),
                            "healed": bool(sim.partitions) and sim.partitions[-1][1] is not None,
                            "downs_across": sum(1 for _, _, kind, f in sim.events
                                                if kind == "down" and f.get("across"))}
        if roles:
            report.partition.update(sim.roles_after_heal())
    return report
