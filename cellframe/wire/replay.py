"""The replay cache: a verified message seen once is refused the second time, until it expires.

A receiver remembers each verified message (by key id, message id, routing key and the queue
it came from) until the message's own expiry. Past its expiry a replay is refused as expired
by the ``Signer``, so nothing older needs remembering: the cache holds at most the verified
messages of one life (``max_age`` + ``max_skew``, 330 s by default) and never more than
``capacity`` entries. Only verified messages enter it, so filling it takes a valid key; when
it is full the entry closest to its expiry goes first, and ``evicted`` counts them (a replay
of an evicted message inside its window would pass here and be dropped by the cell's dedup).

A broker redelivery (``redelivered``, a flag only the broker sets) of a message seen before is
let through: the cell's dedup memory then drops it if it was applied.
"""

from __future__ import annotations

import heapq
import threading

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
        self._heap: list[tuple[float, tuple[str, ...]]] = []
        self._lock = threading.Lock()

    def seen(self, entry: tuple[str, ...], expires: float, now: float) -> bool:
        """True if ``entry`` was recorded and has not expired; else record it until
        ``expires``."""
        with self._lock:
            self._forget_expired(now)
            if entry in self._expiry:
                return True
            while len(self._expiry) >= self.capacity:
                self._pop()
                self.evicted += 1
            self._expiry[entry] = expires
            heapq.heappush(self._heap, (expires, entry))
            return False

    def _forget_expired(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] < now:
            self._pop()

    def _pop(self) -> None:
        expires, entry = heapq.heappop(self._heap)
        if self._expiry.get(entry) == expires:
            del self._expiry[entry]

    def __len__(self) -> int:
        return len(self._expiry)

    def __repr__(self) -> str:
        return f"<ReplayCache {len(self)}/{self.capacity} evicted={self.evicted}>"
