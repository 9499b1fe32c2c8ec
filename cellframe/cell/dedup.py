"""A bounded memory of message ids, so that a message delivered twice is applied once."""

from __future__ import annotations

from collections import deque

__all__ = ["DedupMemory"]


class DedupMemory:
    """Remembers the last ``capacity`` ids seen; older ids are forgotten first (FIFO).

    A set answers membership and a deque keeps arrival order for eviction: both O(1), so the
    check costs well under a microsecond on the cell's hot path.
    """

    __slots__ = ("capacity", "_ids", "_order")

    def __init__(self, capacity: int = 100_000):
        if capacity < 1:
            raise ValueError("dedup capacity must be at least 1")
        self.capacity = capacity
        self._ids: set[str] = set()
        self._order: deque[str] = deque()

    def seen(self, message_id: str) -> bool:
        """Record ``message_id``; return True if it was already remembered."""
        if message_id in self._ids:
            return True
        self._ids.add(message_id)
        self._order.append(message_id)
        if len(self._order) > self.capacity:
            self._ids.discard(self._order.popleft())
        return False

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._order)
