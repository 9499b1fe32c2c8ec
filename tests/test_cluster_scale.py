"""Thirty ``cellframe node`` processes on the real 3-node RabbitMQ cluster (issue 16, item 4):
each node given the three broker URLs, rotated so that a third connect first to each broker
node; role queues are quorum queues; membership runs the watch ring (``RING_SETTINGS``).

- a SIGKILLed node is found down by every survivor within a second (median over three kills,
  one node on each broker), on the broker's evidence, with no other node found down;
- each node's membership messages per second at 30 nodes are within 1.2x of those at 10;
- a broker node killed under a third of the nodes, during 5,000 confirmed messages to a role
  queue: nothing lost or applied twice, every cut-off node back within 5 s, none found down.

The figures over many runs: ``python -m tests.hostile_timing_figures node-kill|broker-kill
--nodes 30``.
"""

from __future__ import annotations

import json

import pytest

from tests.timing_support import RING_SETTINGS, broker_kill_trial, broker_kills, node_kill_trial


@pytest.mark.amqp
@pytest.mark.slow
def test_thirty_nodes_find_a_killed_node_down_everywhere_within_a_second_at_a_flat_cost_per_node(
        tmp_path, rabbitmq_cluster) -> None:
    figures = node_kill_trial(rabbitmq_cluster, tmp_path, nodes=30, first=10, kills=3)
    print("figures:", json.dumps(figures))  # pytest -s shows them (docs/scale.md)
    assert figures["down_everywhere_median"] < 1.0, figures
    assert figures["verdicts"] == 29 + 28 + 27, figures  # every survivor, each time
    assert figures["false_downs"] == 0, figures
    assert all(e.startswith("broker") for e in figures["evidence"]), figures
    at_10, at_30 = figures["msgs_per_node_s"][10], figures["msgs_per_node_s"][30]
    assert at_10 >= 15, figures  # heartbeats of 3 watched nodes flow (30 a second unloaded)
    assert at_30 <= 1.2 * at_10, figures


@pytest.mark.amqp
@pytest.mark.slow
def test_a_broker_node_killed_under_thirty_nodes_mid_stream_loses_nothing_and_downs_no_node(
        tmp_path, rabbitmq_cluster) -> None:
    with broker_kills(2) as kill:
        figures = broker_kill_trial(rabbitmq_cluster, tmp_path, nodes=30, messages=5000,
                                    kill=kill, settings=RING_SETTINGS)
    print("figures:", json.dumps(figures))
    assert figures["confirmed"] and figures["sent"] >= 5000, figures
    assert (figures["lost"], figures["applied_twice"]) == (0, 0), figures
    assert figures["declared_down"] == 0, figures
    assert len(figures["cut_off"]) == 10, figures  # a third of the nodes were on cf2
    assert sorted(figures["reconnected_after"]) == figures["cut_off"], figures
    assert all(seconds < 5.0 for seconds in figures["reconnected_after"].values()), figures
    assert figures["tally_holders_after"] == ["tally-01"], figures
