"""Monitors: which cells asked to hear that a cell, of this node or another, or a whole node
went down, and the notices that tell them, as ordinary messages they may ignore.

A node keeps, for its own cells (the watchers):

* watches of its own cells by name: a crash or failure here tells them at once;
* watches of another node's cell: the watching node asks that node, with one fire-and-forget
  ``(monitor :cell C :by M)`` to ``node.<N>``, to send it ``(cell-down ...)`` when C crashes or
  fails; its daemon hands each notice to the watchers here. Nothing waits for an answer. A
  request that comes back unroutable (N has no queue: not started yet, or its broker failing
  over, which took 0.2 s on the 3-node cluster) is sent again after ``RETRY_FIRST`` seconds,
  doubling up to ``RETRY_MAX``, until N's queue takes it; it tells the watchers nothing, since
  whether N is down is membership's to judge;
* watches of whole nodes.

Each notice has an id, ``<node>-<incarnation>-<n>`` of the node that made it, and the watcher
gets it as the message's id (``monitor-<id>``): a copy of one notice is a duplicate to the
watcher's dedup memory, never a second crash. A crash notice for another node carries its id
(``:id``), so the watchers there get the same one however often it is sent.

A crash notice for another node that comes back unroutable (that node has no queue: its
broker failing over, or the node between two lives) is sent again after ``RETRY_FIRST``
seconds, doubling up to ``RETRY_MAX``, at most ``NOTICE_SENDS`` times in all (about a minute),
and only while that node still asks for it and is not down by this node's membership: once it
is down or left, its watchers are gone or will be told ``node-down`` by their own node and
re-armed, so the notice is dropped. Erlang's promise is the same: the DOWN arrives, or the
connection is down.

What a node is down is this node's own membership's verdict (its ``down``/``left`` events,
``cellframe.healing.membership``), never a peer's hint: a false 'down' a live node refutes
tells nobody here unless this node's membership believed it too. Each life (incarnation) of
a node is reported down once, however often and late the news repeats; a watch of a cell on
it is then disarmed until the node is heard alive again, when the request is sent again (the
new life knows nothing of the old one's watchers).

The node calls this from many threads (a watcher's, a dying cell's, membership's, its
daemon's, a transport's on an unroutable request): one lock guards the tables, and no
message is sent or told while it is held.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..language.symbols import Keyword, Symbol
from ..wire.routing import node_key

__all__ = ["Monitors"]

log = logging.getLogger(__name__)

#: Membership's events that end a node's life here, and the reason a node-down gives.
_GONE = {"down": "down", "left": "left"}
#: Membership's events that say a node lives (again): a watch of one of its cells re-arms.
_BACK = frozenset({"up", "held"})

#: Seconds before an unroutable request is sent again, the first time and at most.
RETRY_FIRST, RETRY_MAX = 0.5, 30.0

#: How often a crash notice for another node is sent at most, the first time included: with
#: the delays above, the last one goes about 61 s after the first (0.5 + 1 + ... + 16 + 30).
NOTICE_SENDS = 8

#: tell(watcher, expr, notice_id): hand ``expr`` to the local cell ``watcher`` as an ordinary
#: message, whose id is made of ``notice_id`` (the same for every copy of one notice).
Tell = Callable[[str, list[Any], str], None]
#: send(target, expr, on_return): publish fire and forget; ``on_return`` hears if unroutable.
Send = Callable[[str, list[Any], Callable[[Any, str], None]], None]


@dataclass(slots=True)
class _RemoteWatch:
    """The watchers here of one cell of another node, and whether a node-down notice is still
    due (False once they heard that its node went down, until it is heard alive again)."""

    watchers: set[str] = field(default_factory=set)
    armed: bool = True


def cell_down(cell: str, node: str, condition: str, reason: str) -> list[Any]:
    """``(cell-down :cell C :node N :condition C :reason R)``."""
    return [Symbol("cell-down"), Keyword("cell"), cell, Keyword("node"), node,
            Keyword("condition"), condition, Keyword("reason"), reason]


def with_id(news: list[Any], notice_id: str) -> list[Any]:
    """``news`` as sent to another node: with ``:id``, so that its watchers there get the
    same message id from every copy of it."""
    return [*news, Keyword("id"), notice_id]


def node_down(node: str, incarnation: int, reason: str) -> list[Any]:
    """``(node-down :node N :incarnation I :reason down|left)``."""
    return [Symbol("node-down"), Keyword("node"), node, Keyword("incarnation"), incarnation,
            Keyword("reason"), reason]


class Monitors:
    """The monitors of one node: who watches what, and the notices owed to them."""

    def __init__(self, node: str, tell: Tell, send: Send, new_id: Callable[[], str]) -> None:
        self.node = node
        self._tell, self._send, self._new_id = tell, send, new_id
        self._lock = threading.Lock()
        #: A cell of this node -> the cells of this node watching it.
        self._local: dict[str, set[str]] = {}
        #: (node, cell) of another node -> the cells of this node watching it.
        self._remote: dict[tuple[str, str], _RemoteWatch] = {}
        #: Another node -> the cells of this node watching it.
        self._nodes: dict[str, set[str]] = {}
        #: A cell of this node -> the other nodes that asked to hear when it goes down.
        self._asked: dict[str, set[str]] = {}
        #: Another node -> the newest incarnation of it reported down here, and the reason.
        self._down: dict[str, tuple[int, str]] = {}
        #: Another node -> the newest incarnation of it heard alive here.
        self._alive: dict[str, int] = {}
        self._closed = False
        self._timers: dict[tuple[str, str], threading.Timer] = {}
        #: (node, notice id) -> the timer that sends a returned crash notice to it again.
        self._resends: dict[tuple[str, str], threading.Timer] = {}

    def close(self) -> None:
        """Stop sending requests and notices again (the node is stopping)."""
        with self._lock:
            self._closed = True
            timers = [*self._timers.values(), *self._resends.values()]
            self._timers, self._resends = {}, {}
        for timer in timers:
            timer.cancel()

    # -- asking: from a watcher's thread ---------------------------------------------------

    def watch_cell(self, watcher: str, cell: str, node: str | None = None) -> None:
        """``watcher`` hears ``(cell-down ...)`` when ``cell`` of ``node`` (None: this one)
        crashes or fails, or when that node goes down."""
        if node is None or node == self.node:
            with self._lock:
                self._local.setdefault(cell, set()).add(watcher)
            return
        with self._lock:
            watch = self._remote.get((node, cell))
            if watch is None:
                watch = self._remote[(node, cell)] = _RemoteWatch(armed=self._gone(node) is None)
            watch.watchers.add(watcher)
            armed = watch.armed
        if armed:
            self._ask(node, cell)  # again for a second watcher: the other node keeps a set
        else:  # its node is down: the new watcher hears so at once; asked when it is back
            self._notify([watcher], cell_down(cell, node, "down", "node-down"))

    def watch_node(self, watcher: str, node: str) -> None:
        """``watcher`` hears ``(node-down ...)`` once for each life of ``node`` that ends (at
        once if the last one heard of ended already)."""
        with self._lock:
            self._nodes.setdefault(node, set()).add(watcher)
            gone = self._gone(node)
        if gone is not None:
            self._notify([watcher], node_down(node, *gone))

    def unwatch_cell(self, watcher: str, cell: str, node: str | None = None) -> None:
        """Undo ``watch_cell``: ``watcher`` hears no more of ``cell`` of ``node`` (a notice
        already told stays in its mailbox). The last watcher here of another node's cell
        tells that node to stop sending, fire and forget."""
        with self._lock:
            if node is None or node == self.node:
                _discard(self._local, cell, watcher)
                return
            watch = self._remote.get((node, cell))
            if watch is None:
                return
            watch.watchers.discard(watcher)
            last = not watch.watchers
            if last:
                del self._remote[(node, cell)]
                timer = self._timers.pop((node, cell), None)
                if timer is not None:
                    timer.cancel()
        if not last:
            return
        self._send(node_key(node), [Symbol("demonitor"), Keyword("cell"), cell,
                                    Keyword("by"), self.node], _undelivered)
        with self._lock:
            again = (node, cell) in self._remote and self._remote[(node, cell)].armed
        if again:  # another cell watched it meanwhile, and its request may have gone first
            self._ask(node, cell)

    def unwatch_node(self, watcher: str, node: str) -> None:
        """Undo ``watch_node``."""
        with self._lock:
            _discard(self._nodes, node, watcher)

    def _gone(self, node: str) -> tuple[int, str] | None:
        """The last life of ``node`` and why it ended, if none was heard alive since (hold
        the lock)."""
        ended = self._down.get(node)
        if ended is None or self._alive.get(node, -1) > ended[0]:
            return None
        return ended

    def _ask(self, node: str, cell: str, delay: float = RETRY_FIRST) -> None:
        def unroutable(envelope: Any, reason: str) -> None:  # a transport's thread
            self._retry_later(node, cell, delay)

        self._send(node_key(node), [Symbol("monitor"), Keyword("cell"), cell,
                                    Keyword("by"), self.node], unroutable)

    def _retry_later(self, node: str, cell: str, delay: float) -> None:
        """The request found no queue of ``node``: send it again in ``delay`` seconds."""
        with self._lock:
            watch = self._remote.get((node, cell))
            if self._closed or watch is None or (node, cell) in self._timers:
                return  # stopping, or a retry is due already
            timer = _later(self._timers, (node, cell), delay, self._retry,
                           node, cell, min(2 * delay, RETRY_MAX))
        timer.start()

    def _retry(self, node: str, cell: str, delay: float) -> None:
        with self._lock:
            self._timers.pop((node, cell), None)
            if self._closed or (node, cell) not in self._remote:
                return
        self._ask(node, cell, delay)

    def askers(self, cell: str) -> frozenset[str]:
        """The other nodes that asked to hear when ``cell`` of this node goes down."""
        with self._lock:
            return frozenset(self._asked.get(cell, ()))

    # -- the other side: another node asked, this node tells it ----------------------------

    def asked_by(self, node: str, cell: str) -> None:
        """``node`` wants ``(cell-down ...)`` on ``node.<node>`` when ``cell`` here goes down."""
        if node != self.node:
            with self._lock:
                self._asked.setdefault(cell, set()).add(node)

    def unasked_by(self, node: str, cell: str) -> None:
        """``node`` no longer wants to hear when ``cell`` here goes down."""
        with self._lock:
            _discard(self._asked, cell, node)

    def cell_went_down(self, cell: str, condition: str, reason: str) -> None:
        """``cell`` of this node crashed (``restarting``) or failed: tell its watchers here,
        and the other nodes that asked."""
        with self._lock:
            watchers = sorted(self._local.get(cell, set()) - {cell})
            nodes = sorted(self._asked.get(cell, ()))
        news, notice_id = cell_down(cell, self.node, condition, reason), self._new_id()
        self._notify(watchers, news, notice_id)
        for node in nodes:
            self._tell_node(node, cell, with_id(news, notice_id), notice_id, 1)

    def heard_cell_down(self, node: str, cell: str, condition: str, reason: str,
                        notice_id: str | None = None) -> None:
        """Another node says its ``cell`` went down: tell the watchers here of that cell
        (with the notice's id if it gave one: a copy of it is then a duplicate to them)."""
        with self._lock:
            watch = self._remote.get((node, cell))
            watchers = sorted(watch.watchers) if watch is not None else []
        self._notify(watchers, cell_down(cell, node, condition, reason), notice_id)

    def notices_owed(self) -> int:
        """How many crash notices for other nodes came back unroutable and wait to be sent
        again."""
        with self._lock:
            return len(self._resends)

    def _tell_node(self, node: str, cell: str, news: list[Any], notice_id: str,
                   sends: int, delay: float = RETRY_FIRST) -> None:
        """Send a crash notice to ``node`` (the ``sends``-th time); again later if returned."""
        def unroutable(envelope: Any, reason: str) -> None:  # a transport's thread
            self._resend_later(node, cell, news, notice_id, sends, delay)

        self._send(node_key(node), news, unroutable)

    def _resend_later(self, node: str, cell: str, news: list[Any], notice_id: str,
                      sends: int, delay: float) -> None:
        with self._lock:
            why = self._no_resend(node, cell, sends)
            if why is None:
                timer = _later(self._resends, (node, notice_id), delay, self._resend,
                               node, cell, news, notice_id, sends + 1, min(2 * delay, RETRY_MAX))
        if why is not None:
            log.info("%s: notice %s that %s went down not delivered to %s: %s", self.node,
                     notice_id, cell, node, why)
            return
        timer.start()

    def _no_resend(self, node: str, cell: str, sends: int) -> str | None:
        """Why a returned notice for ``node`` is not sent again, or None (hold the lock)."""
        if self._closed:
            return "this node is stopping"
        if self._gone(node) is not None:
            return "that node is down"  # its watchers went with it, or are told node-down
        if node not in self._asked.get(cell, ()):
            return "that node no longer asks"
        if sends >= NOTICE_SENDS:
            return f"sent {sends} times, unroutable each time"
        return None

    def _resend(self, node: str, cell: str, news: list[Any], notice_id: str, sends: int,
                delay: float) -> None:
        with self._lock:
            self._resends.pop((node, notice_id), None)
            why = self._no_resend(node, cell, sends - 1)
        if why is None:
            self._tell_node(node, cell, news, notice_id, sends, delay)

    # -- membership's verdicts: from the membership cell's thread, through Node.emit -------

    def heard_event(self, kind: str, fields: dict[str, Any]) -> None:
        """Act on membership's ``down``, ``left``, ``up`` and ``held`` events; others pass."""
        member, incarnation = fields.get("member"), fields.get("incarnation")
        if not isinstance(member, str) or not isinstance(incarnation, int) or member == self.node:
            return
        if kind in _GONE:
            self._node_gone(member, incarnation, _GONE[kind])
        elif kind in _BACK:
            self._node_back(member, incarnation)

    def _node_gone(self, node: str, incarnation: int, reason: str) -> None:
        with self._lock:
            if incarnation <= self._down.get(node, (-1, ""))[0]:
                return  # this life, or a later one, was reported already: late or repeated
            self._down[node] = (incarnation, reason)
            watchers = sorted(self._nodes.get(node, ()))
            cells = []
            for (where, cell), watch in self._remote.items():
                if where == node and watch.armed:
                    watch.armed = False
                    cells.append((cell, sorted(watch.watchers)))
            # Nodes that asked are kept, even this one: a 'down' may be false (a pause), and a
            # node refuting it keeps its watches; a notice to a gone node is merely unroutable.
        self._notify(watchers, node_down(node, incarnation, reason))
        for cell, cell_watchers in cells:
            self._notify(cell_watchers, cell_down(cell, node, "down", "node-down"))

    def _node_back(self, node: str, incarnation: int) -> None:
        with self._lock:
            if incarnation <= self._down.get(node, (-1, ""))[0]:
                return  # news of the life already reported down
            self._alive[node] = max(incarnation, self._alive.get(node, -1))
            cells = [cell for (where, cell), watch in self._remote.items() if where == node]
            for cell in cells:
                self._remote[(node, cell)].armed = True
        for cell in cells:  # asked again: a new life knows nothing of the old one's watchers
            self._ask(node, cell)

    # -- telling ---------------------------------------------------------------------------

    def _notify(self, watchers: list[str], news: list[Any], notice_id: str | None = None) -> None:
        """Tell ``watchers`` ``news``, one notice (a fresh id, unless given) for them all."""
        notice_id = notice_id or self._new_id()
        for watcher in watchers:
            self._tell(watcher, news, notice_id)


def _later(timers: dict[tuple[str, str], threading.Timer], key: tuple[str, str],
           delay: float, call: Callable[..., None], *args: Any) -> threading.Timer:
    """A daemon timer that calls ``call(*args)`` in ``delay`` seconds, kept in ``timers`` under
    ``key`` (so ``close`` can cancel it), not yet started: the caller starts it once it has
    let go of the lock (hold it)."""
    timer = threading.Timer(delay, call, args=args)
    timer.name, timer.daemon = f"monitor:{key[0]}/{key[1]}", True
    timers[key] = timer
    return timer


def _discard(table: dict[str, set[str]], key: str, member: str) -> None:
    """Remove ``member`` from ``table[key]``, and the key once its set is empty."""
    members = table.get(key)
    if members is not None:
        members.discard(member)
        if not members:
            del table[key]


def _undelivered(envelope: Any, reason: str) -> None:
    """A ``demonitor`` for a node that is gone: it has no watch left to end."""
    log.debug("a monitor's message found no node to receive it: %s", reason)
