"""Is a broker node up? Asked when a member's queue is gone and the member was connected to
another broker node than this one.

A SIGKILLed node's exclusive queue disappears, and so do the queues of every node whose *broker
node* died (issue 16: a third of 30 nodes at once on the 3-node cluster). Those nodes are alive
and fail over to the next broker URL; with ten of them reconnecting on two busy cores that took
0.6 to 1.1 s, longer than the 0.3 s ``broker-confirm`` wait, and their watchers on the other
broker nodes found all ten down (210 false verdicts in one run). A watcher connected to the same
broker node as the member needs no check: its own live connection shows that broker is up, so
the queue went with the member's connection. For a member on another broker node, one TCP
connect to that node's address tells: refused (or no answer) and the member is only cut off,
like a node that lost its broker (docs/healing.md, "Blind spells"); accepted and the member's
connection is what went.

Checks run on a thread of their own (a connect to an unreachable host can take its timeout)
and each answer is remembered for ``memory`` seconds, so the ten members of one dead broker
node cost one connect.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

__all__ = ["BrokerCheck", "tcp_answers"]


def tcp_answers(address: str, timeout: float) -> bool:
    """Does ``host:port`` accept a TCP connection within ``timeout`` seconds?"""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        return True
    except (OSError, ValueError):
        return False


class BrokerCheck:
    """Answers ``up(address)`` from checks run off the caller's thread: ``None`` until the
    first check of ``address`` in ``memory`` seconds has finished, then its answer."""

    def __init__(self, *, timeout: float = 0.5, memory: float = 1.0,
                 answers: Callable[[str, float], bool] = tcp_answers,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout, self.memory = timeout, memory
        self._answers, self._clock = answers, clock
        self._lock = threading.Lock()
        self._known: dict[str, tuple[bool, float]] = {}
        self._asking: set[str] = set()

    def up(self, address: str) -> bool | None:
        """Is the broker at ``address`` up? None: not known yet (a check is on its way)."""
        with self._lock:
            known = self._known.get(address)
            if known is not None and self._clock() - known[1] <= self.memory:
                return known[0]
            if address not in self._asking:
                self._asking.add(address)
                threading.Thread(target=self._check, args=(address,), daemon=True,
                                 name=f"broker-check-{address}").start()
        return None

    def _check(self, address: str) -> None:
        answer = self._answers(address, self.timeout)
        with self._lock:
            self._known[address] = (answer, self._clock())
            self._asking.discard(address)
