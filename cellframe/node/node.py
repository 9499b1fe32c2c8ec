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
from typing import Any, ClassVar

import pykka
from pykka.messages import ProxyGetAttr

from ..cell.cell import Cell, SettingsChanged
from ..cell.durable import CellJournal
from ..cell.fence import PauseFence
from ..cell.host import CellHost, HostedCell
from ..cell.statemachine import transition
from ..config.txtconfig import NodeConfig
from ..config.watchers import ConfigWatcher
from ..errors import ArityError, CellframeError, ClusterError, ConfigError
from ..failures import LineBudget, log_failure
from ..language.printer import write
from ..language.reader import read
from ..language.symbols import Keyword, Symbol
from ..roles.registry import RoleRegistry
from ..transports.base import Transport, taken_back
from ..wire.envelope import Envelope, Message, envelope_for
from ..wire.routing import (
    ALL,
    cell_key,
    each_key,
    event_key,
    is_persistent,
    node_key,
    role_key,
    validate_name,
)
from .answering import AnsweringSiblings
from .counters import NodeCounters
from .gate import MAX_MESSAGE_ID, Gate
from .hosted import HeldDelivery, Hosted, Routes
from .monitors import Monitors
from .receiving import Receiving
from .replays import MAX_ASKED, SETTING, Questions, ReplayGossip, message_budgets, replays_mode
from .siblings import ANSWERS, SiblingCheck
from .status import status_reply
from .supervising import Supervising
from .supervisor import RestartIntensity, SupervisionPolicy
from .ticker import Ticker

__all__ = ["Node", "NodeCounters", "NodeDaemon"]

log = logging.getLogger(__name__)

#: The header that marks an event (nobody listening to one is fine: a log sump is optional).
_EVENT_HEADER = "x-cellframe-event"
#: Membership's events that end a member's life: it is no longer asked about a message.
_GONE = frozenset({"down", "left"})
#: Default cap on an incoming message body, checked before anything reads it.
MAX_MESSAGE_BYTES = 64 * 1024

#: Unsettled deliveries from the node's own queue. It holds only this node's messages, so a
#: wide window takes work from no other node; against the transport's default of 256 it
#: measured 0.43-0.46x raw pika instead of 0.37-0.41x (three runs each, interleaved), the
#: node spending 70-106 us of CPU a message instead of 89-111 us: pika reads larger runs of
#: deliveries at a time. Role queues keep the default: there a narrow window spreads work
#: across the role's nodes.
NODE_QUEUE_PREFETCH = 1000
#: Seconds a stopping node waits for its cells to drain their mailboxes, then for each to stop.
CELL_STOP_TIMEOUT = 10.0



class NodeDaemon(Cell):
    """The management cell of a node: status, ping, differentiation, diagnostic mode, and
    the monitors other nodes ask of it or answer."""

    states = ("running",)
    initial = "running"
    #: Monitors between nodes (``cellframe.node.monitors``): only nodes ask and tell them, a
    #: node asking with ``:by``, a watched cell's node telling with ``:node``.
    node_verbs: ClassVar[Mapping[str, str | None]] = {
        "monitor": "by", "demonitor": "by", "cell-down": "node",
        "was-applied": "by", "applied-answer": "node", "replays-seen": "by",
        "were-admitted": "by", "admitted-answers": "node"}

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

    @transition("was-applied")
    def was_applied(self, message: str, role: str, by: str) -> None:
        """Another instance of the role (``by``) holds a redelivered ``message``: did this
        node apply it? (``cellframe.node.siblings``)"""
        if not all(isinstance(v, str) for v in (message, role, by)) or len(message) > 200:
            raise ArityError("was-applied takes :message :role :by, all strings")
        self.node.answer_sibling(by, role, message)

    @transition("replays-seen")
    def replays_seen(self, by: str, entries: Any) -> None:
        """Another instance of this node's role (``by``) admitted these signed role messages:
        a copy replayed to this node is refused (``cellframe.node.replays``)."""
        if not isinstance(by, str):
            raise ArityError("replays-seen takes :by NODE :entries '(...)")
        try:
            self.node.replay_gossip.heard(by, entries)
        except ValueError as error:
            raise ArityError(str(error)) from error

    @transition("were-admitted")
    def were_admitted(self, by: str, entries: Any) -> None:
        """Another instance of the role (``by``) holds copies of signed role messages: did
        this node's gate admit them? (``cellframe.node.replays``)"""
        if not isinstance(by, str):
            raise ArityError("were-admitted takes :by NODE :entries '((KEY ID ROUTE) ...)")
        self.node.answer_replays(by, _asked(entries, 3, "were-admitted"))

    @transition("admitted-answers")
    def admitted_answers(self, node: str, answers: Any) -> None:
        """Another instance of the role (``node``) answers ``were-admitted``."""
        if not isinstance(node, str):
            raise ArityError("admitted-answers takes :node NODE :answers '(...)")
        checked = _asked(answers, 4, "admitted-answers")
        if any(answer[3] not in ANSWERS for answer in checked):
            raise ArityError(f"admitted-answers: each answer is one of {sorted(ANSWERS)}")
        self.node.heard_replay_answers(node, checked)

    @transition("applied-answer")
    def applied_answer(self, message: str, node: str, answer: str) -> None:
        """Another instance of the role (``node``) answers ``was-applied``."""
        if not all(isinstance(v, str) for v in (message, node, answer)) or answer not in ANSWERS:
            raise ArityError(f"applied-answer takes :message :node :answer, the answer one of "
                             f"{sorted(ANSWERS)}")
        self.node.siblings.heard(node, message, answer)

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


class Node(Supervising, Receiving, AnsweringSiblings):
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
        journal: CellJournal | Callable[[Node], CellJournal] | None = None,
        ship_logs: bool = False,
        sibling_timeout: float = 2.0,
        replays_across_role: str | None = None,
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
        #: What this node's gate admits from its role queue, told to the role's other instances
        #: for their replay caches, and theirs heard (signed clusters only).
        self.replay_gossip = ReplayGossip(
            self.name, self.gate.replays, self._send_quietly,
            tellers=self.replay_tellers, budget=message_budgets(max_message_bytes)[1],
            on_heard=self.heard_replay_news,
            **({} if signer is None else {"max_life": signer.max_age + signer.max_skew}))
        self._notices = (0, 0)
        self.diagnostic = diagnostic
        self.max_message_bytes = max_message_bytes
        self.dedup_capacity = dedup_capacity
        self.settings: dict[str, str] = {}
        self.role: str | None = None
        self._given_supervision = supervision
        #: Where durable cells keep their state (None: a durable cell is refused at start).
        #: Given as a source (``shard_journal``, or DNS ``durable.journal=shards``), it is made
        #: at start, on this node's connection, if the node may play a durable cell, and closed
        #: at stop.
        self.journal = journal if isinstance(journal, CellJournal) else None
        self._journal_source = journal if callable(journal) and self.journal is None else None
        self._journal_made = False
        #: How this node restarts its cells (DNS ``supervision.*`` when not given).
        self.supervision = supervision or SupervisionPolicy()
        #: Roles this node gave up past a cell's restart intensity, until (monotonic) when.
        self._quarantine: dict[str, float] = {}
        #: Who among the cells here watches which cell or node (``cellframe.node.monitors``).
        self.monitors = Monitors(self.name, self._tell_watcher, self._send_notice,
                                 self._new_notice_id)
        self._notices_told = itertools.count(1)
        self.counters = NodeCounters()
        # Role deliveries are left to the broker while it is set (set holding _intake).
        self._leaving_role = False
        self.lines = LineBudget()  # refusals its senders cause, logged a few a minute
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
        self._cells: dict[str, Hosted] = {}
        self._system: dict[str, Hosted] = {}
        self._attached: dict[str, Cell] = {}
        #: Crashes and stops of cells not yet registered (on_start failed), by cell name.
        self._early: dict[str, list[tuple[HostedCell, str, tuple[Any, ...]]]] = {}
        #: Every cell started, by name, as the supervisor finds it from the cell's thread
        #: (without ``_lock``: differentiate holds it while it waits for cells to stop).
        self._supervised: dict[str, Hosted] = {}
        self._bound: dict[str, int] = {}
        self._daemon: Hosted | None = None
        self._routes = Routes()
        self._ticker = Ticker(self.name, lambda: self.fence)
        self._watch_config = watch_config
        self._config_min_interval = config_min_interval
        self._watcher: ConfigWatcher | None = None
        self._consumers: list[str] = []
        self._role_consumer: str | None = None
        #: Role consumers closed so far: a role delivery held across a close went back to its
        #: queue then, so a decision about it must not hand it to cells (``Receiving``).
        self._role_consumers_closed = 0
        self._stopped = threading.Event()
        # Held while a delivery is handed to cells, and to set _stopped: once stop() has set
        # it, no cell receives another delivery (see stop()).
        self._intake = threading.Lock()
        #: Set by membership (``guard_pauses``): role cells serve nothing after a pause until
        #: membership has judged this node's standing again (see ``cellframe.cell.fence``).
        self.fence: PauseFence | None = None
        self._held: list[HeldDelivery] = []
        self._held_lock = threading.Lock()
        self._ship_logs = ship_logs
        #: The handler shipping this process's log records to the sump (``ship_logs=True``).
        self.log_shipping: Any = None
        self._admission_lock = threading.Lock()  # see _Admission
        #: Redelivered role messages held until the role's other instances say whether they
        #: applied them; ``sibling_timeout``: the first wait for an answer.
        self.siblings = SiblingCheck(self.name, self._ask_sibling, self.role_siblings,
                                     timeout=sibling_timeout,
                                     max_wait=max(8 * sibling_timeout, 16.0))
        #: ``ask``: a signed role message is held until the role's other live instances said
        #: whether they admitted a copy (``cellframe.node.replays``); ``gossip``: not held.
        #: Given, else DNS ``replays.across-role`` at start, else ``ask``.
        self._given_replays = replays_across_role
        self.replays_across_role = replays_mode(
            {} if replays_across_role is None else {SETTING: replays_across_role})
        # A sibling that does not answer (one of an older version, which has no such verb; a
        # stuck node) holds a role message back for 4 timeouts at most, not forever: the
        # replay check is not worth a role that stops.
        self.replay_check = SiblingCheck(self.name, self._ask_replay, self.role_siblings,
                                         timeout=sibling_timeout,
                                         max_wait=max(8 * sibling_timeout, 16.0),
                                         give_up=4 * sibling_timeout, stand_in=False)
        self.questions = Questions(self._send_replay_questions, patience=sibling_timeout / 4,
                                   budget=message_budgets(max_message_bytes)[0])

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
            if self._given_supervision is None or self._given_replays is None:
                layers = [*self._cluster_settings(), self.settings]  # one DNS question
                if self._given_supervision is None:
                    self.supervision = SupervisionPolicy.from_settings(*layers)
                if self._given_replays is None:
                    self.replays_across_role = replays_mode(*layers)
        self.transport.declare_queue(self.queue, exclusive=True)
        if self.resolver is not None:
            self._declare_role_queues()
        self._make_journal()
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

    def _make_journal(self) -> None:
        """Make the journal from its source (given, or DNS ``durable.journal=shards``: the
        cluster's shard tier) if a role this node may play has a durable cell."""
        source = self._journal_source
        if self.journal is not None:
            return
        if source is None and self.resolver is not None:
            chosen = {**next(iter(self._cluster_settings()), {}), **self.settings}.get("durable.journal")
            if chosen == "shards":
                from .shard_journal import shard_journal  # loads the replication wire: only now

                source = shard_journal
            elif chosen is not None:
                log.warning("%s: durable.journal=%s is not a journal this node knows (shards)",
                            self.name, chosen[:40])
        if source is not None and any(getattr(cls, "durable", False)
                                      for role in self.registry.roles
                                      for cls in self.registry.cells_for(role)):
            self.journal = source(self)
            self._journal_made = True

    def _close_journal(self) -> None:
        journal, self._journal_made = self.journal, False
        close = getattr(journal.store, "close", None) if journal is not None else None
        if close is not None:
            try:
                close()
            except Exception:  # stopping must finish
                log.debug("%s: closing the journal's store failed", self.name, exc_info=True)

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

    def _host(self, cls: type[Cell], name: str, **kwargs: Any) -> Hosted:
        """Start a cell with this node as its host and bind its routes."""
        host: CellHost = self  # mypy checks here that a Node is all a cell may ask of its host
        if cls.durable:
            if self.journal is None:
                self._make_journal()  # DNS may not have answered when the node started
            kwargs["journal"] = self.journal

        def start() -> pykka.ActorRef[Any]:
            return cls.start(name, host=host, diagnostic=self.diagnostic,
                             dedup_capacity=self.dedup_capacity, settings=self.settings, **kwargs)

        ref = start()
        with self._intake:  # against a crash in on_start, reported from the cell's thread
            hosted = Hosted(ref, self._attached.pop(name), start=start,
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

    def _unhost(self, hosted: Hosted) -> None:
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
        mailboxes already hold, and those acks reach the broker (an operator's once the
        broker has confirmed its audit event); then the consumers close, so the broker
        requeues the rest for another node. Each message is applied here or there,
        not both: closing the consumers first requeued messages still waiting in a mailbox,
        which were then applied here and by the next node as well (found by
        tests/test_node_processes.py under SIGTERM).
        """
        with self._intake:
            if self._stopped.is_set():
                return
            self._stopped.set()
        self._ticker.stop()
        self.replay_gossip.close()
        self.monitors.close()
        self.siblings.close()  # what it held stays unsettled: the broker redelivers it
        self.replay_check.close()  # so does what it held for a replay check
        if self._watcher is not None:
            self._watcher.stop()
        self.emit("stopping", role=self.role)
        with self._lock:
            holding = self._all_hosted()
        self._drain_mailboxes(holding)
        self._drain_records(holding)
        self._drain_settlements()
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
            try:
                h.ref.stop(block=True, timeout=CELL_STOP_TIMEOUT)
            except pykka.Timeout:
                # Its inbox flooded (a heartbeat every microsecond, set in DNS) or an action
                # stuck: raising here left every cell after it running and the queue in place,
                # and ended `cellframe node` in a traceback. It dies with the process instead.
                log.error("%s: cell %s did not stop within %g s; stopping the others",
                          self.name, h.cell.cell_name, CELL_STOP_TIMEOUT)
        if self._journal_made:
            self._close_journal()
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
    def _drain_mailboxes(hosted: list[Hosted], timeout: float | None = None) -> None:
        """Return once every cell has handled what was in its mailbox (a read of its state
        queues behind it), or ``timeout`` (default ``CELL_STOP_TIMEOUT``) has passed."""
        timeout = CELL_STOP_TIMEOUT if timeout is None else timeout
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

    def _drain_records(self, hosted: list[Hosted], timeout: float = 10.0) -> None:
        """Return once what the durable cells applied is recorded and acknowledged: closing
        the role consumer before would send applied messages back to the role queue, and the
        role's other instances would apply them again, this node having left."""
        deadline = time.monotonic() + timeout
        for h in hosted:
            if not h.cell.cell_drain_records(max(0.0, deadline - time.monotonic())):
                log.warning("%s: %s's records still not durable while stopping", self.name,
                            h.cell.cell_name)

    def _drain_settlements(self, timeout: float = 10.0) -> None:
        """Return once the settlements that wait for a publish have reached the transport: an
        operator's message is acknowledged only once the broker has its audit event
        (``cellframe.node.audit``), after its cell applied it. The mailboxes drained, those
        acks still waited for the event's confirm; the consumers closed first, the broker
        requeued the messages, and another instance of the role applied them again (found by
        test_attack_replays under load: 3 of the 4 adds a stopping node had applied). A
        consumer's cancel goes after the acks handed to the transport before it."""
        if not self.broker_connected:
            return  # the deliveries went back to their queues with the connection
        try:
            if not self.transport.flush(timeout):
                log.warning("%s: what it published was not all confirmed within %g s: the "
                            "deliveries whose acks wait for it go back to their queues",
                            self.name, timeout)
        except Exception:  # the transport may already be gone; stopping must still finish
            log.debug("%s: flushing the transport failed before closing its consumers",
                      self.name, exc_info=True)

    def _all_hosted(self) -> list[Hosted]:
        daemon = [self._daemon] if self._daemon else []
        return [*daemon, *self._system.values(), *self._cells.values()]

    def _stop_order(self) -> list[Hosted]:
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
        self._routes = Routes(self._daemon, tuple(self._all_hosted()),
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
        if role != self.role:
            self._settle_before_leaving()
        try:
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
                        self.emit("differentiate-failed", role=role, previous=old,
                                  error=str(error))
                        raise
        finally:
            self._leaving_role = False  # also when closing the old role consumer failed
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

    def _settle_before_leaving(self) -> None:
        """Take no more role deliveries, and wait until the role's cells have applied what
        they hold and their records are durable and acknowledged, as ``stop`` does: closing
        the role consumer before sent applied messages back to the role queue, and once
        membership said this node had left, the role's other instances applied them again."""
        with self._lock:
            leaving = [h for h in self._cells.values() if h.cell.durable]
        if leaving:
            with self._intake:  # what was handed to a cell before is in its mailbox now
                self._leaving_role = True
            self._drain_mailboxes(leaving)
            self._drain_records(leaving)
            self._drain_settlements()

    def _retire_role_cells(self) -> None:
        if self._role_consumer is not None:
            self.transport.cancel(self._role_consumer)
            self._role_consumer = None
            self._role_consumers_closed += 1
        self._leaving_role = False
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
            if taken_back(item.delivery):
                continue  # its connection went while it was held: another instance has it
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

    def _hosted_named(self, cell: str) -> Hosted | None:
        return next((h for h in self._all_hosted() if h.cell.cell_name == cell), None)

    def renew_incarnation(self, above: int) -> int:
        """Start a new life, numbered above ``above`` and the current one (membership does,
        to refute news of this node's death); returns it."""
        self.incarnation = max(self.incarnation, above) + 1
        return self.incarnation


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
        self.emit_settled(kind, fields, None)

    def emit_settled(self, kind: str, fields: dict[str, Any],
                     on_settled: Callable[[], None] | None) -> None:
        """``emit``, then ``on_settled()`` once the broker has settled the event (confirmed,
        returned: nobody listens, or refused), or at once if it could not be published: what
        the audit trail settles a delivery with, so its event is out first."""
        payload = {"node": self.name, "time": time.time(), **fields}
        if log.isEnabledFor(logging.INFO):  # the node's life in its log (and the sump's)
            log.info("%s: %s %s", self.name, kind,
                     " ".join(f"{key}={value}" for key, value in fields.items()))
        self.monitors.heard_event(kind, payload)
        if kind in _GONE and isinstance(fields.get("member"), str):
            self.siblings.gone(fields["member"])
            self.replay_check.gone(fields["member"])
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
            self.transport.publish(key, envelope, on_return=self._on_return,
                                   on_settled=on_settled)
        except Exception:  # an event is informational; failing to publish it must not stop the node
            log.debug("%s: event %s not published", self.name, kind, exc_info=True)
            if on_settled is not None:
                on_settled()

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
            cells = [{**_snapshot(h.cell), "condition": h.condition, "restarts": h.restarts}
                     for h in [*self._system.values(), *self._cells.values()]]
        return {"node": self.name, "role": self.role, "started_at": self.started_at,
                "diagnostic": self.diagnostic, "counters": self.counters.as_dict(), "cells": cells}


def _snapshot(cell: Cell) -> dict[str, Any]:
    """``cell``'s snapshot; if its own ``cell_snapshot`` raises, the base one and why: one
    cell's bug took every cell of the node out of its status."""
    try:
        return cell.cell_snapshot()
    except Exception as error:  # the cell's code, as its actions are
        log_failure(log, error, "%s: cell_snapshot failed", cell.cell_name, level=logging.WARNING)
        return {**Cell.cell_snapshot(cell), "snapshot_error": f"{type(error).__name__}: {error}"}


def _asked(entries: Any, width: int, verb: str) -> list[Any]:
    """``entries`` checked: a list of at most ``MAX_ASKED`` lists of ``width`` strings, a key
    id, a message id and a routing key first, each of a sane length; ``ArityError`` if not."""
    if not isinstance(entries, list) or len(entries) > MAX_ASKED or not all(
            isinstance(item, list) and len(item) == width
            and all(isinstance(part, str) for part in item)
            and len(item[0]) <= 200 and len(item[1]) <= MAX_MESSAGE_ID and len(item[2]) <= 300
            for item in entries):
        raise ArityError(f"{verb} takes at most {MAX_ASKED} entries, each ({width} strings)")
    return [tuple(item) for item in entries]
