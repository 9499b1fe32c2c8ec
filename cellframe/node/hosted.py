"""What a node keeps of the cells it hosts: each supervised cell, the deliveries held for
role cells behind the pause fence, and the routing snapshot deliveries read without a lock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from ..cell.cell import Cell, Inbound
from ..transports.base import Delivery
from ..wire.envelope import Message
from .audit import AuditTrail
from .counters import NodeCounters
from .supervisor import RestartIntensity

__all__ = ["HeldDelivery", "Hosted", "NodeParts", "Routes"]


@dataclass(slots=True)
class Hosted:
    """One supervised cell: its current actor (replaced at each restart), its condition
    (running, restarting, failed, stopped) and what is held for it while it is down."""

    ref: pykka.ActorRef[Any]
    cell: Cell
    patterns: list[str] = field(default_factory=list)
    start: Callable[[], pykka.ActorRef[Any]] | None = None
    condition: str = "running"
    restarts: int = 0
    pending: list[Inbound] = field(default_factory=list)
    intensity: RestartIntensity | None = None
    #: When the restart is due (monotonic), set at the crash; None: no restart scheduled.
    restart_due: float | None = None
    #: Monitors' notices in ``pending`` (at most ``HELD_NOTICES``), told at the restart.
    held_notices: int = 0


@dataclass(frozen=True, slots=True)
class HeldDelivery:
    """A delivery for role cells that arrived while the fence was holding."""

    targets: list[Hosted]
    message: Message
    delivery: Delivery
    from_role_queue: bool
    role: str | None
    trail: AuditTrail | None


@dataclass(frozen=True, slots=True)
class Routes:
    """Which cells a delivery may reach: one immutable snapshot, replaced whole on every
    change, so that deliveries read it without a lock. They must: they are handled on the
    transport's I/O thread, while ``differentiate`` holds the node's lock and waits on that
    same thread to bind and consume."""

    daemon: Hosted | None = None
    everyone: tuple[Hosted, ...] = ()
    role_cells: tuple[Hosted, ...] = ()


class NodeParts:
    """What the parts of ``Node`` that live in modules of their own (its intake, its
    supervisor: base classes of it) all use of it; each part declares the rest it uses."""

    name: str
    role: str | None
    counters: NodeCounters
    _routes: Routes
    _intake: threading.Lock
    _stopped: threading.Event
    emit: Callable[..., None]
    send: Callable[..., None]
