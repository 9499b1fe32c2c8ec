"""Two cells, one written in Python and one in Hy, exchanging s-expressions.

Run it with ``python examples/ping_pong.py``. Two nodes share one in-process broker (the
embedded transport): ``pinger-01`` hosts the Python cell, ``ponger-01`` the Hy cell. The
pinger sends ``(ping 1)`` to the role ``ponger``; the Hy cell calls back ``(pong 2 ...)``; the
pinger answers with ``(ping 2)``, and so on until the rally reaches ``--rally`` hits.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

import hy  # noqa: F401  (lets Python import the .hy module beside this file)

from cellframe import Cell, Node, RoleRegistry, Symbol
from cellframe.cell.statemachine import transition
from cellframe.transports.memory import MemoryBroker
from cellframe.wire.routing import cell_key, role_key

sys.path.insert(0, str(Path(__file__).parent))
from ponger import Ponger  # noqa: E402  (a cell written in Hy)

rally_over = threading.Event()


class Pinger(Cell):
    """Serves first, then returns every pong until the rally is long enough."""

    states = ("idle", "rallying", "done")
    initial = "idle"
    role = "pinger"
    rally = 5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hits: list[int] = []

    @transition("serve", source="idle", target="rallying")
    def serve(self) -> None:
        self.cell_send(role_key("ponger"), [Symbol("ping"), 1], reply_to=cell_key(self.cell_name))

    @transition("pong", source="rallying", target="done", guard="rally_complete")
    def finish(self, n: int, *, by: str | None = None) -> None:
        self.hits.append(n)
        print(f"pinger got (pong {n}) from {by}: rally complete")
        rally_over.set()

    @transition("pong", source="rallying")
    def volley(self, n: int, *, by: str | None = None) -> None:
        self.hits.append(n)
        print(f"pinger got (pong {n}) from {by}")
        self.cell_send(role_key("ponger"), [Symbol("ping"), n], reply_to=cell_key(self.cell_name))

    def rally_complete(self, n: int, *, by: str | None = None) -> bool:
        return n >= self.rally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rally", type=int, default=5)
    args = parser.parse_args(argv)
    Pinger.rally = args.rally
    registry = RoleRegistry({"pinger": [Pinger], "ponger": [Ponger]})
    broker = MemoryBroker()
    nodes = [
        Node("ponger-01", transport=broker.connect(), registry=registry, role="ponger").start(),
        Node("pinger-01", transport=broker.connect(), registry=registry, role="pinger").start(),
    ]
    try:
        nodes[1].send(cell_key("pinger-01"), [Symbol("serve")])
        if not rally_over.wait(10):
            print("the rally did not finish", file=sys.stderr)
            return 1
        print(f"rally of {args.rally} finished")
        return 0
    finally:
        for node in nodes:
            node.stop()


if __name__ == "__main__":
    sys.exit(main())
