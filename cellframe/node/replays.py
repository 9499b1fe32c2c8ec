"""Replay protection across a role's instances: a copy of a signed role message replayed to
the role may reach an instance whose own replay cache never saw the first copy.

A node's replay cache (``cellframe.wire.replay``) remembers the signed messages its own gate
admitted, until their expiry. A message sent to a role reaches one of the role's instances,
and a copy of it replayed to the same role may reach another. Two things close that:

* **Asking** (``replays_across_role="ask"``, the default). A signed role message the broker
  hands out for the first time is held, neither applied nor acknowledged, until each of the
  role's other live instances (by membership) has said whether its gate admitted a copy:
  ``(were-admitted :by ME :entries '((KEY ID ROUTING-KEY) ...))`` to ``node.<S>``, answered
  ``(admitted-answers :node S :answers '((KEY ID ROUTING-KEY A) ...))``, A one of
  ``applied`` (admitted: this copy is refused as ``replayed``), ``not-applied`` or ``busy``
  (ask again soon). The exchange and its rules are ``cellframe.node.siblings``': of two
  instances holding copies at once, the one whose name sorts first goes first and the other
  asks it again, so exactly one applies it. It costs a round trip to each sibling before a
  role message is applied (latency, not a blocked thread: held messages wait in the
  consumer's prefetch window). The questions to a sibling are batched (``Questions``): one
  batch on its way at a time, the next sent with what came meanwhile once it is answered,
  so under load a question and an answer cover many messages. A sibling that does not
  answer is asked again, for at most four ``sibling_timeout`` (8 s by default): a node of
  an older version, which has no such verb, or a stuck one, must not stop the role; that
  message then has only the gossip. Without a membership cell a node knows no siblings and
  only gossips. ``Node(replays_across_role=...)``, else the DNS setting ``replays.across-role``
  (``ask`` or ``gossip``; the cluster's, then the node's own record; read at start), else
  ``ask``.
* **Gossip**, always (signed clusters): every ``interval`` (50 ms) a node tells the role's
  instances (``each.<role>``, its own node queue included, which it ignores) the signed role
  messages it admitted since: ``(replays-seen :by NODE :entries '((KEY ID ROUTING-KEY WHERE
  EXPIRES) ...))``, and each puts them in its own cache (news from a node its membership
  has not seen play the role is dropped; each entry is kept a message's life at most; news
  naming a copy held here answers it ``applied``). So a replay that comes after an instance
  left or died is refused too, with nobody to ask. With ``"gossip"`` alone (no asking), a
  replay that reaches another instance within about that interval of the first copy is
  admitted there.

What gossip costs: one message a node every 50 ms while signed role messages come in
(entries of about 100 bytes, cut to fit a message), nothing otherwise, and one cache insert
an entry on each sibling; a node that gets more than ``MAX_PENDING`` admissions in one
interval tells only the first (``dropped`` counts the rest).

A copy the broker marks ``redelivered`` passes the cache and is not asked about (a lost ack's
message must be applied somewhere: the durable sibling check and the cells' dedup settle
it). A publisher's resend (``RESENT_HEADER``) is asked about like a first copy, and refused
as a replay where its first copy was admitted: that copy is applied or comes back
``redelivered``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigError
from ..language.printer import NEEDS_ESCAPE, write
from ..language.symbols import Keyword, Symbol
from ..wire.replay import ReplayCache
from ..wire.routing import each_key
from ..wire.signing import DEFAULT_MAX_AGE, DEFAULT_MAX_SKEW

__all__ = ["GOSSIP_INTERVAL", "MAX_PENDING", "MODES", "SETTING", "Questions", "ReplayGossip",
           "message_budgets", "printed_size", "replay_entry", "replay_id", "replays_mode"]

log = logging.getLogger(__name__)

#: Seconds between a node's news of what it admitted.
GOSSIP_INTERVAL = 0.05
#: Admissions a node holds for its next news, at most.
MAX_PENDING = 20_000
#: Entries one ``(replays-seen ...)`` may carry, at most (a sibling refuses more).
MAX_ENTRIES = 2_000
#: Bytes of entries in one message.
_BUDGET = 40 * 1024

Entry = tuple[str, str, str, str]

#: The DNS setting that chooses how a role's instances keep a replay from another one.
SETTING = "replays.across-role"
#: Its values: hold and ask (exact), or only tell (a window of about ``GOSSIP_INTERVAL``).
MODES = ("ask", "gossip")


def replays_mode(*layers: Mapping[str, str]) -> str:
    """The mode the settings choose (later layers win; ``ask`` if none says);
    ``ConfigError`` for any other value."""
    mode = "ask"
    for settings in layers:
        if SETTING in settings:
            mode = settings[SETTING].strip()
    if mode not in MODES:
        raise ConfigError(f"{SETTING}: ask or gossip, not {mode[:80]!r}")
    return mode


#: (key id, message id, routing key) of a held role message, as a question names it.
Asked = tuple[str, str, str]
#: Entries one ``(were-admitted ...)`` carries at most (a sibling refuses more), and bytes.
MAX_ASKED = 256
_ASKED_BUDGET = 24 * 1024


class Questions:
    """The questions a node asks its siblings about held role messages, batched: one batch on
    its way to a sibling at a time; what is asked meanwhile waits for its answer (``answered``)
    and goes in the next. A batch not answered within ``patience`` no longer holds the next
    back (its sibling is slow, or the answer was lost: the held messages are asked about
    again by their ``SiblingCheck``).

    ``send(sibling, entries)`` publishes one ``(were-admitted ...)``; it is never called
    holding the lock.
    """

    def __init__(self, send: Callable[[str, list[Asked]], None], *, patience: float,
                 clock: Callable[[], float] = time.monotonic,
                 budget: int = _ASKED_BUDGET) -> None:
        self._send, self.patience, self._clock = send, patience, clock
        #: Bytes of entries in one batch (a node that takes smaller messages asks for less).
        self.budget = budget
        self._waiting: dict[str, list[Asked]] = {}
        self._sent_at: dict[str, float] = {}
        self._lock = threading.Lock()
        #: Batches sent, and entries in them.
        self.batches = self.entries = 0

    def ask(self, sibling: str, asked: Asked) -> None:
        with self._lock:
            self._waiting.setdefault(sibling, []).append(asked)
            sent_at = self._sent_at.get(sibling)
            if sent_at is not None and self._clock() - sent_at < self.patience:
                return  # goes with the next batch, once this one is answered
            batch = self._next(sibling)
        self._send(sibling, batch)

    def answered(self, sibling: str) -> None:
        """``sibling`` answered a batch: send it what waits, if anything."""
        with self._lock:
            if not self._waiting.get(sibling):
                self._sent_at.pop(sibling, None)
                return
            batch = self._next(sibling)
        self._send(sibling, batch)

    def _next(self, sibling: str) -> list[Asked]:
        """(Holding the lock.) The next batch for ``sibling``, marked on its way."""
        waiting = self._waiting[sibling]
        cut, used = 0, 0
        while cut < len(waiting) and cut < MAX_ASKED:
            used += sum(map(printed_size, waiting[cut])) + 8
            if cut and used > self.budget:
                break
            cut += 1
        batch = waiting[:cut]
        del waiting[:cut]
        self._sent_at[sibling] = self._clock()
        self.batches += 1
        self.entries += len(batch)
        return batch


def message_budgets(max_message_bytes: int) -> tuple[int, int]:
    """The bytes of entries in a batch of questions and in a message of news, for siblings
    that take messages of ``max_message_bytes`` at most: the defaults (24 and 40 KB, at
    64 KB), or a half and five eighths of it, room left for the words of the answers (16
    bytes an entry, 256 entries) and the head of the news."""
    return min(_ASKED_BUDGET, max_message_bytes // 2), min(_BUDGET, max_message_bytes * 5 // 8)


def printed_size(text: str) -> int:
    """The bytes ``text`` takes in a message: UTF-8, quoted, escaped as the printer does. The
    cuts count these, not characters: a control character is printed in six bytes
    (``\\u0001``), so batches of 1,000-character ids cut by ``len`` came to 84-109 KB,
    which a sibling refused whole as oversized (tests/test_attack_replays.py)."""
    if text.isascii() and NEEDS_ESCAPE.search(text) is None:
        return len(text) + 2
    return len(write(text).encode())


def replay_id(entry: Entry) -> str:
    """The id a held role message goes by in the node's ``SiblingCheck``: its key id,
    message id and routing key (the queue is always a role queue), unambiguously joined."""
    return json.dumps(entry[:3])


def replay_entry(held_id: str) -> Entry:
    """The replay cache entry of a held role message's id (``replay_id``'s inverse)."""
    key, message, route = json.loads(held_id)
    return key, message, route, "role"
Publish = Callable[[str, list[Any]], None]


class ReplayGossip:
    """One node's side: ``admitted`` from its gate, ``heard`` from its siblings' news."""

    def __init__(self, name: str, cache: ReplayCache, publish: Publish, *,
                 interval: float = GOSSIP_INTERVAL,
                 max_life: float = DEFAULT_MAX_AGE + DEFAULT_MAX_SKEW,
                 tellers: Callable[[], list[str] | None] = lambda: None,
                 budget: int = _BUDGET,
                 on_heard: Callable[[str, list[Entry]], None] = lambda by, entries: None,
                 ) -> None:
        self.name = name
        #: Told ``(by, entries)`` of the news taken: a copy held here that ``by`` names was
        #: admitted there (``Node``: as its answer ``applied``).
        self.on_heard = on_heard
        #: Bytes of entries in one message of news.
        self.budget = budget
        #: The nodes whose news is taken: those membership has seen play the role, live or
        #: not (None: the node has no membership, and takes anyone's). A node of another role
        #: told one instance that it admitted the ids a client was about to send: refused
        #: there, and, asked, that instance answered the others ``applied``.
        self.tellers = tellers
        self.cache = cache
        self.publish = publish
        self.interval = interval
        #: Seconds ahead an admitted message expires at most (the signer's ``max_age`` and
        #: ``max_skew``): a sibling's entry is kept no longer. The cache forgets in arrival
        #: order, so one entry kept for ever would keep every later one too.
        self.max_life = max_life
        #: Entries told, entries taken, admissions not told (too many), news from strangers.
        self.told = self.heard_entries = self.dropped = self.strangers = 0
        self._pending: list[tuple[str, Entry, float]] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def admitted(self, entry: Entry, expires: float) -> None:
        """The gate admitted a signed message from a role queue (``entry[2]``: ``role.R``)."""
        role = entry[2].partition(".")[2]
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                self.dropped += 1
                return
            self._pending.append((role, entry, expires))
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(target=self._run, name=f"replays-{self.name}",
                                                daemon=True)
                self._thread.start()

    def heard(self, by: str, entries: Any, now: float | None = None) -> int:
        """A sibling's news: put each entry in the cache until its expiry; the number taken.
        ``ValueError`` for news that is not a list of ``(KEY ID KEY WHERE EXPIRES)``."""
        if by == self.name:
            return 0  # its own news, through its own binding of each.<role>
        tellers = self.tellers()
        if tellers is not None and by not in tellers:
            self.strangers += 1
            return 0
        if not isinstance(entries, list) or len(entries) > MAX_ENTRIES:
            raise ValueError(f"replays-seen takes at most {MAX_ENTRIES} entries in a list")
        now = time.time() if now is None else now
        if not all(isinstance(item, list) and len(item) == 5
                   and all(isinstance(part, str) and len(part) <= 1100 for part in item[:4])
                   and type(item[4]) in (int, float) for item in entries):
            raise ValueError("an entry is (KEY-ID MESSAGE-ID ROUTING-KEY WHERE EXPIRES)")
        taken: list[Entry] = []
        last = now + self.max_life
        for item in entries:
            if item[4] >= now:  # min before float: a 400-digit int overflows a float
                entry = (item[0], item[1], item[2], item[3])
                self.cache.seen(entry, float(min(item[4], last)), now)
                taken.append(entry)
        self.heard_entries += len(taken)
        if taken:
            self.on_heard(by, taken)
        return len(taken)

    def close(self) -> None:
        """Stop, telling first what was admitted since the last news: a stopping node is
        about to be asked nothing more, so an instance it never told admitted a replay."""
        self._stopped.set()
        try:
            self._tell()
        except Exception as error:  # a closed transport: nothing to tell with
            log.debug("%s: last replay news not sent: %s", self.name, error)

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self._tell()
            except Exception as error:  # a closed transport while stopping: nothing to tell
                log.debug("%s: replay news not sent: %s", self.name, error)

    def _tell(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        by_role: dict[str, list[list[Any]]] = {}
        for role, entry, expires in pending:
            by_role.setdefault(role, []).append([*entry, expires])
        for role, entries in by_role.items():
            for part in _parts(entries, self.budget):
                self.publish(each_key(role), [Symbol("replays-seen"), Keyword("by"), self.name,
                                              Keyword("entries"), [_QUOTE, part]])
                self.told += len(part)


_QUOTE = Symbol("quote")


def _parts(entries: list[list[Any]], budget: int = _BUDGET) -> list[list[list[Any]]]:
    """``entries`` cut to fit a message each (``budget`` bytes, ``MAX_ENTRIES`` entries)."""
    parts: list[list[list[Any]]] = [[]]
    used = 0
    for entry in entries:
        size = sum(map(printed_size, entry[:4])) + 32
        if parts[-1] and (used + size > budget or len(parts[-1]) >= MAX_ENTRIES):
            parts.append([])
            used = 0
        parts[-1].append(entry)
        used += size
    return parts if parts[0] else []
