"""A node's supervision of its cells, OTP-style: a crashed cell is restarted with backoff
(one-for-one or one-for-all), past its restart intensity it is failed and its role given up,
and the cells watching it, here or on other nodes, are told (``cellframe.node.monitors``).

The crash and stop reports arrive on the dying cell's own thread, so nothing here takes the
node's lock. ``Supervising`` is the part of ``Node`` that does it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..cell.cell import Cell, Inbound
from ..cell.host import HostedCell
from ..errors import CellframeError
from ..failures import log_failure
from ..wire.envelope import Envelope, Message
from .gate import head_verb
from .hosted import Hosted, NodeParts
from .monitors import Monitors
from .supervisor import SupervisionPolicy

__all__ = ["Supervising"]

log = logging.getLogger(__name__)

#: Monitors' notices held for one restarting watcher at most: as many as the deliveries its
#: node queue's prefetch lets it hold. A restart is due within ``supervision.max-backoff``
#: (2 s by default), and each watched cell's crashes are bounded by its restart intensity,
#: so only a watcher of very many cells, all crashing at once, reaches it.
HELD_NOTICES = 1000


class Supervising(NodeParts):
    """The supervisor of ``Node`` (a base class of it): what it uses of the node besides
    ``NodeParts`` is below."""

    incarnation: int
    supervision: SupervisionPolicy
    monitors: Monitors
    _supervised: dict[str, Hosted]
    _attached: dict[str, Cell]
    _early: dict[str, list[tuple[HostedCell, str, tuple[Any, ...]]]]
    _quarantine: dict[str, float]
    _notices_told: Iterator[int]
    differentiate: Callable[[str | None], bool]
    _held_back: Callable[..., bool]
    _replay: Callable[[list[tuple[HostedCell, str, tuple[Any, ...]]]], None]
    _hand: Callable[[Hosted, Inbound, Callable[[str, bool], None]], None]

    # -- supervision: called from a dying cell's thread, so never taking _lock --------------

    @property
    def quarantined(self) -> bool:
        """True while this node may not play a role it gave up past a cell's restart
        intensity (membership then announces it as no spare, so a spare takes the role)."""
        now = time.monotonic()
        return any(until > now for until in self._quarantine.values())

    def monitor(self, watcher: str, watched: str, node: str | None = None) -> None:
        """Tell the cell ``watcher`` ``(cell-down :cell W :node N :condition C :reason R)``
        whenever the cell ``watched`` of ``node`` (None: this node) crashes (C: restarting)
        or fails, or its node goes down (C: down, R: node-down)."""
        self.monitors.watch_cell(watcher, watched, node)

    def monitor_node(self, watcher: str, node: str) -> None:
        """Tell the cell ``watcher`` ``(node-down :node N :incarnation I :reason down|left)``
        once for each life of ``node`` that this node's membership sees end."""
        self.monitors.watch_node(watcher, node)

    def demonitor(self, watcher: str, watched: str, node: str | None = None) -> None:
        """Undo ``monitor``: ``watcher`` hears no more of the cell ``watched`` of ``node``."""
        self.monitors.unwatch_cell(watcher, watched, node)

    def demonitor_node(self, watcher: str, node: str) -> None:
        """Undo ``monitor_node``."""
        self.monitors.unwatch_node(watcher, node)

    def cell_crashed(self, cell: HostedCell, message: Message | None,
                     error: BaseException | None) -> None:
        if self._held_back(cell, "cell_crashed", message, error):
            return
        hosted = self._supervised.get(cell.cell_name)
        if hosted is None or hosted.cell is not cell:
            log.error("%s: an unsupervised cell %s crashed: %r", self.name, cell.cell_name, error)
            return
        now = time.monotonic()
        with self._intake:
            if hosted.condition == "stopped":
                return
            assert hosted.intensity is not None
            backoff = hosted.intensity.crash(now)
            hosted.condition = "failed" if backoff is None else "restarting"
            hosted.restart_due = None if backoff is None else now + backoff
            self.counters.crashes += 1
        reason = f"{type(error).__name__}: {error}"
        self.emit("cell-crashed", cell=cell.cell_name, role=self.role,
                  verb=None if message is None else head_verb(message.expr),
                  exception=reason, message_id=None if message is None else message.id,
                  restarts=hosted.restarts)
        self._tell_monitors(hosted, reason)
        if hosted.condition == "restarting" and self.supervision.strategy == "one-for-all":
            self._restart_siblings(hosted)

    def cell_stopped(self, cell: HostedCell, orphans: list[Any]) -> None:
        if self._held_back(cell, "cell_stopped", orphans):
            return
        hosted = self._supervised.get(cell.cell_name)
        if hosted is None or hosted.cell is not cell or hosted.condition in ("running", "stopped"):
            self._give_back(hosted, orphans, f"{cell.cell_name} stopped")
            return
        with self._intake:
            hosted.pending[:0] = [o for o in orphans if type(o) is Inbound]
            failed = hosted.condition == "failed"
            if failed:
                pending, hosted.pending = hosted.pending, []
        if failed:
            self._give_back(hosted, pending, f"{cell.cell_name}: cell crashed")
            threading.Thread(target=self._escalate, args=(hosted,),
                             name=f"escalate:{cell.cell_name}", daemon=True).start()
            return
        delay = max(0.0, (hosted.restart_due or 0.0) - time.monotonic())
        timer = threading.Timer(delay, self._restart, args=(hosted,))
        timer.name, timer.daemon = f"restart:{cell.cell_name}", True
        timer.start()

    def _restart(self, hosted: Hosted) -> None:
        """Start a new instance of a crashed cell and tell it what was held for it."""
        assert hosted.start is not None
        if self._stopped.is_set() or hosted.condition != "restarting":
            return
        name = hosted.cell.cell_name
        ref = hosted.start()
        with self._intake:
            cell = self._attached.pop(name)
            early = self._early.pop(name, [])
            if hosted.condition != "restarting" or self._stopped.is_set():
                ref.stop(block=False)  # retired meanwhile: its held messages went back
                return
            hosted.ref, hosted.cell, hosted.condition = ref, cell, "running"
            hosted.restarts += 1
            self.counters.restarts += 1
            pending, hosted.pending, hosted.held_notices = hosted.pending, [], 0
            for inbound in pending:
                ref.tell(inbound)
        self.emit("cell-restarted", cell=name, role=self.role, restarts=hosted.restarts,
                  held=len(pending))
        self._replay(early)

    def _restart_siblings(self, crashed: Hosted) -> None:
        """One-for-all: every other role cell of the node stops (after applying what its
        mailbox holds) and restarts with the crashed one."""
        siblings = [h for h in self._routes.role_cells if h is not crashed]
        if crashed not in self._routes.role_cells:
            return
        with self._intake:
            for sibling in siblings:
                if sibling.condition == "running":
                    sibling.condition, sibling.restart_due = "restarting", crashed.restart_due
                    sibling.ref.stop(block=False)

    def _escalate(self, hosted: Hosted) -> None:
        """Past the restart intensity: report the cell failed and, for a role cell, give up
        the role for the quarantine, so that the reconciler gives it to a spare."""
        self.counters.failures += 1
        role = self.role if hosted in self._routes.role_cells else None
        self.emit("cell-failed", cell=hosted.cell.cell_name, role=role, restarts=hosted.restarts)
        if role is None:
            return
        self._quarantine[role] = time.monotonic() + self.supervision.quarantine
        try:
            self.differentiate(None)
        except Exception as error:  # the node stays up as it was; its cell is failed either way
            log_failure(log, error, "%s: could not step down from %s", self.name, role)

    def _give_back(self, hosted: Hosted | None, items: list[Any], reason: str) -> None:
        """Refuse messages no cell will apply: role messages go back to their queue for
        another node, node messages to the dead letters with ``reason``."""
        for item in items:
            if type(item) is Inbound:
                item.refuse(reason, True)

    def _tell_monitors(self, hosted: Hosted, reason: str) -> None:
        self.monitors.cell_went_down(hosted.cell.cell_name, hosted.condition, reason)

    def _new_notice_id(self) -> str:
        # The incarnation in the id: a durable watcher recovers the ids it applied, and a
        # restarted node's count starts again at 1.
        return f"{self.name}-{self.incarnation}-{next(self._notices_told)}"

    def _tell_watcher(self, watcher: str, expr: list[Any], notice_id: str) -> None:
        """Hand a monitor's notice to the cell ``watcher`` of this node, an ordinary message
        (never through the broker: nothing to settle), as a delivery is handed: held for a
        watcher that is restarting (at most ``HELD_NOTICES``), and dropped for one that
        failed or stopped."""
        hosted = self._supervised.get(watcher)
        if hosted is None:
            return  # not a cell of this node (any more)
        note = Inbound(Message(expr, sender=self.name, id=f"monitor-{notice_id}"),
                       refuse=_notice_dropped)
        with self._intake:
            if hosted.condition == "restarting":
                if hosted.held_notices >= HELD_NOTICES:
                    log.warning("%s: %s is restarting with %d notices held: notice %s dropped",
                                self.name, watcher, hosted.held_notices, notice_id)
                    return
                hosted.held_notices += 1
            self._hand(hosted, note, note.refuse)

    def _send_notice(self, target: str, expr: list[Any],
                     on_return: Callable[[Envelope, str], None]) -> None:
        """Send a monitor's request or notice to another node, fire and forget."""
        if self._stopped.is_set():
            return
        try:
            self.send(target, expr, on_return=on_return)
        except CellframeError as error:  # a closed transport: the peers learn we are gone
            log.debug("%s: monitor message to %s not sent: %s", self.name, target, error)



def _notice_dropped(reason: str, requeue: bool) -> None:
    """The ``refuse`` of a monitor's notice: its watcher failed or stopped before hearing it,
    and nobody else is owed it."""
    log.debug("a monitor's notice dropped: %s", reason)

