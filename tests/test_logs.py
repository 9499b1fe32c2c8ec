"""Structured logs: one JSON object per line on request, extras included."""

from __future__ import annotations

import json
import logging

from cellframe.node.logs import JsonLineFormatter, configure_logging


def test_json_line_formatter_writes_one_object_with_the_extras() -> None:
    record = logging.makeLogRecord({"name": "cellframe.node.node", "levelname": "WARNING",
                                    "msg": "refused %s", "args": ("m1",), "node": "web-01"})
    entry = json.loads(JsonLineFormatter().format(record))
    assert entry["message"] == "refused m1"
    assert entry["level"] == "warning" and entry["logger"] == "cellframe.node.node"
    assert entry["node"] == "web-01"
    assert entry["time"].endswith("Z")


def test_configure_logging_with_json_lines_installs_the_json_formatter() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(verbose=1, json_lines=True)
        (handler,) = root.handlers
        assert isinstance(handler.formatter, JsonLineFormatter)
        assert root.level == logging.INFO
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_nodes_log_their_own_life_at_info_role_changes_peers_down_and_left_claims_shutdown(
        tmp_path, caplog) -> None:
    from cellframe.testing import wait_for
    from tests.healing_support import SCENARIO_NODES, local_cluster

    def said(text: str) -> list[str]:
        return [r.getMessage() for r in list(caplog.records)
                if r.levelno == logging.INFO and text in r.getMessage()]

    caplog.set_level(logging.INFO, logger="cellframe.node.node")
    with local_cluster(tmp_path, SCENARIO_NODES) as cluster:
        wait_for(lambda: cluster.converged(), 20, what="the cluster to converge")
        cluster.kill("web-01")
        wait_for(lambda: cluster.roles().get("spare-01") == "web", 20, what="the spare to take web")
        cluster.stop_node("web-02")
        wait_for(lambda: said("left member=web-02"), 20, what="a peer to log that web-02 left",
                 show=lambda: said("left"))
        assert said("proxy-01: down member=web-01"), "a peer's down is not in its log"
        assert said("spare-01: claimed role=web"), "the claim is not in the claimant's log"
        assert said("spare-01: differentiated role=web previous=None"), "no role change logged"
        assert said("web-02: stopping role=web"), "the shutdown is not in the node's log"
