"""PauseFence: a node that was paused (SIGSTOP, a VM stall, a starved process) serves nothing
of its role until membership has judged its standing again.

While a process is stopped its peers go on: after about 0.9 s of silence they declare it down
and a spare may take its slot. When it wakes, every thread resumes at once, and what its
broker had already pushed (up to the prefetch: 256 requests parked on the socket, in pika's
buffer or in a cell's mailbox) would be served seconds late by a node that no longer holds the
role (issue 21, item 6: in 5 of 6 runs a frozen web node served its parked requests after it
had been replaced). The fence is how it does not:

- **Noticing.** The node's ticker thread ``beat``s every tick. A thread that finds the last
  beat older than ``gap`` (the ticker's own, or the I/O thread that receives a delivery, or the
  cell that is about to apply one, whichever runs first after the wake-up) *trips* the fence:
  the node's *life generation* goes up by one. Every thread checks, because after SIGCONT any
  of them may run first.
- **Fencing by life.** Each delivery for a role cell is stamped with the generation it arrived
  in. A cell applies it only if that generation is still current (``admits``): what arrived
  before the pause is given back, never applied: requeued if it came from a role queue (another
  holder of the role takes it), dead-lettered with the reason if it was addressed to this node.
- **Holding.** From a trip until membership ``clear``s the fence (it does so once it has heard
  every peer again and reconciled: the node has refuted any 'down' with a new incarnation, and
  stepped down if its slot was refilled meanwhile), new deliveries for role cells are held
  unsettled. On clearing, the node hands them to its cells if it still plays the role it played
  at the trip, and gives them back otherwise.

Pure logic on any clock except for the lock: every method reads ``clock`` once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["PauseFence"]


class PauseFence:
    """The life generation of a node's role cells, bumped when the process was paused longer
    than ``gap`` seconds (see the module doc)."""

    def __init__(self, gap: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if gap <= 0:
            raise ValueError("the pause gap must be > 0")
        self.gap = gap
        self.clock = clock
        self.generation = 0
        self.trips = 0
        self.longest = 0.0
        self.holding = False  # from a trip until clear()
        self._last: float | None = None  # no beat yet: the ticker has not started
        self._lock = threading.Lock()

    def _check(self, now: float) -> None:
        """Trip if the last beat is older than the gap (call holding the lock)."""
        if self._last is None:
            return
        silence = now - self._last
        if silence > self.gap:
            self.generation += 1
            self.trips += 1
            self.longest = max(self.longest, silence)
            self.holding = True
            self._last = now  # one pause trips once, whichever thread saw it first

    def beat(self) -> int:
        """The ticker's beat: check for a pause, then record that the node is running; return
        the current generation."""
        with self._lock:
            now = self.clock()
            self._check(now)
            self._last = now
            return self.generation

    def stamp(self) -> tuple[int, bool]:
        """For a delivery that arrives now: ``(generation, holding)``."""
        with self._lock:
            self._check(self.clock())
            return self.generation, self.holding

    def admits(self, generation: int) -> bool:
        """May a delivery stamped with ``generation`` be applied now?"""
        with self._lock:
            self._check(self.clock())
            return generation == self.generation and not self.holding

    def clear(self, generation: int) -> bool:
        """Membership has judged the node's standing since the trip of ``generation``: stop
        holding (a no-op if the fence tripped again meanwhile). True if it was holding."""
        with self._lock:
            if generation != self.generation or not self.holding:
                return False
            self.holding = False
            return True
