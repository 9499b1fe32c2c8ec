"""Running one node as a process: build it, serve until SIGTERM, shut down cleanly."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from .node import Node
from .registry import RoleRegistry, default_registry

__all__ = ["run_node"]

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
    stop: threading.Event | None = None,
) -> None:
    """Start node ``name`` and serve until ``stop`` is set (SIGTERM and SIGINT set it).

    On the way out the node stops consuming first, so messages not yet applied go back to
    their queues for another node, then lets its cells finish what their mailboxes hold.
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
    )
    node.start()
    exporter = None
    if metrics_port is not None:
        from .metrics import serve_metrics

        exporter = serve_metrics(node, metrics_port)
    log.info("node %s running as %s", name, node.role or "a spare")
    print(f"node {name} ready as {node.role or 'spare'}", flush=True)
    try:
        stop.wait()
    finally:
        node.stop()
        if exporter is not None:
            exporter.shutdown()
        transport.close()
        if resolver is not None:
            resolver.close()


def system_cells() -> tuple[type, ...]:
    """The cells every node hosts whatever its role: membership (heartbeats, detection,
    healing)."""
    from .membership import Membership

    return (Membership,)
