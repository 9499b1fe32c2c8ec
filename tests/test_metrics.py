"""A node's Prometheus endpoint shows its cells' counters and its healing events."""

from __future__ import annotations

import urllib.request

from cellframe import Client, MemoryBroker, Node, RoleRegistry
from cellframe.node.metrics import serve_metrics
from cellframe.testing import wait_for
from tests.node_support import Tally


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_metrics_endpoint_reports_cell_counters_role_and_events() -> None:
    broker = MemoryBroker()
    node = Node("m1", transport=broker.connect(), role="tally",
                registry=RoleRegistry({"tally": [Tally]}))
    exporter = serve_metrics(node, 0)
    node.start()
    try:
        cell = node.cells()["m1"]
        client = Client(broker.connect())
        client.send("cell.m1", "(add 1)")
        client.send("cell.m1", "(nonsense)")
        wait_for(lambda: cell.cell_counters.received == 2, 30)
        text = scrape(exporter.port)
        assert 'cellframe_cell_messages_applied_total{cell="m1",node="m1",role="tally"} 1.0' in text
        assert 'cellframe_cell_messages_ignored_total{cell="m1",node="m1",role="tally"} 1.0' in text
        assert 'cellframe_node_role{node="m1",role="tally"} 1.0' in text
        node.differentiate(None)
        text = scrape(exporter.port)
        assert 'cellframe_healing_events_total{kind="differentiated",node="m1"} 2.0' in text
        assert 'cellframe_node_role{node="m1",role="spare"} 1.0' in text
    finally:
        node.stop()
        exporter.shutdown()


def test_metrics_show_membership_as_seen_by_the_node() -> None:
    from cellframe.healing.membership import Membership

    broker = MemoryBroker()
    nodes = [Node(name, transport=broker.connect(), system_cells=(Membership,)).start()
             for name in ("p1", "p2")]
    exporter = serve_metrics(nodes[0], 0)
    try:
        wait_for(lambda: 'cellframe_member_up{member="p2",node="p1",role="spare"} 1.0'
                 in scrape(exporter.port), 30, what="p1 to see p2 alive")
        assert "cellframe_heartbeat_lag_seconds{" in scrape(exporter.port)
    finally:
        exporter.shutdown()
        for node in nodes:
            node.stop()
