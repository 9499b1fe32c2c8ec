"""Watching a node's config and the cluster intent: re-read when the TTL runs out, and report
changes. Reading is the resolver's job (``resolvers.py``); this module needs no DNS library, so a
node can watch whatever resolver it is given without loading dnspython itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from ..errors import ConfigError
from ..failures import log_failure
from ..wire.routing import validate_name
from .txtconfig import ClusterIntent, NodeConfig

if TYPE_CHECKING:
    from .resolvers import ConfigResolver

__all__ = ["ConfigWatcher", "IntentWatcher", "TtlWatcher"]

log = logging.getLogger("cellframe.config")

T = TypeVar("T", NodeConfig, ClusterIntent)


class TtlWatcher(Generic[T]):
    """Re-reads a config when its TTL runs out and calls ``on_change(old, new)`` if it changed.

    Drive it with ``poll()`` from the node's own timer, or ``start()`` a daemon thread.
    ``min_interval`` floors the TTL (a TTL of 0 must not spin); after a failed read the last
    config stays current, a warning is logged, and the read is retried after ``retry_interval``.
    Without ``initial`` the first read reports ``on_change(None, config)``.
    """

    def __init__(
        self,
        read: Callable[[], T],
        on_change: Callable[[T | None, T], object],
        *,
        initial: T | None = None,
        min_interval: float = 1.0,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._read: Callable[[], T] = read
        self._on_change: Callable[[T | None, T], object] = on_change
        self._clock = clock
        self.min_interval, self.retry_interval = min_interval, retry_interval
        self.current: T | None = initial
        self.due = clock() + self._interval(initial) if initial is not None else clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _interval(self, config: T | None) -> float:
        return max(float(config.ttl if config is not None else 0), self.min_interval)

    def seconds_until_due(self) -> float:
        return max(0.0, self.due - self._clock())

    def poll(self) -> bool:
        """Re-read if the TTL has run out; return True if the config changed."""
        if self._clock() < self.due:
            return False
        return self.refresh()

    def refresh(self) -> bool:
        """Re-read now; return True if the config changed (and ``on_change`` was called)."""
        with self._lock:
            try:
                new = self._read()
            except ConfigError as exc:
                log.warning("config re-read failed, keeping the last one: %s", exc)
                self.due = self._clock() + max(self.retry_interval, self.min_interval)
                return False
            old, self.current = self.current, new
            self.due = self._clock() + self._interval(new)
        if new == old:
            return False
        try:
            self._on_change(old, new)
        except Exception as error:  # a broken callback must not stop the watching
            log_failure(log, error, "on_change(%r, %r) raised", old, new)
        return True

    def start(self) -> TtlWatcher[T]:
        """Watch in a daemon thread until ``stop()``."""
        self._thread = threading.Thread(target=self._run, name="cellframe-config", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.seconds_until_due()):
            self.poll()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


class ConfigWatcher(TtlWatcher[NodeConfig]):
    """Watches one node's config: ``ConfigWatcher(resolver, "web-01", on_change).start()``."""

    def __init__(
        self,
        resolver: ConfigResolver,
        name: str,
        on_change: Callable[[NodeConfig | None, NodeConfig], object],
        *,
        initial: NodeConfig | None = None,
        min_interval: float = 1.0,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.name = validate_name(name, "node name")
        super().__init__(
            lambda: resolver.node_config(name), on_change, initial=initial,
            min_interval=min_interval, retry_interval=retry_interval, clock=clock,
        )


class IntentWatcher(TtlWatcher[ClusterIntent]):
    """Watches the cluster intent at ``_cluster`` the same way."""

    def __init__(
        self,
        resolver: ConfigResolver,
        on_change: Callable[[ClusterIntent | None, ClusterIntent], object],
        *,
        initial: ClusterIntent | None = None,
        min_interval: float = 1.0,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(
            resolver.cluster_intent, on_change, initial=initial,
            min_interval=min_interval, retry_interval=retry_interval, clock=clock,
        )
