"""LocalCluster: several nodes in one process on one MemoryBroker, configured from one zone.

The demo and the healing tests use it::

    with LocalCluster("examples/cluster.zone", workdir=tmp) as cluster:
        cluster.wait_for(cluster.converged, timeout=5)
        cluster.kill("web-01")          # like SIGKILL: no goodbye, its queue vanishes
        cluster.wait_for(lambda: cluster.all_see("web-01", "down"), timeout=2)

Every node hosts the ``Membership`` system cell and the library cells of ``cellframe.roles``
(the log sump writing to ``<workdir>/logsump.log``). By default it starts every node the zone
lists at ``_nodes`` whose role it can play, and the spares; a node whose DNS records carry
warnings (the zone's deliberately broken example) is left out.
"""

from __future__ import annotations

import inspect
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from ..cell.cell import Cell
from ..cell.durable import CellJournal
from ..client import Client
from ..config.resolvers import ZoneFileResolver
from ..errors import ClusterError, ConfigError
from ..healing.membership import HealingConfig, Membership
from ..roles import LogSumpCell, ProxyCell, builtin_registry
from ..roles.registry import RoleRegistry
from ..transports.memory import MemoryBroker, MemoryTransport
from .node import Node

__all__ = ["LocalCluster", "wait_for"]

TransportWrapper = Callable[[MemoryTransport], Any]
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 5.0, *, what: str = "",
             show: Callable[[], object] | None = None, interval: float = 0.01) -> T:
    """Poll ``predicate`` until it returns something true, and return that.

    The one waiting helper of cellframe and its tests (``cellframe.testing`` re-exports it; it
    lives here, on the floor of ``LocalCluster``, because library code waits with it too). At
    the deadline it raises ClusterError saying what it waited for and what it saw last::

        wait_for(lambda: len(client.replies) >= 3, 5, what="3 replies",
                 show=lambda: client.replies)
        # ClusterError: not true within 5 s: 3 replies; last seen: [Reply(...), ...]

    ``what`` defaults to the predicate's name, or its source line for a lambda; ``show``
    defaults to the predicate's last value. Polls start 1 ms apart and double up to
    ``interval``: a condition that is nearly true costs no more than a millisecond, and a slow
    one (a status round trip per poll) is asked at most every ``interval`` seconds.
    """
    deadline = time.monotonic() + timeout
    pause = min(0.001, interval)
    while not (result := predicate()):
        if time.monotonic() >= deadline:
            seen = show() if show is not None else result
            raise ClusterError(f"not true within {timeout:g} s: {what or _describe(predicate)}"
                               f"; last seen: {_shorten(repr(seen))}")
        time.sleep(pause)
        pause = min(pause * 2, interval)
    return result


def _describe(predicate: Callable[[], object]) -> str:
    """A named function's name; a lambda's source line (read only when a wait has failed)."""
    name = getattr(predicate, "__name__", "")
    if name and name != "<lambda>":
        return name
    try:
        return _shorten(" ".join(inspect.getsource(predicate).split()), 300)
    except (OSError, TypeError):
        return repr(predicate)


def _shorten(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class LocalCluster:
    """Nodes in one process, one MemoryBroker, one zone; ``kill`` simulates SIGKILL."""

    def __init__(
        self,
        zone: str | Path | None = None,
        *,
        resolver: Any | None = None,
        nodes: Iterable[str] | None = None,
        registry: RoleRegistry | None = None,
        broker: MemoryBroker | None = None,
        healing: HealingConfig | None = None,
        workdir: str | Path | None = None,
        signer: Any | None = None,
        wrap_transport: TransportWrapper | None = None,
        journal: Callable[[Node], CellJournal] | None = None,
    ) -> None:
        if (zone is None) == (resolver is None):
            raise ConfigError("LocalCluster needs exactly one of a zone file or a resolver")
        self.resolver = resolver if resolver is not None else ZoneFileResolver(zone)  # type: ignore[arg-type]
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="cellframe-")
        self.workdir = Path(workdir)
        self.log_path = self.workdir / "logsump.log"
        self.registry = registry or builtin_registry(logsump=LogSumpCell.writing_to(self.log_path))
        self.broker = broker or MemoryBroker()
        self.membership: type[Cell] = Membership.configured(healing) if healing else Membership
        self.signer = signer
        self.wrap_transport = wrap_transport
        #: Each node's journal source (``shard_journal``: durable cells on the shard tier).
        self.journal = journal
        self.names = list(nodes) if nodes is not None else self.default_nodes()
        self.nodes: dict[str, Node] = {}
        self.killed_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def default_nodes(self) -> list[str]:
        """Nodes of the zone this registry can play (spares included), minus broken ones."""
        playing, spares = [], []
        for name in self.resolver.node_names():
            config = self.resolver.node_config(name)
            if config.warnings and config.role is not None:
                continue
            if config.role is None:
                spares.append(name)
            elif config.role in self.registry:
                playing.append(name)
        return playing + spares  # spares last, so they find the roles of a cold start filled

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> LocalCluster:
        for name in self.names:
            self.start_node(name)
        return self

    def start_node(self, name: str, *, role: str | None = None) -> Node:
        """Start (or restart, as a new incarnation) node ``name``."""
        transport: Any = self.broker.connect(name=name)
        if self.wrap_transport is not None:
            transport = self.wrap_transport(transport)
        node = Node(name, transport=transport, resolver=self.resolver, registry=self.registry,
                    signer=self.signer, role=role, system_cells=(self.membership,),
                    journal=self.journal)
        with self._lock:
            if name in self.nodes:
                raise ClusterError(f"node {name} is already running")
            self.nodes[name] = node
        node.start()
        return node

    def kill(self, name: str) -> float:
        """Crash ``name`` as SIGKILL would: its connection drops first (the broker deletes its
        exclusive queue), then its cells stop, unable to say goodbye. Returns the kill time."""
        with self._lock:
            node = self.nodes.pop(name)
        killed_at = time.time()
        self.killed_at[name] = killed_at
        transport: Any = node.transport  # a MemoryTransport, or a wrapper of one: not just any Transport
        transport.abort()
        node.stop()
        return killed_at

    def stop_node(self, name: str) -> None:
        """Stop ``name`` cleanly: its cells say goodbye, then its connection closes."""
        with self._lock:
            node = self.nodes.pop(name)
        node.stop()
        node.transport.close()

    def stop(self) -> None:
        """Stop every node, all at once (each drains its cells' mailboxes first)."""
        stoppers = [threading.Thread(target=self.stop_node, args=(name,), daemon=True)
                    for name in list(self.nodes)]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join(30)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- looking inside -----------------------------------------------------------------------

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def live(self) -> list[str]:
        return sorted(self.nodes)

    def view(self, name: str) -> dict[str, dict[str, Any]]:
        """Node ``name``'s membership view: member name -> {role, status, incarnation, ...}."""
        for cell in self.nodes[name].status()["cells"]:
            if "members" in cell:
                return {m["name"]: m for m in cell["members"]}
        raise ClusterError(f"node {name} hosts no membership cell")

    def status_of(self, member: str, seen_by: str) -> str | None:
        entry = self.view(seen_by).get(member)
        return entry["status"] if entry else None

    def all_see(self, member: str, status: str) -> bool:
        """Does every live node other than ``member`` see it with ``status``?"""
        return all(self.status_of(member, n) == status for n in self.live() if n != member)

    def converged(self) -> bool:
        """Does every live node see every live node alive, with the same roles?"""
        live = self.live()
        roles = {n: self.nodes[n].role for n in live}
        for name in live:
            view = self.view(name)
            for other in live:
                entry = view.get(other)
                if entry is None or entry["status"] != "alive" or entry["role"] != roles[other]:
                    return False
        return True

    def roles(self) -> dict[str, str | None]:
        return {name: node.role for name, node in sorted(self.nodes.items())}

    def holders(self, role: str) -> list[str]:
        return [name for name, r in self.roles().items() if r == role]

    def proxy(self, name: str | None = None) -> ProxyCell:
        """The proxy cell on node ``name`` (default: the one live proxy)."""
        names = [name] if name else self.holders("proxy")
        for node_name in names:
            for cell in self.nodes[node_name].cells().values():
                if isinstance(cell, ProxyCell):
                    return cell
        raise ClusterError(f"no proxy cell on {names or 'any node'}")

    def pool(self, name: str | None = None) -> list[str]:
        """Backend names in the proxy's pool."""
        return [row[0] for row in self.proxy(name).pool.rows()]

    def client(self, name: str | None = None) -> Client:
        """A client on the cluster's broker (close it when done)."""
        return Client(self.broker.connect(name=name or "client"), signer=self.signer, name=name)

    def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0, *, what: str = "",
                 show: Callable[[], object] | None = None, interval: float = 0.01) -> T:
        """``wait_for`` (this module's), for ``cluster.wait_for(cluster.converged, 5)``."""
        return wait_for(predicate, timeout, what=what, show=show, interval=interval)
