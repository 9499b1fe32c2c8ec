"""A node process hosting one instance of a durable ledger role, with a store of its own and
membership (to know the role's other instances), for the once-per-role test across processes:
``python -m tests.ledger_node NAME STORE APPLIED URL TOKEN CONNECTION`` (APPLIED: a file that
gets one line per message id applied; CONNECTION: the name its broker connection carries)."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, ClassVar

from cellframe import Cell, Node, RoleRegistry, transition
from cellframe.cell.durable import CellJournal
from cellframe.healing.membership import HealingConfig, Membership
from cellframe.store.store import Store
from cellframe.testing import AmqpNames

#: As in tests/test_once_per_role.py: membership only to know who else plays the role.
HEARTBEATS = Membership.configured(HealingConfig(heartbeat_interval=0.05, acceptable_pause=5.0,
                                                 reconcile=False))


class CountingLedger(Cell):
    """A durable role that counts its entries and tells ``record`` each id it applied."""

    role = "ledger"
    durable = True
    fields = ("count",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.count = 0
        super().__init__(*args, **kwargs)

    @transition("entry")
    def entry(self, number: int) -> None:
        self.count += 1
        message = self.cell_message
        assert message is not None
        self.record(message.id)

    record: Callable[[str], None]  # each ledger below keeps the ids its own way


class FileLedger(CountingLedger):
    """Writes the id of every message it applies to its process's APPLIED file."""

    out: ClassVar[IO[str] | None] = None

    def record(self, message_id: str) -> None:
        assert self.out is not None
        self.out.write(f"{message_id}\n")
        self.out.flush()


def main(name: str, directory: str, applied: str, url: str, token: str, connection: str) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(message)s")  # the test reads 'up' events
    names = AmqpNames(url, token=token)
    with open(applied, "a", encoding="utf-8") as out, Store(Path(directory)) as store:
        FileLedger.out = out
        node = Node(name, transport=names.connect(name=connection), role="ledger",
                    registry=RoleRegistry({"ledger": [FileLedger]}), journal=CellJournal(store),
                    system_cells=(HEARTBEATS,), watch_config=False,
                    queue_prefix=names.queue_prefix)
        with node:
            print(f"node {name} ready", flush=True)
            threading.Event().wait()  # until killed


if __name__ == "__main__":
    main(*sys.argv[1:7])
