"""Prometheus metrics of a node, read from its status at scrape time.

Nothing is counted twice: the cells already keep counters for their own bookkeeping, so the
collector reads those snapshots when Prometheus scrapes, and adds nothing to the hot path
except one counter per healing event (events are rare).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import ConfigError

__all__ = ["MetricsExporter", "NodeCollector", "serve_metrics"]

_CELL_COUNTERS = {
    "received": "messages received by the cell",
    "applied": "messages applied through a transition",
    "ignored": "messages with no transition from the current state (no-ops)",
    "duplicates": "messages not applied again because their id was seen",
    "refused": "messages refused as bad input: arguments that do not fit, a refused expression",
    "errors": "messages whose action (or guard) raised",
    "dead_lettered": "messages reflected to the dead letters in diagnostic mode",
}


class NodeCollector(Collector):
    """Turns ``node.status()`` (and the events the node emitted) into metric families."""

    def __init__(self, node: Any):
        self.node = node
        self.events: Counter[str] = Counter()
        self._lock = threading.Lock()
        node.listeners.append(self._count_event)

    def _count_event(self, kind: str, payload: dict[str, Any]) -> None:
        with self._lock:
            self.events[kind] += 1

    def collect(self) -> Iterator[Metric]:
        status = self.node.status()
        labels = ["node", "cell", "role"]
        families = {
            name: CounterMetricFamily(f"cellframe_cell_messages_{name}", doc, labels=labels)
            for name, doc in _CELL_COUNTERS.items()
        }
        for cell in status["cells"]:
            values = [status["node"], cell["name"], cell.get("role") or ""]
            for name, family in families.items():
                family.add_metric(values, cell["counters"].get(name, 0))
        yield from families.values()
        yield from self._node_metrics(status)
        yield from self._membership_metrics(status)
        yield from self._store_metrics(status)
        events = CounterMetricFamily("cellframe_healing_events", "events emitted by this node",
                                     labels=["node", "kind"])
        with self._lock:
            for kind, count in sorted(self.events.items()):
                events.add_metric([status["node"], kind], count)
        yield events

    @staticmethod
    def _node_metrics(status: dict[str, Any]) -> Iterator[Metric]:
        node = status["node"]
        for name, doc in (("delivered", "deliveries handed to cells"),
                          ("rejected", "deliveries refused (all reasons: see cellframe_node_messages_refused)"),
                          ("unroutable", "sent messages no queue received"),
                          ("sent", "messages sent by this node and its cells"),
                          ("crashes", "cells that crashed"),
                          ("restarts", "crashed cells restarted by the node's supervisor"),
                          ("failures", "cells failed past their restart intensity")):
            family = CounterMetricFamily(f"cellframe_node_messages_{name}", doc, labels=["node"])
            family.add_metric([node], status["counters"].get(name, 0))
            yield family
        refused = CounterMetricFamily("cellframe_node_messages_refused",
                                      "deliveries refused before any cell saw them, by reason",
                                      labels=["node", "reason"])
        for reason, count in sorted(status["counters"].get("refused", {}).items()):
            refused.add_metric([node, reason], count)
        yield refused
        role = GaugeMetricFamily("cellframe_node_role", "1 for the role this node plays",
                                 labels=["node", "role"])
        role.add_metric([node, status["role"] or "spare"], 1)
        yield role

    @staticmethod
    def _membership_metrics(status: dict[str, Any]) -> Iterator[Metric]:
        members = next((c["members"] for c in status["cells"] if "members" in c), None)
        if members is None:
            return
        up = GaugeMetricFamily("cellframe_member_up", "1 if this node sees the member as up",
                               labels=["node", "member", "role"])
        lag = GaugeMetricFamily("cellframe_heartbeat_lag_seconds",
                                "seconds since the member's last heartbeat was heard",
                                labels=["node", "member"])
        for member in members:
            up.add_metric([status["node"], member["name"], member.get("role") or "spare"],
                          1 if member.get("status") == "alive" else 0)
            if member.get("silence") is not None:
                lag.add_metric([status["node"], member["name"]], member["silence"])
        yield up
        yield lag

    @staticmethod
    def _store_metrics(status: dict[str, Any]) -> Iterator[Metric]:
        records = GaugeMetricFamily("cellframe_store_records", "records held by a shard cell",
                                    labels=["node", "cell"])
        size = GaugeMetricFamily("cellframe_store_bytes", "bytes on disk of a shard cell's store",
                                 labels=["node", "cell"])
        found = False
        for cell in status["cells"]:
            store = cell.get("store")
            if store:
                found = True
                records.add_metric([status["node"], cell["name"]], store.get("records", 0))
                size.add_metric([status["node"], cell["name"]], store.get("bytes", 0))
        if found:
            yield records
            yield size


class MetricsExporter:
    """A running metrics endpoint; ``shutdown()`` stops it."""

    def __init__(self, server: Any, thread: threading.Thread, registry: CollectorRegistry):
        self.server, self.thread, self.registry = server, thread, registry

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(node: Any, port: int, addr: str = "127.0.0.1") -> MetricsExporter:
    """Expose ``node``'s metrics at ``http://addr:port/metrics`` (port 0: any free port), with
    the standard ``process_*`` and ``python_*`` collectors beside the node's own.

    A port in use or an address not on this host is a ConfigError saying which."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    try:
        server, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise ConfigError(f"metrics cannot listen on {addr}:{port}: "
                          f"{exc.strerror or exc}") from exc
    return MetricsExporter(server, thread, registry)
