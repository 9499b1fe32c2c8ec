"""A clock that moves only when a test says so, for the parts of cellframe that take time in.

cellframe keeps its timing logic off the wall clock where it can: the failure detector and
the flap damper (``cellframe.healing.detector``) and the reconciler take ``now`` as an
argument, and the TTL watchers (``cellframe.config.watchers``) and the hand-off's
``TokenBucket`` take ``clock=`` (and ``sleep=``) callables. One ``FakeClock`` serves them all::

    clock = FakeClock()
    watcher = ConfigWatcher(resolver, "web-01", on_change, clock=clock)
    clock.advance(5)                       # the TTL runs out, and no test waited 5 s
    for now in clock.ticks(0.1, 20):       # 20 heartbeats 100 ms apart
        detector.heartbeat(now)
    detector.phi(clock.advance(1.0))       # a second of silence
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["FakeClock"]


class FakeClock:
    """Monotonic seconds that change only through ``advance``, ``sleep`` and ``ticks``.

    Call it (``clock()``) or read ``clock.now`` for the time; pass ``clock`` as a ``clock=``
    argument and ``clock.sleep`` as a ``sleep=`` one. ``slept`` adds up what ``sleep`` was
    asked for, so a test can check how long the code under test chose to wait.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the time on by ``seconds`` (not back: a monotonic clock never goes back)."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back {-seconds} s")
        self.now += seconds
        return self.now

    def sleep(self, seconds: float) -> None:
        """What the code under test calls instead of ``time.sleep``: the time moves on at once."""
        self.advance(max(0.0, seconds))
        self.slept += max(0.0, seconds)

    def ticks(self, interval: float, count: int) -> Iterator[float]:
        """``count`` instants ``interval`` apart, starting now; the clock follows each one."""
        for i in range(count):
            if i:
                self.advance(interval)
            yield self.now
