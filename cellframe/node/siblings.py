"""Once per role across processes: a role-queue delivery the broker marks ``redelivered``, for
a durable cell, is held (neither acknowledged nor applied) until the role's other live
instances have said whether they applied its message.

Why only those: a message whose acknowledgement was lost (a connection closed after the node
applied it) comes back to the role queue, and the broker marks every copy it hands out again
``redelivered``. A first delivery was never applied anywhere, so it pays nothing here (one
attribute read on the I/O thread).

The exchange, fire and forget, nothing blocks:

* the holder sends ``(was-applied :message ID :role R :by ME)`` to ``node.<S>`` of each
  sibling S (the members of its role that its membership does not hold down or left);
* S's node puts the question in the mailbox of each of its durable role cells, behind what
  they already hold, so a copy applied or about to be applied there is counted; each answers
  from its journal's claims (``CellJournal.claimed``); S replies
  ``(applied-answer :message ID :node S :answer A)``, A one of ``applied``, ``not-applied``,
  ``busy`` (ask again soon: its cell is restarting, or it holds a redelivered copy itself);
* one ``applied``: the holder acknowledges its copy as a duplicate. Every asked sibling
  ``not-applied``, or down or left by membership meanwhile: it applies it.

No answer within ``timeout``: the question goes again, the wait doubling up to ``max_wait``,
for as long as membership holds the sibling alive; once membership declares it down or left,
it no longer counts. A redelivered copy is never applied on a guess: a slow sibling costs a
held delivery (one of the role consumer's prefetch window), not a duplicate.

Two nodes that hold a copy of the same message at once (the first holder's connection closed
while it waited) would each hear ``not-applied`` from the other: a holder asked about a
message it holds undecided answers ``busy`` if its name sorts first, so that exactly one of
them goes first, and ``busy`` while it is handing the message it decided to apply to its
cells, so the other asks again and then finds it applied. Otherwise its cells answer: an
earlier copy may have been applied there, whatever the copy it holds now; and the holder
waits for the asker again, since what the asker said before it held its own copy
(``not-applied``) no longer holds: it asks again soon and hears ``busy`` until the asker has
decided, then ``applied`` if it applied it. (Answers from one node come in the order it sent
them: one publisher, one queue.)

A second copy of a message held here is decided with it: the first whose delivery is still
here goes, the others are duplicates. If the held one's delivery went back to the queue
meanwhile (its connection closed), the copy may be that very delivery handed out again, so
it stands in for it; acknowledged as a duplicate, it left the message applied nowhere.

The same exchange, with the gate's replay cache answering instead of the cells, keeps a
signed role message from being applied by two instances when copies of it reach both
(``cellframe.node.replays``).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..failures import log_failure

__all__ = ["ANSWERS", "APPLIED", "BUSY", "NOT_APPLIED", "SiblingCheck"]

log = logging.getLogger(__name__)

APPLIED, NOT_APPLIED, BUSY = "applied", "not-applied", "busy"
ANSWERS = frozenset({APPLIED, NOT_APPLIED, BUSY})

#: ask(sibling, message_id): send the question (fire and forget).
Ask = Callable[[str, str], None]
#: decided(applied_elsewhere): called once, from the thread that settled it; False if its
#: delivery had gone back to the queue meanwhile, anything else once it was applied, refused
#: or given back (see ``SiblingCheck(stand_in=...)``).
Decided = Callable[[bool], bool | None]


@dataclass(slots=True)
class _Held:
    """One redelivered message held here, and the siblings it still waits for."""

    message_id: str
    waiting: set[str]
    decided: Decided
    wait: float
    due: float
    since: float = 0.0
    asked: int = 1
    deciding: bool = False
    copies: list[Decided] = field(default_factory=list)


class SiblingCheck:
    """The held redelivered messages of one node (see the module doc).

    ``live()`` names the role's other instances membership holds neither down nor left (read
    again at every retry). Thread-safe: holds come from the transport's I/O thread, answers
    from the node daemon's, retries from this object's own timer thread (started on the first
    hold); ``decided`` and ``ask`` are never called holding the lock.
    """

    def __init__(self, name: str, ask: Ask, live: Callable[[], Iterable[str]], *,
                 timeout: float = 2.0, max_wait: float = 16.0, give_up: float | None = None,
                 stand_in: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        if timeout <= 0 or max_wait < timeout:
            raise ValueError("the sibling check needs 0 < timeout <= max_wait")
        self.name, self.timeout, self.max_wait = name, timeout, max_wait
        #: Seconds after which a message no longer waits for siblings that have not answered
        #: (None: it waits for as long as membership holds them alive).
        self.give_up = give_up
        #: A copy held with a message whose delivery went back to the queue meanwhile is
        #: decided in its place. Right where the copy may be that delivery itself, handed out
        #: again (redelivered messages); not where every copy is another broker message and
        #: the one that went back comes back redelivered (first deliveries).
        self.stand_in = stand_in
        self._ask, self._live, self._clock = ask, live, clock
        self._held: dict[str, _Held] = {}
        self._due: list[tuple[float, str]] = []
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: Messages held, then acknowledged as applied by a sibling or applied here; second
        #: copies of a message held already; questions sent again.
        self.counts = {"held": 0, "duplicates": 0, "applied": 0, "copies": 0, "asked_again": 0,
                       "gave_up": 0}
        #: Seconds from holding to deciding, in all and at most: what the check costs.
        self.waited = {"total": 0.0, "max": 0.0}

    def hold(self, message_id: str, siblings: Iterable[str], decided: Decided) -> None:
        """Hold a redelivered message until ``siblings`` answered; ``decided(True)`` if one
        applied it, ``decided(False)`` if none did (then apply it)."""
        waiting = set(siblings)
        with self._lock:
            if self._closed:
                return
            held = self._held.get(message_id)
            if held is not None:  # a second copy of a message already held: decided with it
                self.counts["copies"] += 1
                held.copies.append(decided)
                return
            self.counts["held"] += 1
            now = self._clock()
            due = now + self.timeout
            self._held[message_id] = _Held(message_id, waiting, decided, self.timeout, due,
                                           since=now)
            heapq.heappush(self._due, (due, message_id))
            self._start_timer()
            if self._due[0][1] == message_id:  # the timer sleeps till an earlier one else
                self._lock.notify()
        for sibling in sorted(waiting):
            self._ask(sibling, message_id)

    def answer_for(self, message_id: str, asker: str) -> str | None:
        """``busy`` (ask again) if a copy of ``message_id`` held here goes first (it is being
        handed to the cells, or this node's name sorts before ``asker``'s); None: the cells'
        journals answer (a copy held here undecided is not applied, but an earlier copy may
        have been).

        A copy held here undecided that lets ``asker`` go first waits for ``asker`` again: an
        answer it had from ``asker`` before ``asker`` held its own copy said ``not-applied``,
        and ``asker`` is about to apply it. Without that both applied it."""
        with self._lock:
            held = self._held.get(message_id)
            if held is None:
                return None
            if held.deciding or self.name < asker:
                return BUSY
            if asker not in held.waiting:
                held.waiting.add(asker)
                self._reschedule(held, self._clock() + self.timeout / 8)
        return None

    def holds(self, message_id: str) -> bool:
        """Whether a copy of ``message_id`` is held here (decided or not)."""
        with self._lock:
            return message_id in self._held

    def heard(self, sibling: str, message_id: str, answer: str) -> None:
        """``sibling``'s answer about ``message_id``."""
        with self._lock:
            held = self._held.get(message_id)
            if held is None or held.deciding or sibling not in held.waiting:
                return
            if answer == APPLIED:
                held.deciding = True
            elif answer == NOT_APPLIED:
                held.waiting.discard(sibling)
                held.deciding = not held.waiting
            else:  # busy: asked again soon, not at the full wait
                self._reschedule(held, self._clock() + self.timeout / 8)
                return
        if held.deciding:
            self._decide(held, answer == APPLIED)

    def gone(self, sibling: str) -> None:
        """Membership declared ``sibling`` down or left: it is no longer waited for."""
        settled = []
        with self._lock:
            for held in self._held.values():
                if not held.deciding and sibling in held.waiting:
                    held.waiting.discard(sibling)
                    if not held.waiting:
                        held.deciding = True
                        settled.append(held)
        for held in settled:
            self._decide(held, False)

    def holding(self) -> int:
        with self._lock:
            return len(self._held)

    def close(self) -> list[str]:
        """Stop: the ids still held, which are never decided (their deliveries go back)."""
        with self._lock:
            self._closed = True
            ids = [i for i, held in self._held.items() if not held.deciding]
            self._held.clear()
            self._due.clear()
            self._lock.notify()
        return ids

    # -- deciding ------------------------------------------------------------------------------

    def _decide(self, held: _Held, applied_elsewhere: bool) -> None:
        """Call the decisions (outside the lock), then forget the message: while they run it
        is still held, so a sibling asking meanwhile hears ``busy`` and asks again."""
        waited = self._clock() - held.since
        with self._lock:
            self.counts["duplicates" if applied_elsewhere else "applied"] += 1
            self.waited["total"] += waited
            self.waited["max"] = max(self.waited["max"], waited)
        try:
            # The same message twice: one is enough, the first whose delivery is still here
            # (``stand_in``). The others were told "applied elsewhere" even when the first had
            # gone back to the queue with a closed connection and come back as the copy: then
            # no copy was applied anywhere (test_once_per_role, under CI's load: 1 in 1,500).
            elsewhere = applied_elsewhere
            for decide in [held.decided, *held.copies]:
                try:
                    went_back = decide(elsewhere) is False
                except Exception as error:  # the node's code, on the timer's thread too:
                    # raising here ended it, and every later retry and give-up with it
                    log_failure(log, error, "%s: deciding %s", self.name, held.message_id)
                    went_back = False
                elsewhere = elsewhere or not (went_back and self.stand_in)
        finally:
            with self._lock:
                if self._held.get(held.message_id) is held:
                    del self._held[held.message_id]

    def _reschedule(self, held: _Held, due: float) -> None:
        """(Holding the lock.)"""
        if due < held.due:
            held.due = due
            heapq.heappush(self._due, (due, held.message_id))
            self._lock.notify()

    # -- the timer thread ----------------------------------------------------------------------

    def _start_timer(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"siblings-{self.name}",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                now = self._clock()
                due = []
                while self._due and self._due[0][0] <= now:
                    _, message_id = heapq.heappop(self._due)
                    held = self._held.get(message_id)
                    if held is not None and not held.deciding and held.due <= now:
                        due.append(held)
                if not due:
                    wait = self._due[0][0] - now if self._due else None
                    self._lock.wait(wait)
                    continue
            self._retry(due, now)

    def _retry(self, due: list[_Held], now: float) -> None:
        """Ask again the siblings that did not answer in time and still live; decide those
        that wait for nobody any longer."""
        live = set(self._live())
        ask: list[tuple[str, str]] = []
        settled = []
        with self._lock:
            for held in due:
                if held.deciding:
                    continue
                held.waiting &= live
                if held.waiting and self.give_up is not None and now - held.since >= self.give_up:
                    log.warning("%s: %s waited %.1f s for %s, who did not answer: it waits no "
                                "longer", self.name, held.message_id, now - held.since,
                                ", ".join(sorted(held.waiting)))
                    self.counts["gave_up"] += 1
                    held.waiting.clear()
                if not held.waiting:
                    held.deciding = True
                    settled.append(held)
                    continue
                held.asked += 1
                held.wait = min(held.wait * 2, self.max_wait)
                held.due = now + held.wait
                if self.give_up is not None:  # else the doubled wait outlasts it (7 x timeout)
                    held.due = min(held.due, max(held.since + self.give_up, now))
                heapq.heappush(self._due, (held.due, held.message_id))
                ask.extend((sibling, held.message_id) for sibling in sorted(held.waiting))
            self.counts["asked_again"] += len(ask)
        for held in settled:
            self._decide(held, False)
        for sibling, message_id in ask:
            log.info("%s: asking %s again whether it applied %s", self.name, sibling, message_id)
            self._ask(sibling, message_id)
