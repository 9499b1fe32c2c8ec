"""Node: the management daemon every host runs, and the host of the cells it starts.

A node learns its role (from DNS, or as given), differentiates into the cells that role
names, binds its routes, and turns deliveries from the transport into messages for its
cells: it checks size and signature, reads the s-expression, and settles the delivery only
once the receiving cell has applied it. Routing:

* ``node.<name>``, ``all`` and ``each.<role>`` reach the node's daemon cell, which answers
  ``(status)``, ``(ping)``, ``(differentiate ROLE)`` and ``(diagnostic BOOL)``, takes other
  nodes' ``(monitor ...)``, ``(demonitor ...)`` and ``(cell-down ...)``
  (``cellframe.node.monitors``), and hands any other verb to the hosted cells that declare it;
* ``cell.<name>`` reaches one hosted cell;
* ``role.<role>`` is a durable queue shared by every node of the role: one of them applies
  each message, and a node that takes the role later inherits the backlog.

A node is the ``CellHost`` of its cells: all they know of it is that protocol. It closes what
it opened and nothing else: ``stop`` (or leaving ``with node:``) stops its cells, threads and
consumers and deletes its own queue, while the transport, the resolver and the signer it was
given stay open for whoever made them to close.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pykka
from pykka.messages import ProxyGetAttr

from ..cell.cell import Cell, Inbound, SettingsChanged
from ..cell.durable import CellJournal
from ..cell.fence import PauseFence
from ..cell.host import CellHost, HostedCell
from ..cell.statemachine import transition
from ..config.txtconfig import NodeConfig
from ..config.watchers import ConfigWatcher
from ..errors import (
    ArityError,
    CellframeError,
    ClusterError,
    ConfigError,
    RefusedError,
)
from ..failures import log_failure
from ..language.printer import write
from ..language.reader import read
from ..language.symbols import Keyword, Symbol
from ..roles.registry import RoleRegistry
from ..transports.base import Delivery, Transport
from ..wire import tracing
from ..wire.envelope import (
    CONTENT_TYPE,
    Envelope,
    Message,
    envelope_for,
    is_cellframe_content,
    request_id,
)
from ..wire.routing import (
    ALL,
    cell_key,
    each_key,
    event_key,
    is_persistent,
    node_key,
    role_key,
    topic_matches,
    validate_name,
)
from .audit import AuditTrail
from .gate import Gate, head_verb
from .monitors import Monitors
from .status import status_reply
from .supervisor import RestartIntensity, SupervisionPolicy

__all__ = ["Node", "NodeCounters", "NodeDaemon"]

log = logging.getLogger(__name__)

#: The header that marks an event (nobody listening to one is fine: a log sump is optional).
_EVENT_HEADER = "x-cellframe-event"
#: Unsigned refusal notices a node sends a second at most (see ``Node._notice``).
NOTICES_PER_SECOND = 20

#: Default cap on an incoming message body, checked before anything reads it.
MAX_MESSAGE_BYTES = 64 * 1024

#: Unsettled deliveries from the node's own queue. It holds only this node's messages, so a
#: wide window takes work from no other node; against the transport's default of 256 it
#: measured 0.43-0.46x raw pika instead of 0.37-0.41x (three runs each, interleaved), the
#: node spending 70-106 us of CPU a message instead of 89-111 us: pika reads larger runs of
#: deliveries at a time. Role queues keep the default: there a narrow window spreads work
#: across the role's nodes.
NODE_QUEUE_PREFETCH = 1000
#: Monitors' notices held for one restarting watcher at most: as many as the deliveries its
#: node queue's prefetch lets it hold. A restart is due within ``supervision.max-backoff``
#: (2 s by default), and each watched cell's crashes are bounded by its restart intensity,
#: so only a watcher of very many cells, all crashing at once, reaches it.
HELD_NOTICES = 1000


@dataclass(slots=True)
class NodeCounters:
    """What the node did with deliveries before they reached any cell."""

    delivered: int = 0
    rejected: int = 0
    unroutable: int = 0
    sent: int = 0
    #: RefusedError deliveries by reason (``wire.signing.REASONS``).
    refused: dict[str, int] = field(default_factory=dict)
    #: Cells that crashed, were restarted, or failed past their restart intensity.
    crashes: int = 0
    restarts: int = 0
    failures: int = 0
    #: Deliveries for role cells given back, never applied, because the node was paused.
    fenced: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "rejected": self.rejected,
                "unroutable": self.unroutable, "sent": self.sent, "refused": dict(self.refused),
                "crashes": self.crashes, "restarts": self.restarts, "failures": self.failures,
                "fenced": self.fenced}


class NodeDaemon(Cell):
    """The management cell of a node: status, ping, differentiation, diagnostic mode, and
    the monitors other nodes ask of it or answer."""

    states = ("running",)
    initial = "running"
    #: Monitors between nodes (``cellframe.node.monitors``): only nodes ask and tell them, a
    #: node asking with ``:by``, a watched cell's node telling with ``:node``.
    node_verbs: ClassVar[Mapping[str, str | None]] = {
        "monitor": "by", "demonitor": "by", "cell-down": "node"}

    def __init__(self, name: str, *, node: Node, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.node = node

    @transition("status")
    def status(self) -> None:
        self.cell_reply(status_reply(self.node.status()))

    @transition("ping")
    def ping(self) -> None:
        self.cell_reply([Symbol("pong"), Keyword("node"), self.node.name, Keyword("time"), time.time()])

    @transition("differentiate")
    def differentiate(self, role: str | None) -> None:
        if role is not None and not isinstance(role, str):
            raise ConfigError(f"differentiate needs a role name or nil, got {role!r}")
        self.node.differentiate(role)

    @transition("diagnostic")
    def diagnostic(self, enabled: bool | None) -> None:
        # true, or false/nil: Python's bool() would read "false", "maybe" and 1 as true.
        if enabled is not None and type(enabled) is not bool:
            raise ArityError(f"diagnostic takes true or false, not {enabled!r}")
        self.node.set_diagnostic(enabled is True)

    @transition("monitor")
    def monitor(self, cell: str, by: str) -> None:
        """Another node (``by``) asks to hear ``(cell-down ...)`` when ``cell`` here goes down."""
        if not isinstance(cell, str) or not isinstance(by, str):
            raise ArityError(f"monitor takes :cell NAME :by NODE, not {cell!r} and {by!r}")
        self.node.monitors.asked_by(by, cell)

    @transition("demonitor")
    def demonitor(self, cell: str, by: str) -> None:
        """Another node (``by``) no longer wants to hear when ``cell`` here goes down."""
        if not isinstance(cell, str) or not isinstance(by, str):
            raise ArityError(f"demonitor takes :cell NAME :by NODE, not {cell!r} and {by!r}")
        self.node.monitors.unasked_by(by, cell)

    @transition("cell-down")
    def cell_down(self, cell: str, node: str, condition: str = "failed", reason: str = "",
                  **extra: Any) -> None:
        """A watched cell of another node went down: the node tells the cells here watching it
        (``:id``, the notice's, sent again if it was returned: the watchers' message id)."""
        notice_id = extra.get("id")
        if not all(isinstance(v, str) for v in (cell, node, condition, reason)) or not (
                notice_id is None or isinstance(notice_id, str) and len(notice_id) <= 200):
            raise ArityError("cell-down takes :cell :node :condition :reason (and :id), "
                             "all strings")
        self.node.monitors.heard_cell_down(node, cell, condition, reason, notice_id)


@dataclass(slots=True)
class _Hosted:
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
class _Held:
    """A delivery for role cells that arrived while the fence was holding."""

    targets: list[_Hosted]
    message: Message
    delivery: Delivery
    from_role_queue: bool
    role: str | None
    trail: AuditTrail | None


@dataclass(frozen=True, slots=True)
class _Routes:
    """Which cells a delivery may reach: one immutable snapshot, replaced whole on every
    change, so that deliveries read it without a lock. They must: they are handled on the
    transport's I/O thread, while ``differentiate`` holds the node's lock and waits on that
    same thread to bind and consume."""

    daemon: _Hosted | None = None
    everyone: tuple[_Hosted, ...] = ()
    role_cells: tuple[_Hosted, ...] = ()


class Node:
    """One host's management daemon, and the ``CellHost`` of the cells it starts.

    ``with Node(...) as node:`` starts it (unless it was started already) and stops it on the
    way out. It never closes the transport, resolver or signer it is given.

    ``ship_logs=True`` ships the process's Python log records, INFO and above, to the log sump
    from ``start()`` until after ``stop()`` (``cellframe.node.logship.SumpHandler``, in
    ``log_shipping``): what ``cellframe node`` does, for a service that embeds its node. The
    handler sits on the root logger, so it ships every record of the process under this
    node's name: one node per process may ship (a second is refused).
    """

    def __init__(
        self,
        name: str,
        *,
        transport: Transport,
        resolver: Any | None = None,
        registry: RoleRegistry | None = None,
        signer: Any | None = None,
        role: str | None = None,
        diagnostic: bool = False,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        dedup_capacity: int = 100_000,
        system_cells: tuple[type[Cell], ...] = (),
        watch_config: bool = True,
        config_min_interval: float = 1.0,
        queue_prefix: str = "",
        supervision: SupervisionPolicy | None = None,
        journal: CellJournal | None = None,
        ship_logs: bool = False,
    ) -> None:
        self.name = validate_name(name, "node name")
        self.transport = transport
        self.resolver = resolver
        self.registry = registry or RoleRegistry()
        own = getattr(signer, "key", None)
        if own is not None and own.node not in (None, self.name):
            raise ConfigError(f"node {self.name}: its key {own.id!r} speaks for node {own.node!r}; "
                              f"give it a node key made with `cellframe keys new --for-node "
                              f"{self.name}` (or one bound to no node)")
        self.signer = signer
        self.gate = Gate(signer, max_message_bytes)
        self._notices = (0, 0)
        self.diagnostic = diagnostic
        self.max_message_bytes = max_message_bytes
        self.dedup_capacity = dedup_capacity
        self.settings: dict[str, str] = {}
        self.role: str | None = None
        self._given_supervision = supervision
        #: Where durable cells keep their state (None: a durable cell is refused at start).
        self.journal = journal
        #: How this node restarts its cells (DNS ``supervision.*`` when not given).
        self.supervision = supervision or SupervisionPolicy()
        #: Roles this node gave up past a cell's restart intensity, until (monotonic) when.
        self._quarantine: dict[str, float] = {}
        #: Who among the cells here watches which cell or node (``cellframe.node.monitors``).
        self.monitors = Monitors(self.name, self._tell_watcher, self._send_notice,
                                 self._new_notice_id)
        self._notices_told = itertools.count(1)
        self.counters = NodeCounters()
        # Queue names may carry a prefix (several clusters, or tests, sharing one broker);
        # routing keys never do.
        self.queue_prefix = queue_prefix
        self.queue = queue_prefix + node_key(self.name)
        self.started_at: float | None = None
        #: Which life of this node: milliseconds since the epoch at construction. A restarted
        #: node has a larger one, so its peers can tell its news from a dead predecessor's;
        #: membership bumps it to refute a false 'down' (see ``cellframe.healing.membership``).
        self.incarnation: int = time.time_ns() // 1_000_000
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._initial_role = role
        self._lock = threading.RLock()
        self._system_classes = tuple(system_cells)
        self._cells: dict[str, _Hosted] = {}
        self._system: dict[str, _Hosted] = {}
        self._attached: dict[str, Cell] = {}
        #: Crashes and stops of cells not yet registered (on_start failed), by cell name.
        self._early: dict[str, list[tuple[HostedCell, str, tuple[Any, ...]]]] = {}
        #: Every cell started, by name, as the supervisor finds it from the cell's thread
        #: (without ``_lock``: differentiate holds it while it waits for cells to stop).
        self._supervised: dict[str, _Hosted] = {}
        self._bound: dict[str, int] = {}
        self._daemon: _Hosted | None = None
        self._routes = _Routes()
        self._ticker = _Ticker(self)
        self._watch_config = watch_config
        self._config_min_interval = config_min_interval
        self._watcher: ConfigWatcher | None = None
        self._consumers: list[str] = []
        self._role_consumer: str | None = None
        self._stopped = threading.Event()
        # Held while a delivery is handed to cells, and to set _stopped: once stop() has set
        # it, no cell receives another delivery (see stop()).
        self._intake = threading.Lock()
        #: Set by membership (``guard_pauses``): role cells serve nothing after a pause until
        #: membership has judged this node's standing again (see ``cellframe.cell.fence``).
        self.fence: PauseFence | None = None
        self._held: list[_Held] = []
        self._held_lock = threading.Lock()
        self._ship_logs = ship_logs
        #: The handler shipping this process's log records to the sump (``ship_logs=True``).
        self.log_shipping: Any = None
        self._admission_lock = threading.Lock()  # see _Admission

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> Node:
        """Discover identity and role, differentiate, bind routes, and start consuming."""
        if self._ship_logs and self.log_shipping is None:
            self._start_log_shipping()  # first: the start itself is in the sump
        role = self._initial_role
        config = None
        if self.resolver is not None:
            config = self.resolver.node_config(self.name)
            self.settings = dict(config.settings)
            role = role if role is not None else config.role
            if self._given_supervision is None:
                self.supervision = SupervisionPolicy.from_settings(
                    *self._cluster_settings(), self.settings)
        self.transport.declare_queue(self.queue, exclusive=True)
        if self.resolver is not None:
            self._declare_role_queues()
        for key in (node_key(self.name), ALL):
            self._bind_node(key)
        read("nil")  # builds the reader's parser here, not on the I/O thread at a delivery
        with self._lock:
            self._daemon = self._host(NodeDaemon, f"{self.name}-daemon", node=self)
            for cls in self._system_classes:
                hosted = self._host(cls, f"{self.name}-{cls.__name__.lower()}")
                self._system[hosted.cell.cell_name] = hosted
            self._reroute()
        self.started_at = time.time()
        self.differentiate(role)
        self._consumers.append(self.transport.consume(
            self.queue, self._on_node_delivery, prefetch=NODE_QUEUE_PREFETCH, inline=True))
        self._ticker.start()
        if config is not None and self._watch_config:
            assert self.resolver is not None  # the config was read from it
            self._watcher = ConfigWatcher(
                self.resolver, self.name, self._on_config_change, initial=config,
                min_interval=self._config_min_interval,
            )
            self._watcher.start()
        self.emit("started", role=self.role)
        return self

    def _start_log_shipping(self) -> None:
        from . import logship  # it imports the log sump's cell; only nodes that ship pay

        shipping = [h for h in logging.getLogger().handlers if isinstance(h, logship.SumpHandler)]
        if shipping:
            raise ConfigError(f"node {self.name}: this process already ships its logs as node "
                              f"{shipping[0].node}: one node per process may (ship_logs)")
        self.log_shipping = logship.install(self.transport, self, signer=self.signer)

    def _stop_log_shipping(self) -> None:
        from . import logship

        shipping, self.log_shipping = self.log_shipping, None
        if shipping is not None:
            log.info("node %s stopped; log shipping %s", self.name, shipping.counters())
            logship.uninstall(shipping)

    def _cluster_settings(self) -> list[dict[str, str]]:
        assert self.resolver is not None
        try:
            return [dict(self.resolver.cluster_intent().settings)]
        except ConfigError:
            return []

    def _declare_role_queues(self) -> None:
        """Declare the durable queue of every role the cluster intends, so that messages to a
        role wait for it even before any node plays it."""
        assert self.resolver is not None  # start() calls this only when there is one
        try:
            roles = self.resolver.cluster_intent().roles
        except ConfigError as error:
            log.warning("%s: no cluster intent to declare role queues from: %s", self.name, error)
            return
        for role in roles:
            self._declare_role_queue(role)

    def _declare_role_queue(self, role: str) -> str:
        queue = self.queue_prefix + role_key(role)
        self.transport.declare_queue(queue, durable=True)
        self.transport.bind(queue, role_key(role))
        return queue

    def _on_config_change(self, old: NodeConfig | None, new: NodeConfig) -> None:
        """DNS changed under a running node: take the new settings (every running cell hears
        of them), and the new role."""
        self.settings = dict(new.settings)
        self.emit("reconfigured", role=new.role)
        if old is None or old.role != new.role:
            self.differentiate(new.role)
        with self._lock:
            hosted = self._all_hosted()
        for each in hosted:  # cells started just now already have them: a no-op for those
            try:
                each.ref.tell(SettingsChanged(dict(new.settings)))
            except pykka.ActorDeadError:
                pass

    def _host(self, cls: type[Cell], name: str, **kwargs: Any) -> _Hosted:
        """Start a cell with this node as its host and bind its routes."""
        host: CellHost = self  # mypy checks here that a Node is all a cell may ask of its host
        if cls.durable:
            kwargs["journal"] = self.journal

        def start() -> pykka.ActorRef[Any]:
            return cls.start(name, host=host, diagnostic=self.diagnostic,
                             dedup_capacity=self.dedup_capacity, settings=self.settings, **kwargs)

        ref = start()
        with self._intake:  # against a crash in on_start, reported from the cell's thread
            hosted = _Hosted(ref, self._attached.pop(name), start=start,
                             intensity=RestartIntensity(self.supervision))
            self._supervised[name] = hosted
            early = self._early.pop(name, [])
        hosted.patterns = hosted.cell.cell_bindings(self.name, self.role)
        for pattern in [cell_key(name), *hosted.patterns]:
            self._bind_node(pattern)
        self._ticker.add(hosted)
        self._replay(early)
        return hosted

    def _held_back(self, cell: HostedCell, event: str, *args: Any) -> bool:
        """Whether ``cell`` is still starting (created, not yet registered): then its crash or
        stop, reported from its own thread when ``on_start`` failed, waits for ``_replay``
        once the node has registered it, instead of finding no supervisor."""
        with self._intake:
            if self._attached.get(cell.cell_name) is not cell:
                return False
            self._early.setdefault(cell.cell_name, []).append((cell, event, args))
            return True

    def _replay(self, early: list[tuple[HostedCell, str, tuple[Any, ...]]]) -> None:
        for cell, event, args in early:
            getattr(self, event)(cell, *args)

    def _unhost(self, hosted: _Hosted) -> None:
        with self._intake:
            hosted.condition = "stopped"
            pending, hosted.pending = hosted.pending, []
        self._give_back(hosted, pending, "cell stopped")
        self._ticker.remove(hosted)
        for pattern in [cell_key(hosted.cell.cell_name), *hosted.patterns]:
            self._unbind_node(pattern)
        hosted.ref.stop(block=True, timeout=10)

    def _bind_node(self, pattern: str) -> None:
        """Bind the node queue to ``pattern`` (reference-counted: cells may share one)."""
        self._bound[pattern] = self._bound.get(pattern, 0) + 1
        if self._bound[pattern] == 1:
            self.transport.bind(self.queue, pattern)

    def _unbind_node(self, pattern: str) -> None:
        count = self._bound.get(pattern, 0) - 1
        if count > 0:
            self._bound[pattern] = count
            return
        self._bound.pop(pattern, None)
        self.transport.unbind(self.queue, pattern)

    def stop(self) -> None:
        """Finish or give back every message in flight, then stop every cell.

        Deliveries that arrive from now on stay unsettled; the cells apply what their
        mailboxes already hold, and those acks reach the broker; then the consumers close, so
        the broker requeues the rest for another node. Each message is applied here or there,
        not both: closing the consumers first requeued messages still waiting in a mailbox,
        which were then applied here and by the next node as well (found by
        tests/test_node_processes.py under SIGTERM).
        """
        with self._intake:
            if self._stopped.is_set():
                return
            self._stopped.set()
        self._ticker.stop()
        self.monitors.close()
        if self._watcher is not None:
            self._watcher.stop()
        self.emit("stopping", role=self.role)
        with self._lock:
            holding = self._all_hosted()
        self._drain_mailboxes(holding)
        for tag in [*self._consumers, *([self._role_consumer] if self._role_consumer else [])]:
            try:
                self.transport.cancel(tag)
            except Exception:  # the transport may already be gone; stopping must still finish
                log.debug("cancel %s failed while stopping %s", tag, self.name, exc_info=True)
        with self._lock:
            hosted = self._stop_order()
            self._cells.clear()
            self._system.clear()
            self._reroute()
        for h in hosted:
            h.ref.stop(block=True, timeout=10)
        self._delete_queue()
        self._stop_log_shipping()  # last: the cells' goodbyes are shipped too

    def _delete_queue(self) -> None:
        """Delete the node's own queue once its cells have said goodbye: what is sent to this
        node from now on (a probe, a message to one of its cells) comes back unroutable at
        once, instead of waiting in a queue nobody reads until the transport closes."""
        try:
            self.transport.delete_queue(self.queue)
        except Exception:  # the transport may already be gone, and the queue with it
            log.debug("deleting queue %s failed while stopping %s", self.queue, self.name,
                      exc_info=True)
        self._bound.clear()

    def __enter__(self) -> Node:
        if self.started_at is None:
            try:
                self.start()
            except BaseException:
                self.stop()  # undo what start did before it failed: cells, consumers, queue
                raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @staticmethod
    def _drain_mailboxes(hosted: list[_Hosted], timeout: float = 10.0) -> None:
        """Return once every cell has handled what was in its mailbox (a read of its state
        queues behind it)."""
        futures = []
        for h in hosted:
            try:
                futures.append(h.ref.ask(ProxyGetAttr(attr_path=("cell_state",)), block=False))
            except pykka.ActorDeadError:
                continue
        deadline = time.monotonic() + timeout
        for future in futures:
            try:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # a dead or stuck cell: its deliveries go back to the broker
                log.debug("a cell did not drain its mailbox while stopping", exc_info=True)

    def _all_hosted(self) -> list[_Hosted]:
        daemon = [self._daemon] if self._daemon else []
        return [*daemon, *self._system.values(), *self._cells.values()]

    def _stop_order(self) -> list[_Hosted]:
        """The reverse of the start order, as an OTP supervisor stops its children: the role's
        cells first, while the node is still a member (a web cell drains with its peers still
        routing to it), then the system cells, last started first stopped (so membership says
        goodbye only when the role's cells have), then the daemon. Membership stopping first
        made the proxy delete a web cell, cutting its requests in flight, before the cell had
        drained (found by test_web_haproxy under CI's load)."""
        daemon = [self._daemon] if self._daemon else []
        return [*self._cells.values(), *reversed(self._system.values()), *daemon]

    def _reroute(self) -> None:
        """Publish a new routing snapshot; call it, holding ``_lock``, after any change of
        the hosted cells."""
        self._routes = _Routes(self._daemon, tuple(self._all_hosted()),
                               tuple(self._cells.values()))

    # -- differentiation --------------------------------------------------------------------

    def differentiate(self, role: str | None) -> bool:
        """Become ``role`` (None: a spare stem node). Idempotent: the same role is a no-op."""
        if role is not None:
            validate_name(role, "role")
            classes = self.registry.cells_for(role)
            if self._quarantine.get(role, 0.0) > time.monotonic():
                raise ClusterError(f"{self.name} gave up {role} when a cell failed; "
                                   "it may not take it again before its quarantine ends")
        with self._lock:
            if role == self.role and (role is None or self._cells):
                return False
            old = self.role
            self._retire_role_cells()
            self.role = role
            if role is not None:
                try:
                    self._start_role_cells(role, classes)
                except CellframeError as error:
                    self.role = None  # a spare again: the cells that started were stopped
                    self.emit("differentiate-failed", role=role, previous=old, error=str(error))
                    raise
        self.emit("differentiated", role=role, previous=old)
        return True

    def _start_role_cells(self, role: str, classes: list[type]) -> None:
        """Start ``role``'s cells; if one fails to start (its app does not import, its port is
        taken), stop those that did and raise a CellframeError that says why."""
        for cls in classes:
            name = self.name if len(classes) == 1 else f"{self.name}-{cls.__name__.lower()}"
            try:
                hosted = self._host(cls, name)
            except Exception as exc:
                self._attached.pop(name, None)
                started, self._cells = list(self._cells.values()), {}
                for hosted in started:
                    self._unhost(hosted)
                if isinstance(exc, CellframeError):
                    raise
                raise ConfigError(f"role {role}: {cls.__name__} failed to start: {exc!r}") from exc
            self._cells[hosted.cell.cell_name] = hosted
        self._reroute()
        self._bind_node(each_key(role))
        role_queue = self._declare_role_queue(role)
        self._role_consumer = self.transport.consume(role_queue, self._on_role_delivery,
                                                     inline=True)

    def _retire_role_cells(self) -> None:
        if self._role_consumer is not None:
            self.transport.cancel(self._role_consumer)
            self._role_consumer = None
        if self.role is not None:
            self._unbind_node(each_key(self.role))
        retiring = list(self._cells.values())
        self._cells.clear()
        self._reroute()
        for hosted in retiring:
            self._unhost(hosted)

    def attach_cell(self, cell: HostedCell) -> None:
        """Called by each Cell created with this node as its host, so the node can read its
        cells' snapshots without ever waiting on them."""
        assert isinstance(cell, Cell), f"{cell!r} is not a Cell"  # only Cells take a host
        self._attached[cell.cell_name] = cell

    @property
    def broker_connected(self) -> bool:
        return bool(getattr(self.transport, "connected", True))

    @property
    def broker_address(self) -> str | None:
        return getattr(self.transport, "broker_address", None)

    def guard_pauses(self, gap: float) -> PauseFence:
        """Fence the role cells after a pause longer than ``gap`` (membership calls it)."""
        if self.fence is None or self.fence.gap != gap:
            self.fence = PauseFence(gap)
        return self.fence

    def clear_fence(self, generation: int) -> None:
        """Stop holding role deliveries; hand them on, or give them back if the role changed."""
        fence = self.fence
        if fence is None:
            return
        with self._held_lock:
            if not fence.clear(generation):
                return
            held, self._held = self._held, []
        for item in held:
            role_cells = self._routes.role_cells
            if item.role == self.role and all(t in role_cells for t in item.targets):
                self._tell(item.targets, item.message, item.delivery,
                           from_role_queue=item.from_role_queue, trail=item.trail)
            else:
                self._give_back_fenced(item.delivery, item.from_role_queue,
                                       "the node's role changed while it was paused", item.trail)

    def cell_bind(self, cell: str, pattern: str) -> None:
        """Bind ``pattern`` to this node's queue and route it to hosted cell ``cell``."""
        with self._lock:
            hosted = self._hosted_named(cell)
            if hosted is None or pattern in hosted.patterns:
                return
            hosted.patterns = [*hosted.patterns, pattern]  # replaced whole: read without a lock
            self._bind_node(pattern)

    def cell_unbind(self, cell: str, pattern: str) -> None:
        with self._lock:
            hosted = self._hosted_named(cell)
            if hosted is None or pattern not in hosted.patterns:
                return
            hosted.patterns = [p for p in hosted.patterns if p != pattern]
            self._unbind_node(pattern)

    def _hosted_named(self, cell: str) -> _Hosted | None:
        return next((h for h in self._all_hosted() if h.cell.cell_name == cell), None)

    def renew_incarnation(self, above: int) -> int:
        """Start a new life, numbered above ``above`` and the current one (membership does,
        to refute news of this node's death); returns it."""
        self.incarnation = max(self.incarnation, above) + 1
        return self.incarnation

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

    def _restart(self, hosted: _Hosted) -> None:
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

    def _restart_siblings(self, crashed: _Hosted) -> None:
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

    def _escalate(self, hosted: _Hosted) -> None:
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

    def _give_back(self, hosted: _Hosted | None, items: list[Any], reason: str) -> None:
        """Refuse messages no cell will apply: role messages go back to their queue for
        another node, node messages to the dead letters with ``reason``."""
        for item in items:
            if type(item) is Inbound:
                item.refuse(reason, True)

    def _tell_monitors(self, hosted: _Hosted, reason: str) -> None:
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

    # -- receiving: on the transport's I/O thread, so never blocking and never taking _lock --

    def _on_node_delivery(self, delivery: Delivery) -> None:
        decoded = self._decode(delivery, "node")
        if decoded is None:
            return
        message, trail = decoded
        key = delivery.routing_key
        if key.startswith("cell."):
            targets = self._cells_named(key[5:])
        else:
            targets = self._cells_bound_to(key) or self._cells_for_verb(message.expr)
        self._tell(targets, message, delivery, from_role_queue=False, trail=trail)

    def _on_role_delivery(self, delivery: Delivery) -> None:
        decoded = self._decode(delivery, "role")
        if decoded is None:
            return
        message, trail = decoded
        cells = self._routes.role_cells
        verb = head_verb(message.expr)
        declaring = [h for h in cells if verb in h.cell.cell_verbs()]
        self._tell(declaring or list(cells[:1]), message, delivery, from_role_queue=True,
                   trail=trail)

    def _cells_named(self, name: str) -> list[_Hosted]:
        return [h for h in self._routes.everyone if h.cell.cell_name == name]

    def _cells_bound_to(self, key: str) -> list[_Hosted]:
        return [h for h in self._routes.everyone
                if any(topic_matches(p, key) for p in h.patterns)]

    def _cells_for_verb(self, expr: Any) -> list[_Hosted]:
        routes = self._routes
        daemon = routes.daemon
        if daemon is None:
            return []
        verb = head_verb(expr)
        if verb is None or verb in daemon.cell.cell_verbs():
            return [daemon]
        declaring = [h for h in routes.role_cells if verb in h.cell.cell_verbs()]
        return declaring or [daemon]

    def _tell(self, targets: list[_Hosted], message: Message, delivery: Delivery, *,
              from_role_queue: bool = False, trail: AuditTrail | None = None) -> None:
        """Hand a delivery to its cells; a cell that is down has it held for its restart.
        ``from_role_queue``: a refused message may go back to its queue (a role queue, where
        another node may apply it), else it is dead-lettered (this node's own queue).
        ``trail``: an operator's message, audited once settled (``cellframe.node.audit``)."""
        if not targets:
            self._refuse(delivery, "no cell here to receive it", message.reply_to)
            if trail is not None:
                trail.given_back("no cell here to receive it")
            return
        admit = None
        fence = self.fence
        if fence is not None and all(t in self._routes.role_cells for t in targets):
            with self._held_lock:
                generation, holding = fence.stamp()
                if holding:
                    self._held.append(_Held(targets, message, delivery, from_role_queue,
                                            self.role, trail))
                    return
            admit = _Admission(self, fence, generation, delivery, from_role_queue, trail)
        with self._intake:
            if self._stopped.is_set():
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
            for hosted in targets:
                self._hand(hosted, Inbound(message, settle, refuse, admit, report), refuse)

    @staticmethod
    def _hand(hosted: _Hosted, inbound: Inbound, refuse: Callable[[str, bool], None]) -> None:
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
        if trail is not None:
            trail.given_back(why)
        reason = f"{self.name}: not applied: {why}"
        log.info("%s (message %s)", reason, delivery.envelope.message_id)
        try:
            delivery.reject(requeue=from_role_queue, reason=reason)
        except Exception:  # a consumer closed meanwhile: the broker requeued it already
            log.debug("%s: giving back %s failed", self.name, delivery.envelope.message_id,
                      exc_info=True)

    def _refusal(self, delivery: Delivery, message: Message, settle: Callable[[], None],
                 alone: bool, requeue: bool) -> Callable[[str, bool], None]:
        """The ``refuse`` of an Inbound: settle the delivery without applying it."""
        return _Refusal(self, delivery, message, settle, alone, requeue)

    def _decode(self, delivery: Delivery, where: str) -> tuple[Message, AuditTrail | None] | None:
        """Pass the delivery through the gate (size, signature, replay, read, capabilities);
        refuse it with the reason, or make it a message for the cells (with its audit trail
        if an operator key sent it)."""
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
            self._refuse(delivery, f"refused: {error}", envelope.reply_to if verified else None,
                         reason=error.reason)
            if not verified:
                self._notice(envelope, error.reason)
            self._audit(delivery, getattr(error, "key", None), None, f"refused: {error.reason}")
            return None
        key = admitted.key
        trail = (AuditTrail(self.emit, delivery, key, admitted.verb)
                 if key is not None and key.kind == "operator" else None)
        return Message(admitted.expr, id=envelope.message_id, reply_to=envelope.reply_to,
                       sender=envelope.sender, sent_at=envelope.timestamp,
                       correlation_id=envelope.correlation_id,
                       trace=None if tracing.active is None
                       else tracing.active.on_deliver(envelope, delivery.routing_key)), trail

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

    def _audit(self, delivery: Delivery, key: Any, verb: str | None, result: str) -> None:
        """An ``event.audit.<node>`` for a message the gate refused (one it admits from an
        operator key is audited once settled: ``cellframe.node.audit``)."""
        if self.signer is None:
            return
        self.emit("audit", key=getattr(key, "id", None), target=delivery.routing_key,
                  verb=verb, message_id=str(delivery.envelope.message_id)[:200], result=result)

    def _refuse(self, delivery: Delivery, detail: str, reply_to: str | None = None, *,
                reason: str = "no-cell", dead_letter: bool = False) -> None:
        """Count and log a refused delivery; dead-letter it in diagnostic mode (or always, with
        ``dead_letter``: a message meant for something else), else drop it."""
        self.counters.rejected += 1
        refused = self.counters.refused
        refused[reason] = refused.get(reason, 0) + 1
        log.warning("%s: %s (message %r)", self.name, detail,
                    str(delivery.envelope.message_id)[:200])
        if self.diagnostic or dead_letter:
            delivery.reject(requeue=False, reason=f"{self.name}: {reason}: {detail}")
        else:
            delivery.ack()
        if reply_to:
            self.send(reply_to, [Symbol("error"), Keyword("node"), self.name, Keyword("id"),
                                 delivery.envelope.message_id, Keyword("reason"), detail],
                      correlation_id=request_id(delivery.envelope))

    # -- sending (the Outbox of the hosted cells) ------------------------------------------

    def send(self, target: str, expr: Any, *, reply_to: str | None = None,
             sender: str | None = None,
             on_return: Callable[[Envelope, str], None] | None = None,
             correlation_id: str | None = None) -> None:
        """Publish ``expr`` to ``target``; ``on_return`` (any thread) hears if it was unroutable
        (membership uses that as a probe: a dead node's queue is gone); ``correlation_id``
        names the message a call-back answers."""
        envelope = envelope_for(expr, sender=sender or self.name, reply_to=reply_to,
                                target=target, correlation_id=correlation_id)
        if self.signer is not None:
            envelope = self.signer.sign(envelope, target, key=self.gate.reply_key(target))
        self.counters.sent += 1
        self.transport.publish(target, envelope, on_return=on_return or self._on_return,
                               persistent=is_persistent(target))

    def dead_letter(self, message: Message, reason: str) -> None:
        envelope = Envelope(write(message.expr).encode(), message_id=message.id,
                            timestamp=message.sent_at, reply_to=message.reply_to,
                            sender=message.sender, correlation_id=message.correlation_id)
        self.transport.dead_letter(envelope, reason)

    def _on_return(self, envelope: Envelope, reason: str) -> None:
        self.counters.unroutable += 1
        if envelope.headers.get(_EVENT_HEADER):
            return  # events nobody listens to are fine: a log sump is optional
        log.warning("%s: message %s was unroutable: %s", self.name, envelope.message_id, reason)

    def emit(self, kind: str, **fields: Any) -> None:
        """Publish a healing/membership event on ``event.<kind>.<node>`` (fire and forget)."""
        payload = {"node": self.name, "time": time.time(), **fields}
        if log.isEnabledFor(logging.INFO):  # the node's life in its log (and the sump's)
            log.info("%s: %s %s", self.name, kind,
                     " ".join(f"{key}={value}" for key, value in fields.items()))
        self.monitors.heard_event(kind, payload)
        for listener in list(self.listeners):
            listener(kind, payload)
        expr = [Symbol("event"), Keyword("kind"), kind]
        for key, value in payload.items():
            expr += [Keyword(key.replace("_", "-")), value]
        try:
            key = event_key(kind, self.name)
            envelope = envelope_for(expr, sender=self.name, headers={_EVENT_HEADER: 1})
            if self.signer is not None:  # signed for its key, but not traced (no target given)
                envelope = self.signer.sign(envelope, key)
            self.transport.publish(key, envelope, on_return=self._on_return)
        except Exception:  # an event is informational; failing to publish it must not stop the node
            log.debug("%s: event %s not published", self.name, kind, exc_info=True)

    # -- introspection ----------------------------------------------------------------------

    def set_diagnostic(self, enabled: bool) -> None:
        self.diagnostic = enabled
        with self._lock:
            for hosted in self._all_hosted():
                hosted.cell.cell_diagnostic = enabled

    def cells(self) -> dict[str, Cell]:
        """The hosted role cells by name (read-only use: they live on their own threads)."""
        with self._lock:
            return {name: h.cell for name, h in self._cells.items()}

    def load(self) -> float | None:
        """The busiest role cell's ``cell_load()`` (None: none measures it). Read from the
        routes snapshot, not under the lock: membership asks every heartbeat, and
        ``differentiate`` holds the lock while a web cell drains, for seconds."""
        loads = [load for hosted in self._routes.role_cells
                 if (load := hosted.cell.cell_load()) is not None]
        return max(loads) if loads else None

    def status(self) -> dict[str, Any]:
        """A snapshot of the node: name, role, cells with state and counters."""
        with self._lock:
            cells = [{**h.cell.cell_snapshot(), "condition": h.condition, "restarts": h.restarts}
                     for h in [*self._system.values(), *self._cells.values()]]
        return {"node": self.name, "role": self.role, "started_at": self.started_at,
                "diagnostic": self.diagnostic, "counters": self.counters.as_dict(), "cells": cells}


class _Admission:
    """What a role cell asks just before applying a delivery stamped ``generation``: one
    decision for all the cells it went to, and the delivery given back at most once.

    An object with slots and the node's lock, where it was a closure over a list and a lock of
    its own, made on the I/O thread for every delivery to a role cell: ``Node._tell`` for one
    cell behind the fence (the bench's counting node) took 7.1 us of that thread's CPU with the
    closures (this and ``_Refusal``'s), 4.0 us with the objects, the cell applying the
    messages on its own thread meanwhile. One lock for all the node's deliveries costs no
    concurrency: the cells that ask take the fence's own lock one at a time anyway.
    """

    __slots__ = ("_decided", "_delivery", "_fence", "_from_role_queue", "_generation",
                 "_lock", "_node", "_trail")

    def __init__(self, node: Node, fence: PauseFence, generation: int, delivery: Delivery,
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
    """``Node._refusal``'s answer, ``refuse(reason, again)``: a delivery that went to one cell
    is rejected (given back to its queue if ``again`` and it came from a role queue); one of
    several cells refusing dead-letters a copy and counts down, the others still apply it.

    An object with slots where it was a closure: see ``_Admission`` for what the two saved.
    """

    __slots__ = ("_alone", "_delivery", "_message", "_node", "_requeue", "_settle")

    def __init__(self, node: Node, delivery: Delivery, message: Message,
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


def _notice_dropped(reason: str, requeue: bool) -> None:
    """The ``refuse`` of a monitor's notice: its watcher failed or stopped before hearing it,
    and nobody else is owed it."""
    log.debug("a monitor's notice dropped: %s", reason)


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


class _Ticker:
    """One thread per node that puts ``(tick)`` in the mailbox of every cell that asks for it."""

    def __init__(self, node: Node):
        self._node = node
        self._due: dict[int, tuple[float, _Hosted]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ticker-{node.name}", daemon=True)
        self._count = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    def add(self, hosted: _Hosted) -> None:
        interval = hosted.cell.cell_tick_interval()
        if interval:
            with self._lock:
                self._due[id(hosted)] = (time.monotonic() + interval, hosted)
            self._wake.set()

    def remove(self, hosted: _Hosted) -> None:
        with self._lock:
            self._due.pop(id(hosted), None)

    def _run(self) -> None:
        tick = [Symbol("tick")]
        while not self._stopped.is_set():
            fence = self._node.fence
            if fence is not None:
                fence.beat()  # before any tick: a pause is noticed before membership judges
            now = time.monotonic()
            with self._lock:
                entries = list(self._due.items())
            next_due = now + 1.0
            for key, (due, hosted) in entries:
                if due <= now:
                    self._count += 1
                    try:
                        hosted.ref.tell(Message(tick, id=f"tick-{self._node.name}-{self._count}"))
                    except pykka.ActorDeadError:
                        if hosted.condition == "stopped":
                            self.remove(hosted)
                            continue
                        # down for a restart: it ticks again once restarted
                    due = now + (hosted.cell.cell_tick_interval() or 1.0)
                    with self._lock:
                        if key in self._due:
                            self._due[key] = (due, hosted)
                next_due = min(next_due, due)
            self._wake.wait(max(0.0, next_due - time.monotonic()))
            self._wake.clear()
