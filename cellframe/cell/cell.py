"""Cell: a pykka actor whose mailbox feeds the declarative state machine of its class.

Each message carries an s-expression. The cell evaluates it with the safe evaluator, whose
only verbs are the transitions the class declares. A verb with no transition from the
current state is a no-op (counted, and reflected to the dead letters in diagnostic mode); a
message seen before (same id) is not applied again. What goes wrong is one of two things,
told apart in the counters and in the ``(error ...)`` sent back, however the message was
written: *bad input* (wrong arguments, an expression the evaluator refuses: ``refused``), or
an action or guard that raised (``errors``: logged in one line if it raised an ordinary error of
cellframe's tree, with its traceback if it raised anything else: ``cellframe.failures``). Either
leaves the state where it was. Nothing a cell does waits on another cell: it sends, and may be called back.

A message is applied all or nothing. Before it is applied the cell takes an undo record: a
copy of its instance dictionary (every field rebound by the action is put back) and a copy of
each field the class lists in ``fields`` (so in-place changes to those containers are undone
too); what the action sends or replies is held, and released only once the whole message was
applied. If any part fails, even the second verb of a ``(do ...)``, the fields are restored and
the held messages dropped. The record costs one dict copy a message (about 0.1 us for a cell's
20 attributes), plus a shallow copy of each declared field.

A cell reaches the node hosting it only through ``cell_host`` (a ``CellHost``); a cell
started alone gets a ``StandaloneHost``.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pykka

from ..config.txtconfig import language_budget
from ..errors import (
    CellCrashedError,
    CellframeError,
    ConfigError,
    LanguageError,
    StateMachineError,
    UnknownVerbError,
)
from ..failures import LineBudget, log_failure
from ..language.evaluator import Evaluator
from ..language.symbols import Keyword, Symbol
from ..wire import tracing
from ..wire.envelope import Envelope, Message, request_id
from . import nodeverbs
from .dedup import DedupMemory
from .durable import CellJournal, id_cost
from .host import CellHost, StandaloneHost
from .outbox import Outbox
from .statemachine import Machine, Transition, compile_machine

__all__ = ["AppliedQuery", "Cell", "CellCounters", "Inbound", "SettingsChanged"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CellCounters:
    """How many messages a cell saw, and what became of them."""

    received: int = 0
    applied: int = 0
    ignored: int = 0
    duplicates: int = 0
    #: Bad input: arguments that do not fit the verb, or an expression the evaluator refuses.
    refused: int = 0
    #: An action (or a guard) raised.
    errors: int = 0
    dead_lettered: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


def _no_refusal(reason: str, requeue: bool) -> None:
    """The ``refuse`` of a message no transport delivered."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message from a transport, with the callbacks that settle its delivery: ``settle``
    once applied, ``refuse(reason, requeue)`` when it was not (the cell crashed on it, or
    failed before it): dead-lettered with ``reason``, or given back to its queue.

    ``admit``, if given, is asked just before the message is applied: False means the host
    has taken the delivery back (a node fenced after a pause, see ``cellframe.cell.fence``),
    and the cell neither applies nor settles it.

    ``report``, if given (a message an operator key sent: the node audits it), hears what
    became of it, ``report(cell_name, outcome)``, before it is settled: ``applied``,
    ``duplicate``, ``ignored: REASON``, ``failed: TYPE: MESSAGE`` or ``refused: bad input:
    ...``. A crash reports nothing: the cell ``refuse``s the message instead.

    ``redelivered``: a role-queue delivery the broker handed out again (an instance that got
    it before may have applied it): a durable cell on a shared journal looks there first,
    unless it looked since ``received`` (monotonic), when the delivery reached the node.
    """

    message: Message
    settle: Callable[[], None] = field(default=lambda: None)
    refuse: Callable[[str, bool], None] = field(default=_no_refusal)
    admit: Callable[[], bool] | None = None
    report: Callable[[str, str], None] | None = None
    redelivered: bool = False
    received: float = 0.0


@dataclass(frozen=True, slots=True)
class AppliedQuery:
    """A mailbox item: another instance of the role asks whether this durable cell applied
    ``message_id``; ``answer(applied)`` is called from the cell's thread once the cell has
    handled everything its mailbox held before it (``cellframe.node.siblings``)."""

    message_id: str
    answer: Callable[[bool], None]


@dataclass(frozen=True, slots=True)
class SettingsChanged:
    """The node's settings changed in DNS (a mailbox item the node sends each of its cells)."""

    settings: dict[str, str]


@dataclass(frozen=True, slots=True)
class RecordLost:
    """A mailbox item a durable cell tells itself when a record of what it applied could not
    be made durable: its state is ahead of its journal, so it crashes, and its restart recovers
    what was recorded (the deliveries the record covered went back to their queue)."""

    reason: str


class _Ignored(CellframeError):
    """Internal: the message had no transition to take; carries the reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _ActionFailed(CellframeError):
    """Internal: an action or guard raised ``error`` inside the evaluator. Carried out of it
    unchanged (the evaluator lets a CellframeError through), so the cell reports it exactly as
    when the fast path runs the action itself."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class Cell(pykka.ThreadingActor):
    """Base class of every cell. Subclasses declare ``states``, ``initial``, and transitions
    (``@transition`` on methods, or ``on(...)`` entries in ``transitions``).

    Attributes the framework owns start with ``cell_`` so they never collide with yours.
    """

    states: ClassVar[tuple[str, ...] | frozenset[str]] = ("ready",)
    initial: ClassVar[str] = "ready"
    transitions: ClassVar[list[Transition] | tuple[Transition, ...]] = ()
    #: The role this class plays when a node differentiates (see ``cellframe.roles.registry``).
    role: ClassVar[str | None] = None
    #: Extra topic patterns this cell receives on its node's queue, besides ``cell.<name>``;
    #: ``{node}``, ``{role}`` and ``{cell}`` are filled in (e.g. ``"event.down.*"``).
    bindings: ClassVar[tuple[str, ...]] = ()
    #: Seconds between ``(tick)`` messages the node puts in this cell's mailbox; None: never.
    #: Declare a ``tick`` transition to use it. A cell may compute it from its settings by
    #: overriding ``cell_tick_interval``.
    tick_interval: ClassVar[float | None] = None
    #: Fields whose contents (not only their binding) a failed message must leave untouched:
    #: each is copied (``copy.copy``) before every message, so keep them small. A field an
    #: action only rebinds (``self.n += 1``) needs no declaration.
    fields: ClassVar[tuple[str, ...]] = ()
    #: Keep the state, the ``fields`` and the applied message ids in the store (through the
    #: ``CellJournal`` its node is given), so a spare resumes them (``cellframe.cell.durable``).
    durable: ClassVar[bool] = False
    #: Verbs of this class that only nodes send each other (replication, claims, membership
    #: news), each with the keyword naming the node that speaks (None: it names none). A node
    #: refuses them from an operator key, and from a node key bound to another node
    #: (``cellframe.cell.nodeverbs``).
    node_verbs: ClassVar[Mapping[str, str | None]] = {}
    #: Verbs of this class that operators send too and nodes send in their own name, each with
    #: the keyword naming the node (``{"set-weight": "node"}``): a node key bound to one node
    #: sends them only naming that node; an operator key as its capabilities allow.
    shared_verbs: ClassVar[Mapping[str, str]] = {}
    #: Verbs this class only tells itself (``actor_ref.tell``): refused from the wire, whatever
    #: the key.
    local_verbs: ClassVar[tuple[str, ...]] = ()
    cell_machine: ClassVar[Machine]

    use_daemon_thread = True

    def _start_actor_loop(self) -> None:
        """pykka's hook that starts the actor's thread, which it names ``<Class>-<n>``; ours
        is named ``cell:<name>``, so a log record (``cellframe.node.logship``), a traceback or
        a thread dump says which cell it came from, at no cost per message."""
        thread = threading.Thread(target=self._actor_loop, name=f"cell:{self.cell_name}",
                                  daemon=self.use_daemon_thread)
        thread.start()

    @staticmethod
    def _create_actor_inbox() -> Any:
        """pykka's hook for an actor type's mailbox: a ``queue.SimpleQueue`` (C, no condition
        variable) instead of the thread actor's ``queue.Queue``. pykka only puts, gets and asks
        ``empty()``; a put and a get cost 0.09 us here against 1.3 us, and a waiting cell is
        woken without a Python-level lock dance."""
        return queue.SimpleQueue()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.cell_machine = compile_machine(cls)
        own = {attr: vars(cls).get(attr) or {} for attr in ("node_verbs", "shared_verbs",
                                                            "local_verbs")}
        for attr, verbs in own.items():
            unknown = sorted(set(verbs) - cls.cell_machine.verbs)
            if unknown:
                raise StateMachineError(f"{cls.__qualname__}: {attr} {unknown} are not "
                                        "verbs of its machine")
        if any(own.values()):
            nodeverbs.declare(cls.__qualname__, own["node_verbs"], shared=own["shared_verbs"],
                              local=own["local_verbs"])

    def __init__(
        self,
        name: str | None = None,
        *,
        host: CellHost | None = None,
        outbox: Outbox | None = None,
        diagnostic: bool = False,
        dedup_capacity: int = 100_000,
        evaluator: Evaluator | None = None,
        settings: dict[str, str] | None = None,
        journal: CellJournal | None = None,
    ) -> None:
        super().__init__()
        self.cell_name = name or f"{type(self).__name__.lower()}-{uuid.uuid4().hex[:8]}"
        if host is not None and outbox is not None:
            raise ConfigError(f"cell {self.cell_name}: give it a host or an outbox, not both")
        #: The node hosting this cell, or a StandaloneHost sending through ``outbox``.
        self.cell_host: CellHost = host if host is not None else StandaloneHost(self.cell_name, outbox)
        self.cell_diagnostic = diagnostic
        self.cell_settings = dict(settings or {})
        self.cell_state = self.cell_machine.initial
        self.cell_counters = CellCounters()
        self._cell_lines = LineBudget()  # failures its senders cause, logged a few a minute
        self._cell_last_reason = ""  # why the last message failed or was ignored (the audit)
        self.cell_dedup = DedupMemory(dedup_capacity)
        self._cell_given_evaluator = evaluator is not None
        self.cell_evaluator = evaluator or self._cell_budgeted_evaluator()
        self.cell_message: Message | None = None
        # What the message being applied sends, held until it is applied (None: send now).
        self._cell_held: list[tuple[str, Any, str | None, Any, str | None]] | None = None
        # A durable cell's applied messages whose record is not yet written (``on_receive``).
        self._cell_unrecorded: list[tuple[Message, Inbound | None]] = []
        self._cell_unrecorded_ids = 0  # what their ids cost a record, bounded by RECORD_GROUP_IDS
        self._cell_losing = False  # a RecordLost is on its way to this instance
        # When the last look at what other instances recorded began (monotonic): a
        # redelivered message that reached the node before that needs no look of its own.
        self._cell_looked_from = 0.0
        self._cell_verbs = {
            verb: self._cell_dispatcher(verb, ts) for verb, ts in self.cell_machine.by_verb.items()
        }
        # (verb, state) -> the transition to take when it is the first candidate and has no
        # guard: then the choice depends on nothing but the verb and the state.
        self._cell_unguarded = _unguarded_table(self.cell_machine)
        self._cell_journal = self._cell_open_journal(journal)
        self.cell_host.attach_cell(self)

    def _cell_open_journal(self, journal: CellJournal | None) -> CellJournal | None:
        """A durable cell's journal, after recovering from it (call once the subclass's
        fields exist: ``on_start`` does)."""
        if not self.durable:
            return None
        if journal is None:
            raise ConfigError(f"{type(self).__name__} is durable, but {self.cell_name} was given "
                              "no store for its state: start its node with journal=CellJournal(store)")
        self._cell_family = journal.family_for(self.cell_name, self.role or self.cell_host.role,
                                              type(self).__name__)
        # pykka dispatches each mailbox item through _handle_receive: a durable cell's goes
        # through the recording of what it applied first (a cell that is not durable pays
        # nothing for it).
        self._handle_receive = self._cell_receive_durably  # type: ignore[method-assign]
        return journal

    def on_start(self) -> None:
        """pykka's hook, in the cell's thread before its first message: a durable cell
        recovers its state, fields and applied ids here. Subclasses overriding it call this."""
        if self._cell_journal is not None:
            self._cell_recover(self._cell_journal)

    def _cell_recover(self, journal: CellJournal) -> None:
        recovered = journal.recover(self._cell_family, self.cell_dedup.capacity)
        if recovered is None:
            return
        state, values, ids = recovered
        if state in self.cell_machine.states:
            self.cell_state = state
        for name in self.fields:
            if name in values:
                setattr(self, name, values[name])
        for message_id in ids:
            self.cell_dedup.seen(message_id)
        log.info("%s: recovered %s, %d applied ids", self.cell_name, state, len(ids))

    def _cell_read_others_records(self, inbound: Inbound) -> bool:
        """Before a redelivered role message: learn what other instances of the role recorded
        in a journal they share (the shard tier), so that a message one of them applied,
        recorded, and died before acknowledging is not applied again here (its node's
        membership no longer asks a dead sibling). False: the journal could not be read; the
        delivery goes back to its queue, unapplied."""
        assert self._cell_journal is not None
        if inbound.received and inbound.received < self._cell_looked_from:
            return True  # a look that began after it arrived saw what came before it
        began = time.monotonic()
        try:
            self._cell_journal.refresh(self._cell_family)
        except CellframeError as error:
            inbound.refuse(f"{self.cell_name}: its journal could not be read: {error}", True)
            return False
        self._cell_looked_from = began
        return True

    def _cell_record_when_idle(self) -> None:
        """After each mailbox item: record what this durable cell applied, unless more wait in
        its mailbox (and the group is under ``RECORD_GROUP``). One record then
        covers them all: the state after the last, and every id. Each delivery is settled
        once its record is durable, so a group only delays the acknowledgements by the time
        it takes to apply the rest of it."""
        if len(self._cell_unrecorded) >= RECORD_GROUP or self.actor_inbox.empty() \
                or self._cell_unrecorded_ids >= RECORD_GROUP_IDS:
            self._cell_record()

    def _cell_record(self) -> None:
        """Journal the state after the applied messages not yet recorded; their deliveries
        are settled once that is durable. Called before anything else is handled (a read of
        the state, a crash, a stop), so that what is applied is recorded first."""
        group, self._cell_unrecorded = self._cell_unrecorded, []
        self._cell_unrecorded_ids = 0
        if not group:
            return
        assert self._cell_journal is not None
        name = self.cell_name

        def durable(error: BaseException | None) -> None:
            if error is not None:  # not recorded: give them back, to be applied again
                log.error("%s: the record of %s failed: %s", name,
                          ", ".join(m.id for m, _ in group[:3]) + ("..." if group[3:] else ""),
                          error)
            for _, inbound in group:
                if inbound is None:
                    continue
                if error is None:
                    if inbound.report is not None:  # audited: applied only once recorded
                        inbound.report(name, "applied")
                    inbound.settle()
                else:
                    inbound.refuse(f"{name}: not recorded: {error}", True)

        def recorded(error: BaseException | None) -> None:  # the journal's call-back
            if error is not None:
                self._cell_record_lost(error)
            durable(error)

        fields = {field_name: getattr(self, field_name, None) for field_name in self.fields}
        try:
            self._cell_journal.record(self._cell_family, [m.id for m, _ in group],
                                      self.cell_state, fields, recorded)
        except CellframeError as error:  # fields that are not JSON, a closed store
            for message, _ in group:  # not applied, as far as any instance of the role knows
                self._cell_journal.release(self._cell_family, message.id)
            durable(error)
            raise

    def _cell_record_lost(self, error: BaseException) -> None:
        """From the journal's thread: a record failed after this cell went on; it must not
        go on from a state its journal does not hold (``RecordLost``). Told once."""
        if self._cell_losing:
            return
        self._cell_losing = True
        try:
            self.actor_ref.tell(RecordLost(f"{type(error).__name__}: {error}"))
        except pykka.ActorDeadError:
            pass  # it is gone already: its restart recovers from the journal

    def _cell_record_quietly(self) -> None:
        """``_cell_record`` on the way out (the cell dies or stops): a failure is logged."""
        try:
            self._cell_record()
        except CellframeError as error:
            log.error("%s: what it applied could not be recorded: %s", self.cell_name, error)

    def _cell_receive_durably(self, message: Any) -> Any:
        """A durable cell's dispatch of every mailbox item (pykka's ``_handle_receive``): it
        records what it applied once its mailbox is empty (``_cell_record_when_idle``), and
        before anything but a message (a read of its state, a stop, a sibling's question)."""
        if self._cell_unrecorded and type(message) is not Inbound and type(message) is not Message:
            self._cell_record()
        result = pykka.ThreadingActor._handle_receive(self, message)
        if self._cell_unrecorded:
            self._cell_record_when_idle()
        return result

    # -- receiving --------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if type(message) is Inbound:
            if message.admit is not None and not message.admit():
                return  # given back by the host: never applied, never settled here
            if message.redelivered and self._cell_journal is not None \
                    and not self._cell_read_others_records(message):
                return
            applied = self.cell_counters.applied
            report = message.report
            if report is not None:  # audited: only an operator's messages pay for the outcome
                before = self.cell_counters.as_dict()
            try:
                self.cell_handle(message.message)
            except KeyboardInterrupt:
                raise
            except BaseException as error:  # SystemExit too: this cell crashed, not the node
                self._cell_record()  # what it applied before this one stays applied
                self._cell_crashing(message.message, message, error)
            if self._cell_journal is not None and self.cell_counters.applied != applied:
                self._cell_unrecorded.append((message.message, message))  # settled once durable
                self._cell_unrecorded_ids += id_cost(message.message.id)
            else:
                if report is not None:
                    report(self.cell_name, self._cell_outcome(before))
                message.settle()
        elif type(message) is Message:
            applied = self.cell_counters.applied
            try:
                self.cell_handle(message)
            except KeyboardInterrupt:
                raise
            except BaseException as error:
                self._cell_record()
                self._cell_crashing(message, None, error)
            if self._cell_journal is not None and self.cell_counters.applied != applied:
                self._cell_unrecorded.append((message, None))
                self._cell_unrecorded_ids += id_cost(message.id)
        elif type(message) is AppliedQuery:
            message.answer(self.cell_applied(message.message_id))
        elif type(message) is RecordLost:
            raise CellCrashedError(f"{self.cell_name}: a record of what it applied was lost "
                                   f"({message.reason}); it recovers from its journal")
        elif type(message) is SettingsChanged:
            old, self.cell_settings = self.cell_settings, dict(message.settings)
            if old != self.cell_settings:
                if not self._cell_given_evaluator:
                    self.cell_evaluator = self._cell_budgeted_evaluator()
                try:
                    self.on_settings_changed(old)
                except Exception as error:  # a bad hook must not kill the cell
                    log_failure(log, error, "%s: on_settings_changed raised", self.cell_name)
                except KeyboardInterrupt:
                    raise
                except BaseException as error:  # pykka would stop every actor: crash this one
                    raise CellCrashedError(f"{self.cell_name} crashed changing its settings: "
                                           f"{type(error).__name__}: {error}") from error
        else:
            log.warning("%s: ignoring a mailbox item that is not a Message: %r", self.cell_name, message)

    def cell_drain_records(self, timeout: float) -> bool:
        """Wait until the records of what this durable cell applied are durable and their
        deliveries settled (True at once for a cell that is not durable)."""
        journal = self._cell_journal
        return journal is None or journal.drain(self._cell_family, timeout)

    def cell_applied(self, message_id: str) -> bool:
        """Has this cell (a durable one: any instance of its role sharing its journal)
        applied ``message_id``? Call it from the cell's thread."""
        journal = self._cell_journal
        if journal is not None:
            return journal.claimed(self._cell_family, message_id)
        return message_id in self.cell_dedup

    def _cell_outcome(self, before: dict[str, int]) -> str:
        """What became of the message just handled, read from the counters it moved (the
        ones every message moves anyway) and the reason its failure left behind."""
        after = self.cell_counters
        if after.applied != before["applied"]:
            return "applied"
        if after.duplicates != before["duplicates"]:
            return "duplicate"
        reason = self._cell_last_reason[:300]
        if after.ignored != before["ignored"]:
            return f"ignored: {reason}"
        if after.refused != before["refused"]:
            return f"refused: {reason}"
        return f"failed: {reason.removeprefix('action failed: ')}"

    def _cell_crashing(self, message: Message, inbound: Inbound | None,
                       error: BaseException) -> None:
        """Leave pykka's loop by the way a failure does, so that ``on_failure`` reports the
        crash and the actor stops; pykka would stop every actor of the process on a
        BaseException. The message was already rolled back."""
        self._cell_crash = (message, inbound)
        raise CellCrashedError(
            f"{self.cell_name} crashed on {_describe(message)}: {type(error).__name__}: {error}"
        ) from error

    def _actor_loop_setup(self) -> None:
        """pykka's hook that runs ``on_start``: a cell that fails to start crashes as one that
        fails on a message does, through ``on_failure``, so its supervisor hears of it. pykka
        only logs it and stops the actor, and ``status`` went on saying ``running``."""
        try:
            self.on_start()
        except BaseException as error:  # SystemExit too: this cell crashed, not the node
            crash = CellCrashedError(f"{self.cell_name} crashed starting: "
                                     f"{type(error).__name__}: {error}")
            crash.__cause__ = error
            self._handle_failure(type(crash), crash, error.__traceback__)
            self.on_failure(type(crash), crash, error.__traceback__)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        """pykka's hook when the actor dies: tell the host (its supervisor restarts the
        cell), and refuse the message it died on. Subclasses overriding it call this one."""
        self._cell_record_quietly()  # died otherwise than on a message: keep what it applied
        message, inbound = getattr(self, "_cell_crash", (None, None))
        error = exception_value
        if isinstance(error, CellCrashedError) and error.__cause__ is not None:
            error = error.__cause__
        self.cell_host.cell_crashed(self, message, error)
        if inbound is not None:
            inbound.refuse(f"cell crashed: {type(error).__name__}: {error}", False)

    def _actor_loop_teardown(self) -> None:
        """pykka's hook after the actor's last message: what the mailbox still holds goes back
        to the host (pykka would drop what was told, unsettled), the rest to pykka."""
        self._cell_record_quietly()  # stopped after applying, before anything else came
        inbox = self.actor_inbox
        orphans: list[Any] = []
        others = []
        while not inbox.empty():
            envelope = inbox.get()
            if envelope.reply_to is None and type(envelope.message) in (Inbound, Message):
                orphans.append(envelope.message)
            else:
                others.append(envelope)
        for envelope in others:
            inbox.put(envelope)
        self.cell_host.cell_stopped(self, orphans)
        super()._actor_loop_teardown()  # type: ignore[misc]

    def cell_setting_layers(self) -> list[dict[str, str]]:
        """The DNS settings this cell sees, in the order they apply: the cluster's (at
        ``_cluster``, when its host has a resolver that answers), then its node's own."""
        layers = []
        resolver = self.cell_host.resolver
        if resolver is not None:
            try:
                layers.append(resolver.cluster_intent().settings)
            except CellframeError as error:
                log.warning("%s: no cluster settings (%s); defaults", self.cell_name, error)
        layers.append(self.cell_settings)
        return layers

    def _cell_budgeted_evaluator(self) -> Evaluator:
        """An evaluator with the budgets DNS sets (``language.max-*`` at ``_cluster``, then in
        this node's records); the defaults where it sets none, or sets them badly."""
        try:
            return Evaluator(**language_budget(*self.cell_setting_layers()))
        except CellframeError as error:
            log.warning("%s: %s; default evaluation budgets", self.cell_name, error)
            return Evaluator()

    def on_settings_changed(self, old: dict[str, str]) -> None:
        """Called in the cell's thread after DNS changed its node's settings; the new ones are
        already in ``cell_settings``. Override to act on a change (the default does nothing:
        cells that read ``cell_settings`` when they need them see the new values)."""

    def cell_handle(self, message: Message) -> None:
        """Apply one message: dedup, evaluate against this cell's verbs, count the outcome.

        One path for every outcome, whether the fast path or the evaluator ran the action.
        A message delivered with tracing on is applied in an ``apply`` span
        (``cellframe.wire.tracing``), current while the action runs."""
        if message.trace is not None and tracing.active is not None:
            tracing.active.apply(self, message, self._cell_handle)
        else:
            self._cell_handle(message)

    def _cell_handle(self, message: Message) -> None:
        counters = self.cell_counters
        counters.received += 1
        if self.cell_dedup.seen(message.id):
            counters.duplicates += 1
            return
        journal = self._cell_journal
        if journal is not None and not journal.claim(self._cell_family, message.id,
                                                     self.cell_dedup.capacity):
            counters.duplicates += 1  # another instance of the role applied it
            return
        self.cell_message = message
        held: list[tuple[str, Any, str | None, Any, str | None]] = []
        self._cell_held = held
        # The undo record, written out here: a method for it cost 0.1 us a message.
        fields = self.fields
        undo = (self.__dict__.copy(),
                [(name, copy.copy(getattr(self, name, None))) for name in fields] if fields else ())
        try:
            expr = message.expr
            if not self._cell_apply_directly(expr):
                self.cell_evaluator.evaluate(expr, self._cell_verbs)
        except _Ignored as ignored:
            self._cell_rollback(undo)
            self._cell_ignore(message, ignored.reason)
        except UnknownVerbError as error:
            self._cell_rollback(undo)
            self._cell_ignore(message, str(error))
        except _ActionFailed as failed:  # an action or guard raised: its bug, not the input's
            self._cell_rollback(undo)
            self._cell_action_failed(message, failed.error)
        except LanguageError as error:  # the reader's, the evaluator's or the arity's refusal
            self._cell_rollback(undo)
            self.cell_counters.refused += 1
            self._cell_report(message, f"bad input: {error}")
        except Exception as error:  # a bug outside any action must not kill the cell either
            self._cell_rollback(undo)
            self._cell_action_failed(message, error)
        except BaseException:  # a crash (SystemExit...): the cell as it was, for its supervisor
            self._cell_rollback(undo)
            raise
        else:
            counters.applied += 1
            self._cell_held = None
            if held:
                self._cell_release(held)
        finally:
            self._cell_held = None
            self.cell_message = None

    def _cell_rollback(self, undo: tuple[dict[str, Any], Any]) -> None:
        """Restore the fields from an undo record and drop what the failed message sent."""
        before, copies = undo
        if self._cell_journal is not None and self.cell_message is not None:
            self._cell_journal.release(self._cell_family, self.cell_message.id)
        state = self.__dict__
        state.clear()
        state.update(before)
        for name, value in copies:
            state[name] = value
        self._cell_held = None

    def _cell_release(self, held: list[tuple[str, Any, str | None, Any, str | None]]) -> None:
        """Send what an applied message sent. The message is applied whatever happens here:
        a send that fails now (a closed transport) is logged, as a lost send would be."""
        for target, expr, reply_to, on_return, correlation_id in held:
            try:
                self.cell_host.send(target, expr, reply_to=reply_to, sender=self.cell_name,
                                    on_return=on_return, correlation_id=correlation_id)
            except CellframeError as error:
                log.warning("%s: a message to %s was not sent: %s", self.cell_name, target, error)

    def _cell_apply_directly(self, expr: Any) -> bool:
        """The hot path: a verb applied to literals, whose transition from the current state
        has no guard, runs without the evaluator (which would do the same, slower: 2.9 us
        against 4.4 us per message measured here). False: let the evaluator do it."""
        if type(expr) is not list or not expr or type(expr[0]) is not Symbol:
            return False
        entry = self._cell_unguarded[self.cell_state].get(expr[0].name)
        if entry is None:
            return False
        t, fewest, most = entry
        # What the action raises leaves as _ActionFailed, as in dispatch below. Written out
        # here, and apart for the two arities: a shared method cost 0.25 us a message (1.2 us
        # against 0.95), and calling with an empty *args 0.15 us.
        if len(expr) > 1:
            args = expr[1:]
            for argument in args:
                if isinstance(argument, _EVALUATED):
                    if type(argument) is Keyword:
                        return self._cell_apply_with_keywords(t, expr)
                    return False
            if not fewest <= len(args) <= most:
                t.arity.check(t.verb, tuple(args), {})
            if t.action is not None:
                try:
                    t.action(self, *args)
                except Exception as error:
                    raise _ActionFailed(error) from error
        else:
            if not fewest <= 0 <= most:
                t.arity.check(t.verb, (), {})
            if t.action is not None:
                try:
                    t.action(self)
                except Exception as error:
                    raise _ActionFailed(error) from error
        if t.target is not None:
            self.cell_state = t.target
        return True

    def _cell_apply_with_keywords(self, t: Transition, expr: list[Any]) -> bool:
        """The hot path for ``(verb ... :name value ...)`` of literals, as the evaluator reads
        it (``:role-since`` is ``role_since``; keywords and positionals may interleave). What
        the evaluator would refuse (a keyword with no value, or given twice) or evaluate (a
        form or a symbol) goes back to it: False. A heartbeat (six keywords) is applied in 3.7 to
        6.8 us this way, against 8.3 to 15.6 us through the evaluator (A/B, a loaded 2-core host)."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        index, end = 1, len(expr)
        while index < end:
            argument = expr[index]
            kind = type(argument)
            if kind is Keyword:
                if index + 1 == end:
                    return False
                value = expr[index + 1]
                key = argument.argument
                if key in kwargs or type(value) not in _LITERALS:
                    return False
                kwargs[key] = value
                index += 2
            elif kind in _LITERALS:
                args.append(argument)
                index += 1
            else:
                return False
        t.arity.check(t.verb, tuple(args), kwargs)
        if t.action is not None:
            try:
                t.action(self, *args, **kwargs)
            except Exception as error:
                raise _ActionFailed(error) from error
        if t.target is not None:
            self.cell_state = t.target
        return True

    def _cell_dispatcher(self, verb: str, candidates: tuple[Transition, ...]) -> Callable[..., Any]:
        # Transitions per source state, computed once: the hot path is one dict lookup.
        by_state = {
            state: tuple(t for t in candidates if t.applies_from(state))
            for state in self.cell_machine.states
        }

        def dispatch(*args: Any, **kwargs: Any) -> Any:
            state = self.cell_state
            for t in by_state[state]:
                if kwargs or not t.arity.fits_positional(len(args)):
                    t.arity.check(verb, args, kwargs)
                if t.guard is not None and not self._cell_guard(t, args, kwargs):
                    continue
                result = None
                if t.action is not None:
                    # Whatever the action raises (a LanguageError too: the input was already
                    # accepted) leaves as _ActionFailed, which the evaluator lets through, so
                    # cell_handle reports it as when the fast path ran the action.
                    try:
                        result = t.action(self, *args, **kwargs)
                    except Exception as error:
                        raise _ActionFailed(error) from error
                if t.target is not None:
                    self.cell_state = t.target
                return result
            raise _Ignored(f"no transition for {verb!r} from state {state!r}")

        return dispatch

    def _cell_guard(self, t: Transition, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        guard = getattr(self, t.guard) if isinstance(t.guard, str) else t.guard.__get__(self)  # type: ignore[union-attr]
        try:
            return bool(guard(*args, **kwargs))
        except Exception as error:  # the guard is the cell's code, as the action is
            raise _ActionFailed(error) from error

    def _cell_ignore(self, message: Message, reason: str) -> None:
        self.cell_counters.ignored += 1
        self._cell_last_reason = reason  # for the audit (``_cell_outcome``): off the applied path
        if self.cell_diagnostic:
            self._cell_dead_letter(message, reason)

    def _cell_action_failed(self, message: Message, error: BaseException) -> None:
        self.cell_counters.errors += 1
        # An operator's mistake (a role that does not exist) is one line; a bug, its traceback.
        log_failure(log, error, "%s: action failed on %s", self.cell_name, _describe(message),
                    budget=self._cell_lines, kind="action failed")
        self._cell_report(message, f"action failed: {type(error).__name__}: {error}")

    def _cell_report(self, message: Message, reason: str) -> None:
        """Dead-letter a failed message (diagnostic mode) and call its sender back with
        ``(error :cell C :id ID :reason R)``."""
        self._cell_last_reason = reason  # for the audit (``_cell_outcome``)
        if self.cell_diagnostic:
            self._cell_dead_letter(message, reason)
        if message.reply_to:
            try:
                self.cell_send(message.reply_to, [
                    Symbol("error"), Keyword("cell"), self.cell_name, Keyword("id"), message.id,
                    Keyword("reason"), reason], correlation_id=request_id(message))
            except CellframeError as error:  # no outbox, or a closed transport
                log.warning("%s: could not report %s: %s", self.cell_name, reason, error)

    def _cell_dead_letter(self, message: Message, reason: str) -> None:
        try:
            self.cell_host.dead_letter(message, f"{self.cell_name}: {reason}")
        except CellframeError as error:  # no outbox, or a closed transport
            log.warning("%s: dropped a dead letter: %s", self.cell_name, error)
            return
        self.cell_counters.dead_lettered += 1

    # -- sending ----------------------------------------------------------------------------

    def cell_send(self, target: str, expr: Any, *, reply_to: str | None = None,
                  on_return: Callable[[Envelope, str], None] | None = None,
                  correlation_id: str | None = None) -> None:
        """Send ``expr`` to the routing key ``target``, fire and forget. ``on_return`` (called
        from a transport thread: tell yourself a message rather than touch state) hears if no
        queue received it. Raises a CellframeError if it cannot be sent (a cell alone without
        an outbox, a closed transport). Sent while a message is applied, it is held and sent
        once that message is applied, and never if it fails. ``correlation_id``: the id of the
        request a call-back answers (``cell_reply`` sets it). A message sent on with the reply
        address of the one being applied is that request forwarded: it carries the request's
        id, so whoever answers it answers the original sender's request."""
        if correlation_id is None and reply_to is not None:
            message = self.cell_message
            if message is not None and reply_to == message.reply_to:
                correlation_id = request_id(message)
        held = self._cell_held
        if held is not None:
            held.append((target, expr, reply_to, on_return, correlation_id))
            return
        self.cell_host.send(target, expr, reply_to=reply_to, sender=self.cell_name,
                            on_return=on_return, correlation_id=correlation_id)

    def cell_reply(self, expr: Any) -> bool:
        """Call back the sender of the message being applied, if it named a reply address; the
        call-back's correlation id is the request's (``request_id``)."""
        message = self.cell_message
        if message is None or not message.reply_to:
            return False
        self.cell_send(message.reply_to, expr, correlation_id=request_id(message))
        return True

    def cell_monitor(self, watched: str, node: str | None = None) -> None:
        """Ask to be told ``(cell-down :cell W :node N :condition C :reason R)`` when the cell
        ``watched`` of ``node`` (None: this cell's node) crashes (C: ``restarting``) or fails
        (``failed``), or, of another node, when that node goes down (C: ``down``, R:
        ``node-down``). An ordinary message, which a class without a ``cell-down`` transition
        ignores; fire and forget: nothing is waited for, nor answered (docs/supervision.md,
        "Monitors")."""
        self.cell_host.monitor(self.cell_name, watched, node)

    def cell_monitor_node(self, node: str) -> None:
        """Ask to be told ``(node-down :node N :incarnation I :reason down|left)`` once for
        each life of ``node`` that ends, as this node's membership judges (a node without a
        membership cell never hears one). An ordinary message, ignored by a class without a
        ``node-down`` transition."""
        self.cell_host.monitor_node(self.cell_name, node)

    def cell_demonitor(self, watched: str, node: str | None = None) -> None:
        """Undo ``cell_monitor``: no more notices of that cell (one already in the mailbox
        is still applied, or ignored)."""
        self.cell_host.demonitor(self.cell_name, watched, node)

    def cell_demonitor_node(self, node: str) -> None:
        """Undo ``cell_monitor_node``."""
        self.cell_host.demonitor_node(self.cell_name, node)

    # -- introspection ----------------------------------------------------------------------

    def cell_load(self) -> float | None:
        """How busy this cell is, 1.0 being at the threshold its settings give (None: it does
        not measure load). Called from the membership's thread: return a value computed on
        the cell's own, never compute here. Nodes carry it in their heartbeats, and capacity
        follows it (``cellframe.healing.capacity``)."""
        return None

    def cell_tick_interval(self) -> float | None:
        """Seconds between ticks for this instance (default: the class's ``tick_interval``)."""
        return self.tick_interval

    def cell_bindings(self, node: str, role: str | None) -> list[str]:
        """The topic patterns this instance receives, with placeholders filled in."""
        return [p.format(node=node, role=role or "spare", cell=self.cell_name) for p in self.bindings]

    @classmethod
    def cell_verbs(cls) -> frozenset[str]:
        """The verbs this class declares (what its messages may say)."""
        return cls.cell_machine.verbs

    def cell_snapshot(self) -> dict[str, Any]:
        """Name, class, state and counters, for status reports."""
        return {
            "name": self.cell_name,
            "class": type(self).__name__,
            "role": self.role,
            "state": self.cell_state,
            "counters": self.cell_counters.as_dict(),
            "verbs": sorted(self.cell_verbs()),
        }


#: At most this many applied messages of a durable cell go into one record (``on_receive``).
RECORD_GROUP = 64
#: ... and its ids at most about this ``id_cost`` (plus the last one's), so that a group's
#: record fits the shard tier's (``cellframe.node.shard_journal``) whatever its ids.
RECORD_GROUP_IDS = 6 * 1024

_EVALUATED = (list, Symbol, Keyword)
# What a verb call's argument may be to skip the evaluator: its self-evaluating types, exactly
# (anything else, a subclass too, is left to the evaluator to take or refuse).
_LITERALS = frozenset({str, int, float, bool, type(None), Keyword})


def _unguarded_table(machine: Machine) -> dict[str, dict[str, tuple[Transition, int, int]]]:
    """state -> verb -> (transition, fewest, most positional arguments) for every verb whose
    first candidate transition from that state has no guard, so that the choice depends on
    nothing but the verb and the state. Required keyword-only arguments force the slow path."""
    table: dict[str, dict[str, tuple[Transition, int, int]]] = {}
    for state in machine.states:
        row = table.setdefault(state, {})
        for verb, candidates in machine.by_verb.items():
            applicable = [t for t in candidates if t.applies_from(state)]
            if applicable and applicable[0].guard is None:
                t = applicable[0]
                arity = t.arity
                most = -1 if arity.required_keywords else (
                    arity.positional if arity.positional is not None else 1 << 30)
                row[verb] = (t, arity.required, most)
    return table


def _describe(message: Message) -> str:
    return f"message {message.id}"


Cell.cell_machine = compile_machine(Cell)
