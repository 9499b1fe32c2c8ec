"""What a cell may ask of the node hosting it: the ``CellHost`` protocol, and the host a cell
gets when no node hosts it.

A ``Node`` is the host of every cell it starts. A cell started on its own (in a test, a
script, a benchmark) gets a ``StandaloneHost``: the same protocol, with the answers a cell
alone can honestly give (no role, no resolver, no cells beside it, an incarnation of 0), and
sending through the ``Outbox`` it was given, if any. So a cell never asks whether its host can
do something: every host can do all of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import pykka

from ..errors import CellframeError, ClusterError
from ..wire.envelope import Envelope, Message
from .outbox import Outbox

if TYPE_CHECKING:
    from ..config.resolvers import ConfigResolver
    from .fence import PauseFence

__all__ = ["CellHost", "HostedCell", "StandaloneHost"]

log = logging.getLogger(__name__)


class HostedCell(Protocol):
    """What a host and the cells beside one may use of a cell (a ``Cell`` is one; declared
    here so that this module need not import the Cell, which imports it)."""

    @property
    def cell_name(self) -> str: ...

    @property
    def actor_ref(self) -> pykka.ActorRef[Any]: ...

    def cell_verbs(self) -> frozenset[str]:
        """The verbs the cell declares."""
        ...


class CellHost(Outbox, Protocol):
    """Everything a cell may ask of the node hosting it.

    Sending (``send``, ``dead_letter``) is the ``Outbox``; the rest says who the node is and
    what it holds. Every method may be called from the cell's own thread; ``send`` and
    ``emit`` also from any other thread (a transport's, a store's).
    """

    @property
    def name(self) -> str:
        """The node's name (a cell alone: its own name)."""
        ...

    @property
    def incarnation(self) -> int:
        """Which life of the node this is; a larger number supersedes news of a smaller one."""
        ...

    @property
    def role(self) -> str | None:
        """The role the node plays now (None: a spare)."""
        ...

    @property
    def resolver(self) -> ConfigResolver | None:
        """Where the node reads its configuration and the cluster's intent (None: nowhere)."""
        ...

    @property
    def registry(self) -> Container[str] | None:
        """The roles this node can play (None: it cannot tell, so any)."""
        ...

    def cells(self) -> Mapping[str, HostedCell]:
        """The role cells the node hosts, by name (tell them messages; never touch their
        state: each lives on its own thread)."""
        ...

    def status(self) -> dict[str, Any]:
        """The node's status: its name, role, counters and every cell's snapshot (``cells``)."""
        ...

    def load(self) -> float | None:
        """How busy the node's role cells say they are (``Cell.cell_load``: 1.0 is at their
        threshold), the busiest one's; None if none measures it. Never waits on a lock."""
        ...

    def emit(self, kind: str, **fields: Any) -> None:
        """Publish a healing or membership event ``kind`` with ``fields`` (fire and forget)."""
        ...

    def differentiate(self, role: str | None) -> bool:
        """Make the node play ``role`` (None: a spare); False if it already did. Raises a
        CellframeError if it cannot."""
        ...

    def renew_incarnation(self, above: int) -> int:
        """Start a new life of the node, numbered above both ``above`` and the current one
        (how a node refutes news of its death); returns the new incarnation."""
        ...

    def attach_cell(self, cell: HostedCell) -> None:
        """Called once by each cell created with this host, from its constructor, so the host
        can read the cell's snapshot without waiting on it."""
        ...

    @property
    def quarantined(self) -> bool:
        """True while the node may not play a role it gave up when a cell failed."""
        ...

    def monitor(self, watcher: str, watched: str, node: str | None = None) -> None:
        """Tell the cell ``watcher`` ``(cell-down :cell W ...)`` when the cell ``watched`` of
        ``node`` (None: this one) crashes or fails, or that node goes down."""
        ...

    def monitor_node(self, watcher: str, node: str) -> None:
        """Tell the cell ``watcher`` ``(node-down :node N ...)`` when a life of ``node`` ends."""
        ...

    def demonitor(self, watcher: str, watched: str, node: str | None = None) -> None:
        """Undo ``monitor``."""
        ...

    def demonitor_node(self, watcher: str, node: str) -> None:
        """Undo ``monitor_node``."""
        ...

    def cell_crashed(self, cell: HostedCell, message: Message | None,
                     error: BaseException | None) -> None:
        """Called from the cell's thread as it dies: ``message`` (None: none was being
        applied) crashed it with ``error``. Messages for it are held from now on."""
        ...

    def cell_stopped(self, cell: HostedCell, orphans: list[Any]) -> None:
        """Called from the cell's thread as its actor ends, with what its mailbox still held
        (``Inbound`` or ``Message`` items, in order), which the host must not lose."""
        ...

    @property
    def broker_connected(self) -> bool:
        """Is the node's transport connected to its broker now? (False while it reconnects:
        silence heard meanwhile is no evidence about peers.)"""
        ...

    @property
    def broker_address(self) -> str | None:
        """``host:port`` of the broker node the node's transport is connected to now (None while
        it is not, or with no broker to name): carried by its heartbeats."""
        ...

    def guard_pauses(self, gap: float) -> PauseFence | None:
        """Fence the node's role cells after a pause longer than ``gap`` seconds (see
        ``cellframe.cell.fence``); returns the fence (None: this host cannot)."""
        ...

    def clear_fence(self, generation: int) -> None:
        """Membership has judged the node's standing since the pause of ``generation``: hand
        the deliveries held meanwhile to the role cells, or give them back if the role changed."""
        ...

    def cell_bind(self, cell: str, pattern: str) -> None:
        """Route ``pattern`` to the hosted cell named ``cell`` from now on (bindings that
        change as the cell runs: membership's watch ring)."""
        ...

    def cell_unbind(self, cell: str, pattern: str) -> None:
        """Undo ``cell_bind``."""
        ...


class StandaloneHost:
    """The host of a cell that no node hosts: sends through ``outbox`` (none: sending raises
    a CellframeError), plays no role, holds no other cell, and emits events only to the log.
    """

    def __init__(self, name: str, outbox: Outbox | None = None) -> None:
        self.name = name
        self.outbox = outbox
        self.incarnation = 0
        self.role: str | None = None
        self.resolver: ConfigResolver | None = None
        self.registry: Container[str] | None = None
        self.quarantined = False

    def send(self, target: str, expr: Any, *, reply_to: str | None = None,
             sender: str | None = None,
             on_return: Callable[[Envelope, str], None] | None = None,
             correlation_id: str | None = None) -> None:
        if self.outbox is None:
            raise CellframeError(f"cell {sender or self.name} has no outbox to send through")
        self.outbox.send(target, expr, reply_to=reply_to, sender=sender, on_return=on_return,
                         correlation_id=correlation_id)

    def dead_letter(self, message: Message, reason: str) -> None:
        if self.outbox is None:
            raise CellframeError(f"{self.name} has no outbox for the dead letter: {reason}")
        self.outbox.dead_letter(message, reason)

    def cells(self) -> Mapping[str, HostedCell]:
        return {}

    def load(self) -> float | None:
        return None

    def status(self) -> dict[str, Any]:
        return {"node": self.name, "role": None, "started_at": None, "diagnostic": False,
                "counters": {}, "cells": []}

    def emit(self, kind: str, **fields: Any) -> None:
        log.debug("%s: event %s %s (no node to publish it)", self.name, kind, fields)

    def differentiate(self, role: str | None) -> bool:
        raise ClusterError(f"{self.name} runs alone: there is no node to become {role or 'a spare'}")

    def renew_incarnation(self, above: int) -> int:
        self.incarnation = max(self.incarnation, above) + 1
        return self.incarnation

    def attach_cell(self, cell: HostedCell) -> None:
        """Nothing to do: the cell is the only one."""

    def monitor(self, watcher: str, watched: str, node: str | None = None) -> None:
        """Nothing to watch: the cell is the only one."""

    def monitor_node(self, watcher: str, node: str) -> None:
        """No membership to hear of nodes from: nothing is ever told."""

    def demonitor(self, watcher: str, watched: str, node: str | None = None) -> None:
        """Nothing was watched."""

    def demonitor_node(self, watcher: str, node: str) -> None:
        """Nothing was watched."""

    def cell_crashed(self, cell: HostedCell, message: Message | None,
                     error: BaseException | None) -> None:
        """No supervisor: the cell stays down, and says so in the log."""
        log.error("%s crashed (no node supervises it, so it stays down): %r",
                  cell.cell_name, error)

    def cell_stopped(self, cell: HostedCell, orphans: list[Any]) -> None:
        """Refuse what the mailbox still held: given back to its queue if a transport
        delivered it, else only logged."""
        for item in orphans:
            refuse = getattr(item, "refuse", None)
            if refuse is not None:
                refuse(f"{cell.cell_name} stopped before applying it", True)
        if orphans:
            log.warning("%s stopped with %d messages unapplied", cell.cell_name, len(orphans))

    @property
    def broker_connected(self) -> bool:
        return True  # no broker of its own to lose: never a reason to doubt

    @property
    def broker_address(self) -> str | None:
        return None

    def guard_pauses(self, gap: float) -> PauseFence | None:
        return None  # no role cells to fence

    def clear_fence(self, generation: int) -> None:
        """Nothing held: there is no fence."""

    def cell_bind(self, cell: str, pattern: str) -> None:
        """Nothing to bind: a cell alone receives only what it is given."""

    def cell_unbind(self, cell: str, pattern: str) -> None:
        """Nothing bound."""

    def __repr__(self) -> str:
        return f"<StandaloneHost {self.name} outbox={self.outbox!r}>"
