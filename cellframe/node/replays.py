"""Replay protection across a role's instances: what one node's gate admitted from its role
queue, the others learn.

A node's replay cache (``cellframe.wire.replay``) remembers the signed messages its own gate
admitted, until their expiry. A message sent to a role reaches one of the role's instances,
and a copy of it replayed to the same role may reach another, whose cache never saw it. So
every ``interval`` (50 ms) a node tells the role's instances (``each.<role>``, its own node
queue included, which it ignores) the signed role messages its gate admitted since:
``(replays-seen :by NODE :entries '((KEY ID ROUTING-KEY WHERE EXPIRES) ...))``, and each puts
them in its own cache. A replay that reaches a sibling after that is refused as ``replayed``.

What it costs: one message a node every 50 ms while signed role messages come in (entries of
about 100 bytes, cut to fit a message), nothing otherwise, and one cache insert an entry on
each sibling. What it leaves: a replay that reaches another instance within about that
interval of the first copy (before the news) is admitted there; a node that gets more than
``MAX_PENDING`` admissions in one interval tells only the first (``dropped`` counts the rest).

A copy the broker marks ``redelivered`` passes the cache anyway (a lost ack's message must
be applied somewhere). A publisher's resend (``RESENT_HEADER``) is refused as a replay by a
sibling that heard of its first copy: that copy was admitted, so it is applied or comes back
``redelivered``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..language.symbols import Keyword, Symbol
from ..wire.replay import ReplayCache
from ..wire.routing import each_key

__all__ = ["GOSSIP_INTERVAL", "MAX_PENDING", "ReplayGossip"]

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
Publish = Callable[[str, list[Any]], None]


class ReplayGossip:
    """One node's side: ``admitted`` from its gate, ``heard`` from its siblings' news."""

    def __init__(self, name: str, cache: ReplayCache, publish: Publish, *,
                 interval: float = GOSSIP_INTERVAL) -> None:
        self.name = name
        self.cache = cache
        self.publish = publish
        self.interval = interval
        self.told = self.heard_entries = self.dropped = 0
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
        if not isinstance(entries, list) or len(entries) > MAX_ENTRIES:
            raise ValueError(f"replays-seen takes at most {MAX_ENTRIES} entries in a list")
        now = time.time() if now is None else now
        if not all(isinstance(item, list) and len(item) == 5
                   and all(isinstance(part, str) and len(part) <= 1100 for part in item[:4])
                   and type(item[4]) in (int, float) for item in entries):
            raise ValueError("an entry is (KEY-ID MESSAGE-ID ROUTING-KEY WHERE EXPIRES)")
        taken = 0
        for item in entries:
            if item[4] >= now:
                self.cache.seen((item[0], item[1], item[2], item[3]), float(item[4]), now)
                taken += 1
        self.heard_entries += taken
        return taken

    def close(self) -> None:
        self._stopped.set()

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
            for part in _parts(entries):
                self.publish(each_key(role), [Symbol("replays-seen"), Keyword("by"), self.name,
                                              Keyword("entries"), [_QUOTE, part]])
                self.told += len(part)


_QUOTE = Symbol("quote")


def _parts(entries: list[list[Any]]) -> list[list[list[Any]]]:
    """``entries`` cut to fit a message each (``_BUDGET`` bytes, ``MAX_ENTRIES`` entries)."""
    parts: list[list[list[Any]]] = [[]]
    used = 0
    for entry in entries:
        size = sum(len(part) for part in entry[:4]) + 40
        if parts[-1] and (used + size > _BUDGET or len(parts[-1]) >= MAX_ENTRIES):
            parts.append([])
            used = 0
        parts[-1].append(entry)
        used += size
    return parts if parts[0] else []
