"""The proxy's HAProxy data plane: the pool the cluster wants, made true in HAProxy.

The proxy cell keeps what the cluster says (web cells that joined, their weights, the ones
draining); ``HaproxyPool.sync`` compares it with ``show servers state`` and sends only the
differences. Every sync reads HAProxy afresh, so a restarted HAProxy (an empty backend, or
the servers of its configuration file) is rebuilt whole on the next sync: the cluster, not
HAProxy's file, is the truth. When HAProxy cannot be reached, the wanted pool keeps changing
with every message (nothing is lost) and syncs are retried with exponential backoff; the state
of that is in ``status()``. Pure of clocks: ``now`` is an argument.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .haproxy import SERVER_OPTIONS, HaproxyError, HaproxyRuntime, HaproxyUnreachableError, ServerState

__all__ = ["HaproxyPool", "WantedServer"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class WantedServer:
    """A server the cluster wants in the backend."""

    address: str
    port: int
    weight: int
    draining: bool = False


class HaproxyPool:
    """Keeps one HAProxy backend equal to the wanted servers, through the runtime API."""

    def __init__(self, runtime: HaproxyRuntime, backend: str = "web", *,
                 options: str = SERVER_OPTIONS,
                 backoff_base: float = 0.1, backoff_max: float = 5.0) -> None:
        self.runtime = runtime
        self.backend = backend
        self.options = options
        self.wanted: dict[str, WantedServer] = {}
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.failures = 0  # consecutive failed syncs
        self.retry_at = 0.0
        self.last_error: str | None = None
        self.syncs = 0
        self.rebuilds = 0  # syncs that found HAProxy missing servers it had been given
        self._known_pid: int | None = None
        self._last_refusal = ""

    # -- what the cluster wants ---------------------------------------------------------------

    def put(self, name: str, address: str, port: int, weight: int) -> None:
        current = self.wanted.get(name)
        draining = current.draining if current is not None else False
        self.wanted[name] = WantedServer(address, port, weight, draining)

    def set_weight(self, name: str, weight: int) -> None:
        if name in self.wanted:
            self.wanted[name].weight = weight

    def drain(self, name: str) -> None:
        if name in self.wanted:
            self.wanted[name].draining = True

    def remove(self, name: str) -> None:
        self.wanted.pop(name, None)

    # -- making it true -----------------------------------------------------------------------

    def due(self, now: float) -> bool:
        return now >= self.retry_at

    def sync(self, now: float) -> bool:
        """Make HAProxy match ``wanted``; False (and a later retry) if it cannot be reached."""
        if not self.due(now):
            return False
        try:
            self._restarted_check()
            servers = self.runtime.servers(self.backend)
            self._apply(servers)
        except HaproxyError as error:
            self.failures += 1
            delay = min(self.backoff_max, self.backoff_base * 2 ** (self.failures - 1))
            self.retry_at = now + delay
            if self.last_error is None or self.failures == 1:
                log.warning("HAProxy: %s; retrying in %.1f s", error, delay)
            self.last_error = str(error)
            return False
        self.failures, self.retry_at, self.last_error = 0, 0.0, None
        self.syncs += 1
        return True

    def _restarted_check(self) -> None:
        pid = self.runtime.pid()
        if self._known_pid is not None and pid != self._known_pid:
            self.rebuilds += 1
            log.warning("HAProxy restarted (pid %s, was %s): rebuilding backend %s from the "
                        "cluster", pid, self._known_pid, self.backend)
        self._known_pid = pid

    def _apply(self, servers: dict[str, ServerState]) -> None:
        for name in [n for n in servers if n not in self.wanted]:
            self._try(self.runtime.delete_server, self.backend, name)
        for name, want in self.wanted.items():
            have = servers.get(name)
            if have is not None and (have.address, have.port) != (want.address, want.port):
                self._try(self.runtime.delete_server, self.backend, name)
                have = None
            if have is None:
                self._try(self.runtime.add_server, self.backend, name, want.address, want.port,
                          want.weight, options=self.options)
            elif have.weight != want.weight and not want.draining:
                self._try(self.runtime.set_weight, self.backend, name, want.weight)
            if want.draining and (have is None or not have.draining):
                self._try(self.runtime.drain, self.backend, name)

    def _try(self, command: Any, *args: Any, **kwargs: Any) -> None:
        """Run one command; a refusal (HAProxy answered) is logged and retried next sync, while
        an unreachable HAProxy is raised to ``sync``, which backs off."""
        try:
            command(*args, **kwargs)
        except HaproxyUnreachableError:
            raise
        except HaproxyError as error:  # e.g. a deletion waiting for idle connections to go
            level = logging.DEBUG if str(error) == self._last_refusal else logging.WARNING
            log.log(level, "HAProxy: %s (retried at the next sync)", error)
            self._last_refusal = str(error)

    def status(self, now: float) -> dict[str, Any]:
        """For ``cellframe status``: reachable or not, since how many tries, next try when."""
        return {"backend": self.backend, "reachable": self.failures == 0,
                "failures": self.failures, "retry_in": max(0.0, round(self.retry_at - now, 3)),
                "error": self.last_error, "servers": len(self.wanted), "rebuilds": self.rebuilds}
