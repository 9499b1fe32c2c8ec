"""The web cell: a minimal service that serves, measures its own load, and keeps its proxies
informed by fire-and-forget messages only.

- When it comes online, and again every ``announce-ms`` (the announcement is idempotent, so a
  proxy that started later or lost it catches up), it sends ``(join-pool :backend B :node N
  :weight W :incarnation I)`` to ``each.proxy``; a proxy that starts asks with ``(pool-hello)``.
- ``(serve :request R :proxy P)`` is a request: it counts it, calls the proxy back with
  ``(served :request R :backend B)``, and answers the requester if it gave a reply address.
- Load is the request rate over the last ``load-window-ms``. Above ``capacity`` requests per
  second it asks for a lower weight, ``weight * capacity / rate`` (at least 1); when the load
  falls it asks for its configured weight back: ``(set-weight :backend B :weight W)``.
- When it stops cleanly it sends ``(leave-pool :backend B)``.

Settings (the node's DNS TXT): ``weight`` (10), ``capacity`` (100), ``announce-ms`` (1000),
``load-window-ms`` (1000), ``proxy-role`` (proxy).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from ..cell.cell import Cell
from ..cell.statemachine import transition
from ..config.txtconfig import int_setting
from ..errors import ConfigError
from ..language.symbols import Keyword, Symbol
from ..wire.routing import cell_key, each_key
from ._quiet import send_quietly

__all__ = ["WebCell"]

log = logging.getLogger(__name__)


class WebCell(Cell):
    """Serves requests routed by a proxy and asks the proxy for the weight its load deserves."""

    role = "web"
    states = ("serving",)
    initial = "serving"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = self.cell_settings
        self.base_weight = self._setting("weight", 10, minimum=0)
        self.capacity = self._setting("capacity", 100, minimum=1)
        self.announce_every = self._setting("announce-ms", 1000, minimum=10) / 1000
        self.window = self._setting("load-window-ms", 1000, minimum=10) / 1000
        self.proxies = each_key(settings.get("proxy-role", "proxy"))
        self.weight = self.base_weight
        self.arrivals: deque[float] = deque()
        self.served = 0
        self.last_announce = -float("inf")

    def _setting(self, key: str, default: int, *, minimum: int) -> int:
        try:
            return int_setting(self.cell_settings, key, default, minimum=minimum)
        except ConfigError as error:
            log.warning("%s: %s; using %s", self.cell_name, error, default)
            return default

    def cell_tick_interval(self) -> float | None:
        return min(self.announce_every, self.window / 2)

    @property
    def node_name(self) -> str:
        return self.cell_host.name

    def on_start(self) -> None:
        self._announce()

    def on_stop(self) -> None:
        self._send(self.proxies, [Symbol("leave-pool"), Keyword("backend"), self.cell_name])

    # -- announcing ---------------------------------------------------------------------------

    def _announce(self) -> None:
        self.last_announce = time.monotonic()
        self._send(self.proxies, [
            Symbol("join-pool"), Keyword("backend"), self.cell_name,
            Keyword("node"), self.node_name, Keyword("weight"), self.weight,
            Keyword("incarnation"), self.cell_host.incarnation])

    @transition("pool-hello")
    def pool_hello(self, proxy: str | None = None, **extra: Any) -> None:
        self._announce()

    @transition("tick")
    def tick(self) -> None:
        self._reweigh()
        if time.monotonic() - self.last_announce >= self.announce_every:
            self._announce()

    # -- serving and load ---------------------------------------------------------------------

    @transition("serve")
    def serve(self, request: Any = None, proxy: str | None = None, **extra: Any) -> None:
        self.arrivals.append(time.monotonic())
        self.served += 1
        served = [Symbol("served"), Keyword("request"), request, Keyword("backend"), self.cell_name]
        if isinstance(proxy, str):
            self._send(cell_key(proxy), served)
        self.cell_reply(served)
        self._reweigh()

    def rate(self) -> float:
        """Requests per second over the last load window."""
        now = time.monotonic()
        while self.arrivals and now - self.arrivals[0] > self.window:
            self.arrivals.popleft()
        return len(self.arrivals) / self.window

    def _reweigh(self) -> None:
        rate = self.rate()
        wanted = self.base_weight
        if rate > self.capacity:
            wanted = max(1, round(self.base_weight * self.capacity / rate))
        if wanted != self.weight:
            self.weight = wanted
            self._send(self.proxies, [Symbol("set-weight"), Keyword("backend"), self.cell_name,
                                      Keyword("weight"), wanted])

    @transition("load")
    def load(self) -> None:
        """Reply ``(load :backend B :rate R :weight W :served N)``."""
        self.cell_reply([Symbol("load"), Keyword("backend"), self.cell_name,
                         Keyword("rate"), self.rate(), Keyword("weight"), self.weight,
                         Keyword("served"), self.served])

    def cell_snapshot(self) -> dict[str, Any]:
        snapshot = super().cell_snapshot()
        snapshot.update(weight=self.weight, served=self.served)
        return snapshot

    def _send(self, target: str, expr: list[Any]) -> None:
        send_quietly(self, target, expr)  # no proxy yet is fine; a killed node sends nothing
