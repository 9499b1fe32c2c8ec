"""The replay cache: a verified message seen once is refused the second time, until it expires.

A receiver remembers each verified message (by key id, message id, routing key and the queue
it came from) until the message's own expiry. Past its expiry a replay is refused as expired
by the ``Signer``, so nothing older needs remembering: the cache holds at most the verified
messages of one life (``max_age`` + ``max_skew``, 330 s by default) and never more than
``capacity`` entries. Only verified messages enter it, so filling it takes a valid key; when
it is full the oldest entry goes first, and ``evicted`` counts them (a replay
of an evicted message inside its window would pass here and be dropped by the cell's dedup).

A broker redelivery (``redelivered``, a flag only the broker sets) of a message seen before is
let through: the cell's dedup memory then drops it if it was applied.
"""

from __future__ import annotations

import threading
from collections import deque

__all__ = ["DEFAULT_REPLAY_CAPACITY", "ReplayCache"]

#: Entries held at most: about 200 bytes each, so 40 MB at worst; 600 verified messages a
#: second for the whole 330 s window before any is evicted early.
DEFAULT_REPLAY_CAPACITY = 200_000


class ReplayCache:
    """Remembers verified messages until their expiry; ``seen`` says if one came before."""

    def __init__(self, capacity: int = DEFAULT_REPLAY_CAPACITY) -> None:
        self.capacity = capacity
        self.evicted = 0
        self._expiry: dict[tuple[str, ...], float] = {}
        # In arrival order: expiries nearly follow it (one life for most messages), so the
        # oldest entry is the first to go. An entry behind a longer-lived one is kept until
        # that one goes, never past one life after it (``max_age``): still bounded by it.
        # A deque here: no tuple comparisons, as a heap ordered by expiry needs.
        self._order: deque[tuple[float, tuple[str, ...]]] = deque()
        self._lock = threading.Lock()

    def seen(self, entry: tuple[str, ...], expires: float, now: float) -> bool:
        """True if ``entry`` was recorded and has not expired; else record it until
        ``expires``."""
        with self._lock:
            order, expiry = self._order, self._expiry
            while order and order[0][0] < now:
                del expiry[order.popleft()[1]]
            if entry in expiry:
                return expiry[entry] >= now
            while len(expiry) >= self.capacity:
                del expiry[order.popleft()[1]]
                self.evicted += 1
            expiry[entry] = expires
            order.append((expires, entry))
            return False

    def contains(self, entry: tuple[str, ...], now: float) -> bool:
        """Whether ``entry`` is recorded and has not expired (recording nothing)."""
        with self._lock:
            expires = self._expiry.get(entry)
        return expires is not None and expires >= now

    def __len__(self) -> int:
        return len(self._expiry)

    def __repr__(self) -> str:
        return f"<ReplayCache {len(self)}/{self.capacity} evicted={self.evicted}>"
