"""The proxy cell: a weighted pool of backends, kept up to date only by messages.

Backends (web cells) announce themselves with ``(join-pool :backend B :node N :weight W
:incarnation I)``, ask for another weight with ``(set-weight :backend B :node N :weight W)``, and
say ``(leave-pool :backend B :node N)`` when they stop; a backend is its node's, and a join,
drain, leave, weight or ``served`` naming another node is ignored (an operator's
``set-weight`` names none, and applies to any backend). Membership tells the proxy when a node is gone:
``(member-down :node N :incarnation I)`` or ``(member-leave ...)`` (the proxy binds
``membership.down.*`` and ``membership.leave.*``), and every backend on that node is dropped at
once. Requests ``(route R)`` go to ``cell.<backend>`` as ``(serve :request R :proxy P :node N)``, with
the requester's reply address, chosen by smooth weighted round-robin (nginx's algorithm): over
any run of ``sum(weights)`` picks each backend gets exactly its weight, spread evenly.

The data plane: by default the proxy routes s-expression requests itself (above). With
``haproxy-socket=PATH`` in DNS it also drives a real HAProxy through its runtime API
(``cellframe.web.dataplane``): a backend that joins with ``:address A :port P`` becomes a server
of HAProxy's backend ``haproxy-backend`` (web), its ``set-weight`` becomes HAProxy's weight,
``(drain-pool :backend B :node N)`` sets it to drain (and out of the s-expression rotation),
and leaving or its node going down deletes it. The pool is synced again every ``haproxy-sync-ms`` (500),
so a restarted HAProxy is rebuilt from the cluster; an unreachable one is retried with backoff.
``haproxy-server-options`` replaces what each added server is given (``SERVER_OPTIONS``).

Not thrashing the pool: a ``join-pool`` from a node life already declared down (same or older
incarnation, a late or duplicated message) is ignored, and a node that went down more than
once recently is held out for a growing interval (``FlapDamper``) before it may rejoin.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..cell.cell import Cell
from ..cell.statemachine import transition
from ..config.txtconfig import int_setting
from ..healing.detector import FlapDamper
from ..language.symbols import Keyword, Symbol
from ..web.dataplane import HaproxyPool
from ..web.haproxy import SERVER_OPTIONS, HaproxyRuntime
from ..wire.envelope import Message
from ..wire.routing import cell_key, each_key
from ._quiet import send_quietly

__all__ = ["Backend", "ProxyCell", "WeightedPool"]

log = logging.getLogger(__name__)

MAX_WEIGHT = 1000
_QUOTE = Symbol("quote")


@dataclass(slots=True)
class Backend:
    """One pool entry; ``current`` is the smooth round-robin's running score."""

    name: str
    node: str
    weight: int
    incarnation: int = 0
    current: int = 0
    routed: int = 0


class WeightedPool:
    """Backends with weights, picked by smooth weighted round-robin (pure, not thread-safe)."""

    def __init__(self) -> None:
        self.backends: dict[str, Backend] = {}

    def add(self, name: str, node: str, weight: int, incarnation: int = 0) -> bool:
        """Add or refresh ``name``; return True if it is new to the pool."""
        backend = self.backends.get(name)
        if backend is None:
            self.backends[name] = Backend(name, node, weight, incarnation)
            return True
        backend.node, backend.weight = node, weight
        backend.incarnation = max(backend.incarnation, incarnation)
        return False

    def remove(self, name: str) -> Backend | None:
        return self.backends.pop(name, None)

    def on_node(self, node: str) -> list[str]:
        return [b.name for b in self.backends.values() if b.node == node]

    def set_weight(self, name: str, weight: int) -> bool:
        backend = self.backends.get(name)
        if backend is None or backend.weight == weight:
            return False
        backend.weight = weight
        return True

    def pick(self) -> Backend | None:
        """The next backend: each gains its weight, the highest is chosen and pays the total."""
        best: Backend | None = None
        total = 0
        for backend in self.backends.values():
            if backend.weight <= 0:
                continue
            backend.current += backend.weight
            total += backend.weight
            if best is None or backend.current > best.current:
                best = backend
        if best is not None:
            best.current -= total
            best.routed += 1
        return best

    def rows(self) -> list[list[Any]]:
        """``[name, weight, node]`` per backend, sorted by name."""
        ordered = sorted(self.backends.values(), key=lambda b: b.name)
        return [[b.name, b.weight, b.node] for b in ordered]


def _weight(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return max(0, min(MAX_WEIGHT, int(value)))


class ProxyCell(Cell):
    """Routes requests over a weighted pool that web cells join and leave by message."""

    role = "proxy"
    #: The role whose cells are the backends (asked to announce themselves when we start).
    backend_role: ClassVar[str] = "web"
    states = ("serving",)
    initial = "serving"
    bindings = ("membership.down.*", "membership.leave.*")
    #: What only the web cells send it (``docs/security.md``): a backend joins, drains and
    #: leaves, and says it served a request, in its own node's name (``:node``), so no
    #: operator key can put a server into the pool, and a node key bound to web-01 speaks
    #: only for web-01's backends.
    node_verbs: ClassVar[Mapping[str, str | None]] = {
        "join-pool": "node", "leave-pool": "node", "drain-pool": "node", "served": "node"}
    #: A web cell asks for its own backend's weight in its node's name; an operator may set
    #: any backend's (as its key's capabilities allow). ``route``, ``pool`` and ``routes`` are
    #: a client's: open.
    shared_verbs: ClassVar[Mapping[str, str]] = {"set-weight": "node"}
    #: A request the broker returned is retried by the proxy telling itself; never from the wire.
    local_verbs: ClassVar[tuple[str, ...]] = ("reroute",)
    route_log_size: ClassVar[int] = 100_000
    #: Hold-out after a backend's node goes down the second time in a minute (then doubling).
    hold_base: ClassVar[float] = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool = WeightedPool()
        self.damper = FlapDamper(base=self.hold_base)
        self.gone: dict[str, int] = {}  # node -> newest incarnation declared down or left
        self.route_log: deque[tuple[float, str, str]] = deque(maxlen=self.route_log_size)
        self.stats = {"routed": 0, "unrouted": 0, "served": 0, "refused_joins": 0, "rerouted": 0,
                      "not_held": 0}
        self.pool_changes: list[tuple[float, str, str]] = []  # (time, "added"/"removed", backend)
        self.haproxy: HaproxyPool | None = None
        self.sync_every = int_setting(self.cell_settings, "haproxy-sync-ms", 500, minimum=10) / 1000
        self.last_sync = -float("inf")
        if self.cell_settings.get("haproxy-socket"):
            runtime = HaproxyRuntime(self.cell_settings["haproxy-socket"])
            backend = self.cell_settings.get("haproxy-backend", "web")
            options = self.cell_settings.get("haproxy-server-options", SERVER_OPTIONS)
            self.haproxy = HaproxyPool(runtime, backend, options=options)

    def cell_tick_interval(self) -> float | None:
        return None if self.haproxy is None else min(self.sync_every, 0.1)

    @transition("tick")
    def tick(self) -> None:
        """Sync HAProxy every ``haproxy-sync-ms``, sooner when a failed sync's backoff is due."""
        if self.haproxy is None:
            return
        now = time.monotonic()
        if self.haproxy.failures or now - self.last_sync >= self.sync_every:
            self._sync(now)

    def _sync(self, now: float | None = None) -> None:
        if self.haproxy is None:
            return
        now = time.monotonic() if now is None else now
        was_reachable = self.haproxy.failures == 0
        if self.haproxy.sync(now):
            self.last_sync = now
            if not was_reachable:
                self._emit("haproxy-reachable", backend=self.haproxy.backend)
        elif was_reachable and self.haproxy.failures == 1:
            self._emit("haproxy-unreachable", backend=self.haproxy.backend,
                       error=self.haproxy.last_error or "")

    def on_start(self) -> None:
        # Ask the backends to announce themselves now rather than at their next period.
        send_quietly(self, each_key(self.backend_role),
                     [Symbol("pool-hello"), Keyword("proxy"), self.cell_name,
                      Keyword("node"), self.cell_host.name])

    # -- the pool -----------------------------------------------------------------------------

    @transition("join-pool")
    def join_pool(self, backend: str, node: str | None = None, weight: Any = 10,
                  incarnation: int = 0, address: str | None = None, port: int | None = None,
                  **extra: Any) -> None:
        node = node if isinstance(node, str) else backend
        weight_ = _weight(weight)
        if not isinstance(backend, str) or weight_ is None or not isinstance(incarnation, int):
            return
        if (self.gone.get(node, -1) >= incarnation or self.damper.held(node, time.monotonic())
                or not self._held_by(backend, node, "join-pool")):
            self.stats["refused_joins"] += 1
            return
        if self.pool.add(backend, node, weight_, incarnation):
            self._changed("added", backend, weight=weight_, member=node)
        if self.haproxy is not None and isinstance(address, str) and isinstance(port, int):
            known = self.haproxy.wanted.get(backend)
            if known is None or (known.address, known.port, known.weight) != (address, port, weight_):
                self.haproxy.put(backend, address, port, weight_)
                self._sync()

    @transition("set-weight")
    def set_weight(self, backend: str, weight: Any, node: str | None = None,
                   **extra: Any) -> None:
        """A backend's new weight: a web cell's for itself (``:node``, its node's name, which
        a bound key must give), or an operator's for any backend (no ``:node``)."""
        weight_ = _weight(weight)
        if weight_ is not None and self._held_by(backend, node, "set-weight") \
                and self.pool.set_weight(backend, weight_):
            self._emit("pool-weight", backend=backend, weight=weight_)
            if self.haproxy is not None:
                self.haproxy.set_weight(backend, weight_)
                self._sync()

    @transition("drain-pool")
    def drain_pool(self, backend: str, node: str | None = None, **extra: Any) -> None:
        """A backend stopping cleanly: no new requests to it; those it has finish."""
        if not self._held_by(backend, node, "drain-pool"):
            return
        if self.pool.set_weight(backend, 0):
            self._emit("pool-drain", backend=backend)
        if self.haproxy is not None and backend in self.haproxy.wanted:
            self.haproxy.drain(backend)
            self._sync()

    @transition("leave-pool")
    def leave_pool(self, backend: str, node: str | None = None, **extra: Any) -> None:
        if self._held_by(backend, node, "leave-pool") and self.pool.remove(backend) is not None:
            self._changed("removed", backend, reason="left")

    def _held_by(self, backend: str, node: str | None, verb: str) -> bool:
        """Whether ``node`` may change ``backend``: a backend is its node's alone (cells are
        named after their node) until it leaves or its node goes down, so web-01's key cannot
        move web-02's server to an address of its own, nor change its weight. None: a message
        naming no node (an operator's set-weight, or a web cell older than ``:node``), which
        no bound node key gets past the gate. A refusal is counted (``stats["not_held"]``),
        logged, and dead-lettered in diagnostic mode as ``not-allowed``, as the gate's are."""
        held = self.pool.backends.get(backend)
        if node is None or held is None or held.node == node:
            return True
        self.stats["not_held"] += 1
        reason = f"not-allowed: node {node!r} does not hold backend {backend!r} ({verb} ...)"
        log.info("%s: %s", self.cell_name, reason)
        if self.cell_diagnostic and self.cell_message is not None:
            self._cell_dead_letter(self.cell_message, reason)
        return False

    @transition("member-down")
    def member_down(self, node: str, incarnation: int = 0, **extra: Any) -> None:
        """Drop every backend on ``node`` (first word wins; repeats change nothing)."""
        if not isinstance(node, str) or not isinstance(incarnation, int):
            return
        if self.gone.get(node, -1) >= incarnation:
            return
        self.gone[node] = incarnation
        self.damper.record_down(node, time.monotonic())
        self._drop_node(node, incarnation, "down")

    @transition("member-leave")
    def member_leave(self, node: str, incarnation: int = 0, **extra: Any) -> None:
        if isinstance(node, str) and isinstance(incarnation, int):
            self.gone[node] = max(self.gone.get(node, -1), incarnation)
            self._drop_node(node, incarnation, "left")

    def _drop_node(self, node: str, incarnation: int, reason: str) -> None:
        for name in self.pool.on_node(node):
            if self.pool.backends[name].incarnation <= incarnation:
                self.pool.remove(name)
                self._changed("removed", name, reason=reason, member=node)

    def _changed(self, change: str, backend: str, **fields: Any) -> None:
        self.pool_changes.append((time.time(), change, backend))
        self._emit(f"pool-{change}", backend=backend, **fields)
        if change == "removed" and self.haproxy is not None:
            self.haproxy.remove(backend)
            self._sync()

    # -- requests -----------------------------------------------------------------------------

    @transition("route")
    def route(self, request: Any, **extra: Any) -> None:
        message = self.cell_message
        self._route(request, message.reply_to if message is not None else None, avoid=None)

    @transition("reroute")
    def reroute(self, request: Any, failed: str | None = None, reply_to: str | None = None,
                **extra: Any) -> None:
        """A request whose backend vanished before the proxy heard it was down (the broker
        returned it): route it again, avoiding that backend, so it is not lost in the gap."""
        self.stats["rerouted"] += 1
        self._route(request, reply_to if isinstance(reply_to, str) else None, avoid=failed)

    def _route(self, request: Any, reply_to: str | None, avoid: str | None) -> None:
        backend = self.pool.pick()
        if backend is not None and backend.name == avoid and len(self.pool.backends) > 1:
            backend = self.pool.pick()
        if backend is None or backend.name == avoid:
            self.stats["unrouted"] += 1
            reason = "the pool is empty"
            unrouted = [Symbol("unrouted"), Keyword("request"), request, Keyword("reason"), reason]
            if reply_to:
                self.cell_send(reply_to, unrouted)
            return
        self.stats["routed"] += 1
        self.route_log.append((time.time(), str(request), backend.name))
        serve = [Symbol("serve"), Keyword("request"), request, Keyword("proxy"), self.cell_name,
                 Keyword("node"), self.cell_host.name]
        retry = [Symbol("reroute"), request, Keyword("failed"), backend.name,
                 Keyword("reply-to"), reply_to]
        me = self.actor_ref

        def returned(envelope: Any, reason: str) -> None:  # a transport thread: only tell
            me.tell(Message(retry))

        self.cell_send(cell_key(backend.name), serve, reply_to=reply_to, on_return=returned)

    @transition("served")
    def served(self, request: Any = None, backend: str | None = None, node: str | None = None,
               **extra: Any) -> None:
        """A backend served a request we routed: counted if its node holds it."""
        if isinstance(backend, str) and self._held_by(backend, node, "served"):
            self.stats["served"] += 1

    # -- queries ------------------------------------------------------------------------------

    @transition("pool")
    def query_pool(self) -> None:
        """Reply ``(pool :proxy P :backends '((name weight node) ...))``."""
        self.cell_reply([Symbol("pool"), Keyword("proxy"), self.cell_name,
                         Keyword("backends"), [_QUOTE, self.pool.rows()]])

    @transition("routes")
    def query_routes(self, since: float = 0.0, **extra: Any) -> None:
        """Reply ``(routes :proxy P :since T :counts '((backend n) ...))``: requests routed to
        each backend at or after wall time ``T``."""
        since = float(since) if isinstance(since, int | float) else 0.0
        counts = [[backend, n] for backend, n in sorted(self.routes_since(since).items())]
        self.cell_reply([Symbol("routes"), Keyword("proxy"), self.cell_name, Keyword("since"),
                         since, Keyword("counts"), [_QUOTE, counts]])

    def routes_since(self, since: float) -> dict[str, int]:
        counts: dict[str, int] = {}
        for at, _, backend in list(self.route_log):
            if at >= since:
                counts[backend] = counts.get(backend, 0) + 1
        return counts

    def cell_snapshot(self) -> dict[str, Any]:
        snapshot = super().cell_snapshot()
        snapshot["pool"] = self.pool.rows()
        snapshot["stats"] = dict(self.stats)
        if self.haproxy is not None:
            snapshot["haproxy"] = self.haproxy.status(time.monotonic())
        return snapshot

    def _emit(self, kind: str, **fields: Any) -> None:
        self.cell_host.emit(kind, proxy=self.cell_name, **fields)
