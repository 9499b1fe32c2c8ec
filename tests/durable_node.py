"""A node process hosting a durable counter on a store directory, for the SIGKILL tests:
``python -m tests.durable_node NAME STORE URL TOKEN`` (TOKEN: the test's AmqpNames token;
STORE: a folder, or ``shards``)."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from cellframe import Cell, Keyword, Node, RoleRegistry, Symbol, transition
from cellframe.cell.durable import CellJournal
from cellframe.node.shard_journal import shard_journal
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
    """``directory``: the store folder the counter's journal is in, or ``shards``: the
    journal is the shard tier of the test's shard node processes (no folder at all)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("cellframe.cell.cell").setLevel(logging.INFO)  # what it recovered
    names = AmqpNames(url, token=token)
    with contextlib.ExitStack() as stack:
        if directory == "shards":
            journal: Any = shard_journal
        else:
            journal = CellJournal(stack.enter_context(Store(Path(directory))))
        node = Node(name, transport=names.connect(), role="counter",
                    registry=RoleRegistry({"counter": [DurableCounter]}),
                    journal=journal, queue_prefix=names.queue_prefix)
        with node:
            print(f"node {name} ready", flush=True)
            threading.Event().wait()  # until killed


if __name__ == "__main__":
    main(*sys.argv[1:5])
