"""A node process hosting a durable counter on a store directory, for the SIGKILL tests:
``python -m tests.durable_node NAME STORE URL TOKEN`` (TOKEN: the test's AmqpNames token)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from cellframe import Cell, Keyword, Node, RoleRegistry, Symbol, transition
from cellframe.cell.durable import CellJournal
from cellframe.store.store import Store
from cellframe.testing import AmqpNames


class DurableCounter(Cell):
    """Counts (inc); answers (total) with (count N :by NODE)."""

    role = "counter"
    durable = True
    fields = ("count",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.count = 0
        super().__init__(*args, **kwargs)

    @transition("inc")
    def inc(self) -> None:
        self.count += 1

    @transition("total")
    def report(self) -> None:
        self.cell_reply([Symbol("count"), self.count, Keyword("by"), self.cell_name])


def main(name: str, directory: str, url: str, token: str) -> None:
    names = AmqpNames(url, token=token)
    with Store(Path(directory)) as store:
        node = Node(name, transport=names.connect(), role="counter",
                    registry=RoleRegistry({"counter": [DurableCounter]}),
                    journal=CellJournal(store), queue_prefix=names.queue_prefix)
        with node:
            print(f"node {name} ready", flush=True)
            threading.Event().wait()  # until killed


if __name__ == "__main__":
    main(*sys.argv[1:5])
