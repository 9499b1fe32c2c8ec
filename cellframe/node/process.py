"""Running one node as a process: build it, serve until SIGTERM, shut down cleanly."""

from __future__ import annotations

import logging
import pkgutil
import signal
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigError
from ..roles import RoleRegistry, default_registry
from . import logship
from .node import Node

__all__ = ["registry_with_plugins", "run_node"]

log = logging.getLogger(__name__)


def run_node(
    name: str,
    *,
    transport: Any,
    resolver: Any = None,
    signer: Any = None,
    role: str | None = None,
    diagnostic: bool = False,
    registry: RoleRegistry | None = None,
    metrics_port: int | None = None,
    metrics_addr: str = "127.0.0.1",
    stop: threading.Event | None = None,
    queue_prefix: str = "",
    ship_logs: bool = True,
) -> None:
    """Start node ``name`` and serve until ``stop`` is set (SIGTERM and SIGINT set it).

    On the way out the node stops consuming first, so messages not yet applied go back to
    their queues for another node, then lets its cells finish what their mailboxes hold.
    With ``ship_logs`` its Python log records at INFO and above go to the log sump
    (``logship.SumpHandler``), from before it starts until after it stopped.
    """
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    node = Node(
        name,
        transport=transport,
        resolver=resolver,
        registry=registry or default_registry(),
        signer=signer,
        role=role,
        diagnostic=diagnostic,
        system_cells=system_cells(),
        queue_prefix=queue_prefix,
    )
    exporter = None
    if metrics_port is not None:  # first: a port in use stops the start before anything ran
        from .metrics import serve_metrics

        exporter = serve_metrics(node, metrics_port, metrics_addr)
    shipping = logship.install(transport, node, signer=signer) if ship_logs else None
    node.start()
    log.info("node %s running as %s", name, node.role or "a spare")
    print(f"node {name} ready as {node.role or 'spare'}", flush=True)
    try:
        stop.wait()
    finally:
        log.info("node %s shutting down", name)
        node.stop()
        if exporter is not None:
            exporter.shutdown()
        if shipping is not None:
            log.info("node %s stopped; log shipping %s", name, shipping.counters())
            logship.uninstall(shipping)
        transport.close()
        if resolver is not None:
            resolver.close()


def system_cells() -> tuple[type, ...]:
    """The cells every node hosts whatever its role: membership (heartbeats, detection,
    healing)."""
    from ..healing.membership import Membership

    return (Membership,)


def registry_with_plugins(specs: Iterable[str]) -> RoleRegistry:
    """The default registry plus the roles of each ``module:attr`` plug-in (``--plugin``).

    ``attr`` is a Cell class, registered under its ``role``, or a mapping from role names to
    a Cell class or a list of them. A plug-in that cannot be loaded is a ConfigError.
    """
    registry = default_registry()
    for spec in specs:
        if ":" not in spec:
            raise ConfigError(f"plug-in {spec!r} must be written MODULE:ATTR")
        try:
            found = pkgutil.resolve_name(spec)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"plug-in {spec!r} failed to load: {exc}") from exc
        for role, classes in _plugin_roles(spec, found).items():
            for cls in classes:
                registry.register(role, cls)
    return registry


def _plugin_roles(spec: str, found: Any) -> dict[str, list[Any]]:
    if isinstance(found, Mapping):
        return {role: list(c) if isinstance(c, list | tuple) else [c] for role, c in found.items()}
    role = getattr(found, "role", None)
    if not isinstance(found, type) or not isinstance(role, str):
        raise ConfigError(f"plug-in {spec!r} is neither a Cell class with a role nor a mapping "
                          "of roles to Cell classes")
    return {role: [found]}
