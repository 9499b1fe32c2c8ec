"""The thread that puts ``(tick)`` in the mailboxes of a node's cells that ask for it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pykka

from ..cell.fence import PauseFence
from ..language.symbols import Symbol
from ..wire.envelope import Message
from .hosted import Hosted

__all__ = ["Ticker"]


class Ticker:
    """One thread per node that puts ``(tick)`` in the mailbox of every cell that asks for it."""

    def __init__(self, node_name: str, fence_of: Callable[[], PauseFence | None]):
        self._node_name, self._fence_of = node_name, fence_of
        self._due: dict[int, tuple[float, Hosted]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ticker-{node_name}", daemon=True)
        self._count = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    def add(self, hosted: Hosted) -> None:
        interval = hosted.cell.cell_tick_interval()
        if interval:
            with self._lock:
                self._due[id(hosted)] = (time.monotonic() + interval, hosted)
            self._wake.set()

    def remove(self, hosted: Hosted) -> None:
        with self._lock:
            self._due.pop(id(hosted), None)

    def _run(self) -> None:
        tick = [Symbol("tick")]
        while not self._stopped.is_set():
            fence = self._fence_of()
            if fence is not None:
                fence.beat()  # before any tick: a pause is noticed before membership judges
            now = time.monotonic()
            with self._lock:
                entries = list(self._due.items())
            next_due = now + 1.0
            for key, (due, hosted) in entries:
                if due <= now:
                    self._count += 1
                    try:
                        hosted.ref.tell(Message(tick, id=f"tick-{self._node_name}-{self._count}"))
                    except pykka.ActorDeadError:
                        if hosted.condition == "stopped":
                            self.remove(hosted)
                            continue
                        # down for a restart: it ticks again once restarted
                    due = now + (hosted.cell.cell_tick_interval() or 1.0)
                    with self._lock:
                        if key in self._due:
                            self._due[key] = (due, hosted)
                next_due = min(next_due, due)
            self._wake.wait(max(0.0, next_due - time.monotonic()))
            self._wake.clear()

