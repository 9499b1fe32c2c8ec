"""The web cell: a service that serves, measures its own load, and keeps its proxies informed
by fire-and-forget messages only.

With ``app=package.module:attr`` in DNS it serves that WSGI app over real HTTP (waitress, on
``listen=HOST:PORT``; port 0 takes a free one) and answers ``health-url``'s path itself; its
load is the latency and requests in flight its ``LoadMeter`` sees, and ``WeightPolicy`` turns
that into the weight it asks for (``slow-ms``/``fast-ms``, hysteresis). On a clean stop it
asks the proxies to drain it, waits until its requests in flight are done (at most
``drain-ms``), and only then closes and leaves. Without ``app`` it serves the s-expression
requests below, the embedded default.

- When it comes online, and again every ``announce-ms`` (the announcement is idempotent, so a
  proxy that started later or lost it catches up), it sends ``(join-pool :backend B :node N
  :weight W :incarnation I)`` to ``each.proxy``; a proxy that starts asks with ``(pool-hello
  :proxy P :node N)``.
  With HTTP the announcement also carries ``:address A :port P``.
- ``(serve :request R :proxy P :node N)`` is a request: it counts it, calls the proxy back
  with ``(served :request R :backend B :node N)`` (N its own node), and answers the requester
  if it gave a reply address.
- Load is the request rate over the last ``load-window-ms``. Above ``capacity`` requests per
  second it asks for a lower weight, ``weight * capacity / rate`` (at least 1); when the load
  falls it asks for its configured weight back: ``(set-weight :backend B :node N :weight W)``.
- When it stops cleanly it sends ``(leave-pool :backend B :node N)`` (with HTTP after
  ``(drain-pool :backend B :node N)``).

Settings (the node's DNS TXT): ``weight`` (10), ``capacity`` (100), ``announce-ms`` (1000),
``load-window-ms`` (1000), ``proxy-role`` (proxy); for HTTP ``app``, ``listen``
(127.0.0.1:0), ``health-url`` (/health), ``slow-ms`` (100), ``fast-ms`` (50), ``http-threads``
(8), ``drain-ms`` (2000).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ..cell.cell import Cell
from ..cell.statemachine import transition
from ..config.txtconfig import int_setting
from ..errors import ConfigError
from ..language.symbols import Keyword, Symbol
from ..web.load import WeightPolicy
from ..web.server import HttpServer, load_app
from ..wire.routing import cell_key, each_key
from ._quiet import send_quietly

__all__ = ["WebCell"]

log = logging.getLogger(__name__)


class WebCell(Cell):
    """Serves requests routed by a proxy and asks the proxy for the weight its load deserves."""

    role = "web"
    states = ("serving",)
    initial = "serving"
    #: What only a proxy sends it, in its own node's name (``:node``): its ``(pool-hello)``
    #: and the requests it routes (``(serve ...)``, which move the cell's load and so its
    #: weight). ``load`` is a client's question: left open (``docs/security.md``).
    node_verbs: ClassVar[Mapping[str, str | None]] = {"pool-hello": "node", "serve": "node"}

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
        self.http: HttpServer | None = None
        self.policy: WeightPolicy | None = None
        self.last_load: float | None = None
        if settings.get("app"):
            self._open_http(settings)

    def _open_http(self, settings: dict[str, str]) -> None:
        """Import the app and listen, in the node's thread, so that a bad ``app`` or a taken
        port fails the node's differentiation with a ConfigError that says why."""
        app = load_app(settings["app"])
        host, _, port = settings.get("listen", "127.0.0.1:0").rpartition(":")
        if not port.isdigit():
            raise ConfigError(f"listen={settings.get('listen')!r}: expected HOST:PORT")
        health = urlsplit(settings.get("health-url", "/health")).path or "/health"
        slow = self._setting("slow-ms", 100, minimum=1)
        fast = min(slow, self._setting("fast-ms", 50, minimum=0))
        self.policy = WeightPolicy(self.base_weight, slow, fast)
        self.drain_wait = self._setting("drain-ms", 2000, minimum=0) / 1000
        self.http = HttpServer(app, host or "127.0.0.1", int(port), health_path=health,
                               threads=self._setting("http-threads", 8, minimum=1),
                               window=self.window).start()

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
        if self.http is not None:
            self._drain(self.http)
        self._send(self.proxies, [Symbol("leave-pool"), Keyword("backend"), self.cell_name,
                                  Keyword("node"), self.node_name])

    def on_failure(self, *exc_info: Any) -> None:
        if self.http is not None:
            self.http.close()

    def _drain(self, http: HttpServer) -> None:
        """Ask the proxies to send nothing new, fail health checks, wait for the requests in
        flight, queued or still being written (and those HAProxy had already chosen us for)
        to finish, then close."""
        self._send(self.proxies, [Symbol("drain-pool"), Keyword("backend"), self.cell_name,
                                  Keyword("node"), self.node_name])
        http.draining = True
        deadline = time.monotonic() + self.drain_wait
        quiet_since, seen = time.monotonic(), http.meter.total
        while time.monotonic() < deadline:
            if http.meter.total != seen or http.meter.in_flight or http.pending():
                quiet_since, seen = time.monotonic(), http.meter.total
            elif time.monotonic() - quiet_since >= min(0.15, self.drain_wait):
                # Nothing new for 0.15 s: HAProxy applies the drain state to the next request
                # it routes, so this only covers requests already on the wire. Short, because
                # a step-down drains inside the membership cell's turn, and heartbeats wait.
                break
            time.sleep(0.01)
        http.close()

    # -- announcing ---------------------------------------------------------------------------

    def _announce(self) -> None:
        self.last_announce = time.monotonic()
        join = [Symbol("join-pool"), Keyword("backend"), self.cell_name,
                Keyword("node"), self.node_name, Keyword("weight"), self.weight,
                Keyword("incarnation"), self.cell_host.incarnation]
        if self.http is not None:
            address = "127.0.0.1" if self.http.host in ("0.0.0.0", "") else self.http.host
            join += [Keyword("address"), address, Keyword("port"), self.http.port]
        self._send(self.proxies, join)

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
        served = [Symbol("served"), Keyword("request"), request, Keyword("backend"), self.cell_name,
                  Keyword("node"), self.node_name]
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
        if self.http is not None and self.policy is not None:
            sample = self.http.meter.sample()
            self.last_load = round(max(sample.busy, sample.p95_ms / self.policy.slow_ms), 3)
            wanted = self.policy.decide(sample)
        else:
            rate = self.rate()
            wanted = self.base_weight
            if rate > self.capacity:
                wanted = max(1, round(self.base_weight * self.capacity / rate))
        if wanted != self.weight:
            self.weight = wanted
            self._send(self.proxies, [Symbol("set-weight"), Keyword("backend"), self.cell_name,
                                      Keyword("node"), self.node_name, Keyword("weight"), wanted])

    def cell_load(self) -> float | None:
        """With HTTP: the busier of its threads' busy fraction and p95 latency / ``slow-ms``,
        as of the last tick (without HTTP: None)."""
        return self.last_load

    @transition("load")
    def load(self) -> None:
        """Reply ``(load :backend B :rate R :weight W :served N ...)``, with HTTP also
        ``:in-flight :p50-ms :p95-ms :p99-ms :cpu``."""
        reply = [Symbol("load"), Keyword("backend"), self.cell_name, Keyword("rate"), self.rate(),
                 Keyword("weight"), self.weight, Keyword("served"), self.served]
        if self.http is not None:
            sample = self.http.meter.sample().as_dict()
            reply[4:6] = [Keyword("rate"), sample.pop("rate")]
            reply[8:10] = [Keyword("served"), self.http.meter.total]
            for key, value in sample.items():
                reply += [Keyword(key), value]
        self.cell_reply(reply)

    def cell_snapshot(self) -> dict[str, Any]:
        snapshot = super().cell_snapshot()
        snapshot.update(weight=self.weight, served=self.served)
        if self.http is not None:
            snapshot["http"] = {"port": self.http.port, "served": self.http.meter.total,
                                **self.http.meter.sample().as_dict()}
        return snapshot

    def _send(self, target: str, expr: list[Any]) -> None:
        send_quietly(self, target, expr)  # no proxy yet is fine; a killed node sends nothing
