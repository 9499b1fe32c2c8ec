"""Durable cells: a cell's state, declared fields and memory of applied message ids kept in the
append-only store, so that the cell that takes its role after a failover resumes from the
last message applied, and applies no message twice.

A durable cell (``durable = True`` on its class) writes one record per applied message to the
family of its role (``cell/<role>/<class>``; a cell with no role: ``cell/<name>``). The record
is the whole recorded state after the message: ``{"id", "state", "fields"}`` as JSON, so the
newest record is a snapshot and recovery reads it plus the ids of the tail. The message's
delivery is settled only once its record is durable (group commit: the cell goes on applying
meanwhile), so:

* a message whose record is durable is never applied again, whoever it is delivered to
  next: the recovering cell remembers its id (the last ``dedup_capacity`` ids are read back);
* a message whose record was not durable when the node died was not acknowledged either; the
  spare applies it, once, from a state that never saw it.

That is exactly once for the cell's recorded state. What the cell did outside itself
(messages it sent) is at least once: a send released just before the node died is sent again
when the spare re-applies the message. Make those idempotent with the outbox pattern: give
each sent message an id derived from the applied one (``<id>/<n>``) and let its receiver
drop ids it has seen (every cell does).

Compaction bounds recovery: ``Retention(newest=dedup_capacity)`` on the store keeps the
snapshot and as many ids as the memory holds.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, StoreError

if TYPE_CHECKING:
    from ..store.store import Store

__all__ = ["CellJournal", "Recovered"]

Recovered = tuple[str, dict[str, Any], list[str]]


class CellJournal:
    """Where durable cells keep their recorded state: a ``Store`` (given, never closed here)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # Records written but not yet durable, per family: a cell restarted on this node
        # recovers only once its predecessor's are in (else it would miss applied messages
        # whose deliveries are about to be acknowledged).
        self._in_flight: dict[str, int] = {}
        self._settled = threading.Condition()
        # The ids applied by any instance of each role this journal serves: the fence that
        # keeps a redelivered message from being applied by a second live instance.
        self._claims: dict[str, _Claims] = {}
        self._claims_lock = threading.Lock()

    def claim(self, family: str, message_id: str, capacity: int) -> bool:
        """Claim ``message_id`` for the role of ``family``: False if an instance of the role
        applied it or is applying it (then it must not be applied again)."""
        with self._claims_lock:
            claims = self._claims.get(family)
            if claims is None:
                claims = self._claims[family] = _Claims(capacity)
            return claims.claim(message_id)

    def release(self, family: str, message_id: str) -> None:
        """Give up a claim: the message was not applied (it failed, or the cell crashed)."""
        with self._claims_lock:
            claims = self._claims.get(family)
            if claims is not None:
                claims.ids.discard(message_id)

    @staticmethod
    def family_for(cell_name: str, role: str | None, class_name: str) -> str:
        """The family a durable cell writes: its role's, so that a spare finds it."""
        return f"cell/{role}/{class_name.lower()}" if role else f"cell/{cell_name}"

    def record(self, family: str, message_id: str, state: str, fields: dict[str, Any],
               done: Callable[[BaseException | None], None]) -> None:
        """Append the state after ``message_id``; ``done(error)`` once it is durable."""
        try:
            value = json.dumps({"id": message_id, "state": state, "fields": fields},
                               separators=(",", ":")).encode()
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{family}: a durable cell's fields must be JSON values: "
                              f"{error}") from error
        with self._settled:
            self._in_flight[family] = self._in_flight.get(family, 0) + 1

        def durable(receipt: Any, error: BaseException | None) -> None:
            with self._settled:
                self._in_flight[family] -= 1
                self._settled.notify_all()
            done(error)

        self.store.insert_nowait(family, value, durable)

    def recover(self, family: str, capacity: int) -> Recovered | None:
        """The newest snapshot (state, fields) and the ids of the last ``capacity`` records,
        oldest first; None if the family holds nothing."""
        with self._settled:
            if not self._settled.wait_for(lambda: not self._in_flight.get(family), 30.0):
                raise StoreError(f"{family}: records still not durable after 30 s")
        newest = self.store.select(family)
        if newest is None:
            return None
        try:
            snapshot = json.loads(newest.value)
            history = self.store.select_history(family)[-capacity:]
            ids = [json.loads(record.value)["id"] for record in history]
        except (ValueError, KeyError) as error:
            raise StoreError(f"{family}: an unreadable durable-cell record: {error}") from error
        for message_id in ids:
            self.claim(family, message_id, capacity)
        return snapshot["state"], snapshot["fields"], ids


class _Claims:
    """The last ``capacity`` ids claimed for one role (FIFO), like a cell's DedupMemory but
    one may be released."""

    __slots__ = ("capacity", "ids", "order")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ids: set[str] = set()
        self.order: deque[str] = deque()

    def claim(self, message_id: str) -> bool:
        if message_id in self.ids:
            return False
        self.ids.add(message_id)
        self.order.append(message_id)
        if len(self.order) > self.capacity:
            self.ids.discard(self.order.popleft())
        return True
