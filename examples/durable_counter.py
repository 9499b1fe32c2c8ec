"""A durable counter that survives the loss of its node.

Run it with ``python examples/durable_counter.py``. A node plays the role ``counter`` with
its state in an append-only store; it is sent increments, some of them twice under the same
message id, and is stopped; a second node opens the same store, takes the role, and goes on
counting from where the first stopped. Every distinct message is counted once.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from cellframe import Cell, Envelope, Node, RoleRegistry, transition
from cellframe.cell.durable import CellJournal
from cellframe.store.store import Store
from cellframe.testing import wait_for
from cellframe.transports.memory import MemoryBroker


class Counter(Cell):
    """Counts ``(inc)``; its count and the ids it applied live in the store."""

    role = "counter"
    durable = True
    fields = ("count",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.count = 0  # before the base class recovers the recorded count over it
        super().__init__(*args, **kwargs)

    @transition("inc")
    def inc(self) -> None:
        self.count += 1


def _count(node: Node) -> int:
    return next(iter(node.cells().values())).count


def run(messages: int, directory: Path) -> int:
    broker = MemoryBroker()
    registry = RoleRegistry({"counter": [Counter]})
    publisher = broker.connect()
    ids = [f"inc-{n}" for n in range(messages)]
    first_half, second_half = ids[: messages // 2], ids[messages // 2:]
    with Store(directory) as store:
        with Node("counter-01", transport=broker.connect(), role="counter", registry=registry,
                  journal=CellJournal(store)) as node:
            for message_id in first_half + first_half[:10]:  # ten sent twice
                publisher.publish("role.counter", Envelope(b"(inc)", message_id=message_id))
            wait_for(lambda: _count(node) == len(first_half), 10, what="the first half counted")
            print(f"counter-01 counted {_count(node)}, then stops")
    with Store(directory) as store:
        with Node("counter-02", transport=broker.connect(), role="counter", registry=registry,
                  journal=CellJournal(store)) as node:
            # The cell recovers in its own thread as it starts, before its first message.
            wait_for(lambda: _count(node) == len(first_half), 10,
                     what="the count recovered from the store", show=lambda: _count(node))
            print(f"counter-02 took the role and resumed at {_count(node)}")
            for message_id in first_half[-10:] + second_half:  # ten it already counted
                publisher.publish("role.counter", Envelope(b"(inc)", message_id=message_id))
            wait_for(lambda: _count(node) == messages, 10, what="every message counted")
            total = _count(node)
    print(f"final count {total} for {messages} distinct messages")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="durable-counter-") as tmp:
        run(args.messages, Path(tmp))


if __name__ == "__main__":
    main()
