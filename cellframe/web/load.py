"""A web cell's own load, measured where requests pass, and the weight it asks for.

``LoadMeter`` wraps the WSGI application: it counts requests in flight and keeps the latency
of the last ``window`` seconds (and so how busy the server's threads were), and it reads the
process's CPU time, so a cell knows its load without asking anyone. ``WeightPolicy`` turns
the 95th percentile latency into a weight, with two thresholds (hysteresis): above
``slow_ms`` the weight falls in proportion to the excess; it comes back to the base weight
only once latency is under ``fast_ms`` again, so a latency hovering at one threshold does not
make the weight flap. Both take ``now`` as an argument.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["LoadMeter", "LoadSample", "WeightPolicy"]

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class LoadSample:
    """The load over the last window."""

    in_flight: int
    requests: int  # finished in the window
    rate: float  # requests per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu: float  # the process's CPU seconds per wall second since the last sample
    busy: float = 0.0  # the server's threads' time spent in requests over the window, 0..1

    def as_dict(self) -> dict[str, float]:
        return {"in-flight": self.in_flight, "requests": self.requests, "rate": round(self.rate, 1),
                "p50-ms": round(self.p50_ms, 2), "p95-ms": round(self.p95_ms, 2),
                "p99-ms": round(self.p99_ms, 2), "cpu": round(self.cpu, 3),
                "busy": round(self.busy, 3)}


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class LoadMeter:
    """WSGI middleware that measures in-flight requests and latency (thread-safe: the server
    calls it from its worker threads, the cell samples it from its own)."""

    def __init__(self, app: WsgiApp, *, window: float = 1.0, threads: int = 1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.window = window
        self.threads = threads
        self.clock = clock
        self.in_flight = 0
        self.total = 0
        self._done: deque[tuple[float, float]] = deque()  # (finished at, seconds taken)
        self._lock = threading.Lock()
        self._cpu_at = (clock(), time.process_time())

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = self.clock()
        with self._lock:
            self.in_flight += 1
        try:
            # The body is produced here, inside the timing, so latency counts the whole answer.
            result = self.app(environ, start_response)
            try:
                return [b"".join(result)]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        finally:
            finished = self.clock()
            with self._lock:
                self.in_flight -= 1
                self.total += 1
                self._done.append((finished, finished - started))

    def sample(self, now: float | None = None) -> LoadSample:
        now = self.clock() if now is None else now
        with self._lock:
            while self._done and now - self._done[0][0] > self.window:
                self._done.popleft()
            taken = sorted(seconds * 1000 for _, seconds in self._done)
            in_flight = self.in_flight
        cpu_now = time.process_time()
        then, cpu_then = self._cpu_at
        self._cpu_at = (now, cpu_now)
        cpu = (cpu_now - cpu_then) / (now - then) if now > then else 0.0
        busy = min(1.0, sum(taken) / 1000 / (self.window * self.threads))
        return LoadSample(in_flight, len(taken), len(taken) / self.window,
                          _percentile(taken, 0.5), _percentile(taken, 0.95),
                          _percentile(taken, 0.99), cpu, busy)


@dataclass
class WeightPolicy:
    """The weight a cell asks for, from its p95 latency, with a band that stops flapping."""

    base: int = 10
    slow_ms: float = 100.0  # above this the weight falls
    fast_ms: float = 50.0  # below this the weight comes back
    weight: int | None = None

    def __post_init__(self) -> None:
        if self.fast_ms > self.slow_ms:
            raise ValueError(f"fast-ms ({self.fast_ms}) must not exceed slow-ms ({self.slow_ms})")
        self.weight = self.base if self.weight is None else self.weight

    def decide(self, sample: LoadSample) -> int:
        """The weight to ask for now (the same as before inside the band)."""
        if sample.requests == 0 and sample.in_flight == 0:
            wanted = self.base  # idle: nothing says it is slow
        elif sample.p95_ms > self.slow_ms:
            wanted = max(1, round(self.base * self.slow_ms / sample.p95_ms))
            assert self.weight is not None
            wanted = min(wanted, self.weight)  # falls further, but never rises while slow
        elif sample.p95_ms < self.fast_ms:
            wanted = self.base
        else:
            assert self.weight is not None
            wanted = self.weight
        self.weight = wanted
        return wanted
