"""A durable order: a state machine whose state, fields and applied ids survive its node.

Run it with ``python examples/durable_order.py``. An order is filled, paid and shipped on one
node; the node stops; another node opens the same store, takes the role ``orders`` and
delivers it. Along the way:

* a compound message that fails halfway (``(do (add-item "lamp" 1) (pay -5))``) changes
  nothing: the lamp is not added;
* shipping asks the warehouse to dispatch, with a key derived from the applied message's id
  (the outbox pattern): a dispatch sent again after a failover carries the same key, and the
  warehouse, which remembers the keys it served, dispatches once.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar

from cellframe import Cell, Envelope, Node, RoleRegistry, transition
from cellframe.cell.durable import CellJournal
from cellframe.language.reader import read
from cellframe.store.store import Store
from cellframe.testing import wait_for
from cellframe.transports.memory import MemoryBroker


class Order(Cell):
    """new -> paid -> shipped -> delivered; cancelled from new or paid."""

    role = "orders"
    states = ("new", "paid", "shipped", "delivered", "cancelled")
    initial = "new"
    durable = True
    fields = ("items", "paid_amount")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.items: dict[str, int] = {}
        self.paid_amount = 0
        super().__init__(*args, **kwargs)

    @transition("add-item", source="new")
    def add_item(self, name: str, quantity: int) -> None:
        self.items[name] = self.items.get(name, 0) + quantity

    @transition("pay", source="new", target="paid")
    def pay(self, amount: int) -> None:
        if amount <= 0:
            raise ValueError(f"a payment must be positive, not {amount}")
        self.paid_amount = amount

    @transition("ship", source="paid", target="shipped")
    def ship(self) -> None:
        message = self.cell_message
        assert message is not None
        # The key is the applied message's id: the same whoever applies it.
        self.cell_send("role.warehouse", [read("dispatch"), f"{message.id}/dispatch",
                                          sum(self.items.values())])

    @transition("deliver", source="shipped", target="delivered")
    def deliver(self) -> None:
        """Nothing to do but move on."""

    @transition("cancel", source=("new", "paid"), target="cancelled")
    def cancel(self) -> None:
        self.paid_amount = 0


class Warehouse(Cell):
    """Dispatches each key once."""

    role = "warehouse"
    dispatched: ClassVar[list[str]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keys: set[str] = set()

    @transition("dispatch")
    def dispatch(self, key: str, quantity: int) -> None:
        if key not in self.keys:
            self.keys.add(key)
            self.dispatched.append(key)


def _order(node: Node) -> Order:
    return next(c for c in node.cells().values() if isinstance(c, Order))


def run(directory: Path) -> tuple[str, dict[str, int], int]:
    broker = MemoryBroker()
    registry = RoleRegistry({"orders": [Order], "warehouse": [Warehouse]})
    client = broker.connect()

    def send(text: str, message_id: str) -> None:
        client.publish("role.orders", Envelope(text.encode(), message_id=message_id))

    with Node("warehouse-01", transport=broker.connect(), role="warehouse", registry=registry):
        with Store(directory) as store, Node("orders-01", transport=broker.connect(),
                                             role="orders", registry=registry,
                                             journal=CellJournal(store)) as node:
            send('(add-item "chair" 4)', "o-1")
            send('(do (add-item "lamp" 1) (pay -5))', "o-2")  # fails halfway: no lamp
            send("(pay 120)", "o-3")
            send("(ship)", "o-4")
            wait_for(lambda: _order(node).cell_state == "shipped", 10, what="shipped")
            print(f"orders-01: {_order(node).cell_state}, items {_order(node).items}")
        with Store(directory) as store, Node("orders-02", transport=broker.connect(),
                                             role="orders", registry=registry,
                                             journal=CellJournal(store)) as node:
            # The cell recovers in its own thread as it starts, before its first message.
            wait_for(lambda: _order(node).cell_state == "shipped", 10,
                     what="the order recovered from the store",
                     show=lambda: _order(node).cell_state)
            order = _order(node)
            print(f"orders-02 resumed: {order.cell_state}, items {order.items}, "
                  f"paid {order.paid_amount}")
            send("(ship)", "o-4")  # redelivered after the failover: applied already
            send("(deliver)", "o-5")
            wait_for(lambda: _order(node).cell_state == "delivered", 10, what="delivered")
            order = _order(node)
            wait_for(lambda: len(Warehouse.dispatched) == 1, 10, what="one dispatch")
            print(f"orders-02: {order.cell_state}; the warehouse dispatched "
                  f"{len(Warehouse.dispatched)} time(s)")
            return order.cell_state, dict(order.items), len(Warehouse.dispatched)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="durable-order-") as tmp:
        run(Path(tmp))
