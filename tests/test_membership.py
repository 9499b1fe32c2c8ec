"""Membership in-process: views converge, the dead are found by every survivor, the slow are
not flapped, and membership news is applied idempotently."""

from __future__ import annotations

import pytest

from cellframe.errors import ConfigError
from cellframe.healing.membership import HealingConfig, Membership
from cellframe.language.reader import read
from cellframe.language.symbols import Keyword, Symbol
from cellframe.testing import wait_for
from cellframe.wire.routing import down_key
from tests.healing_support import FAST, GateTransport, events, local_cluster

SMALL = ["web-01", "web-02", "web-03", "logsump-01"]
NO_HEALING = FAST.__class__(**{**FAST.__dict__, "reconcile": False})


def test_every_node_sees_every_node_alive_with_its_role(tmp_path) -> None:
    with local_cluster(tmp_path, SMALL) as cluster:
        for name in SMALL:
            view = cluster.view(name)
            assert sorted(view) == sorted(SMALL)
            assert {n: m["role"] for n, m in view.items()} == {
                "web-01": "web", "web-02": "web", "web-03": "web", "logsump-01": "logsump"}
            assert all(m["status"] == "alive" for m in view.values())


def test_a_killed_node_is_declared_down_by_every_survivor_with_the_brokers_evidence(
    tmp_path,
) -> None:
    with local_cluster(tmp_path, SMALL, healing=NO_HEALING) as cluster:
        cluster.kill("web-02")
        wait_for(lambda: cluster.all_see("web-02", "down"), 20)
        downs = wait_for(lambda: len(events(cluster.log_path, "down", member="web-02")) == 3
                         and events(cluster.log_path, "down", member="web-02"), 20)
        assert sorted(line.split("\t")[1] for line in downs) == ["logsump-01", "web-01", "web-03"]
        assert all(':evidence "broker"' in line for line in downs)


def test_a_slow_node_is_suspected_and_probed_but_not_declared_down(tmp_path) -> None:
    # A long acceptable pause keeps phi alone from declaring it down while the test looks:
    # what is shown is that suspicion and probes by themselves never do.
    patient = NO_HEALING.__class__(**{**NO_HEALING.__dict__, "acceptable_pause": 5.0})
    with local_cluster(tmp_path, SMALL, healing=patient, wrap_transport=GateTransport) as cluster:
        gate = cluster.node("web-03").transport
        gate.close_gate("heartbeat.*")  # its heartbeats are late; its queue stays
        wait_for(lambda: events(cluster.log_path, "suspected", member="web-03"), 20)
        wait_for(lambda: cluster.all_see("web-03", "suspect"), 20)
        gate.open_gate()
        wait_for(lambda: cluster.all_see("web-03", "alive"), 20)
        assert events(cluster.log_path, "down", member="web-03") == []


def test_a_hung_node_is_declared_down_by_phi_and_refutes_it_when_it_wakes(tmp_path) -> None:
    gated = {"healing": NO_HEALING, "wrap_transport": GateTransport}
    with local_cluster(tmp_path, SMALL, **gated) as cluster:
        before = cluster.view("web-01")["web-03"]["incarnation"]
        gate = cluster.node("web-03").transport
        gate.close_gate("heartbeat.*")  # silent past the acceptable pause, queue still there
        wait_for(lambda: cluster.all_see("web-03", "down"), 20)
        downs = wait_for(lambda: events(cluster.log_path, "down", member="web-03"), 20)
        assert all(':evidence "phi"' in line for line in downs)
        gate.open_gate()  # it heard the 'down' about itself: a new life supersedes it
        wait_for(lambda: cluster.all_see("web-03", "alive"), 20)
        assert cluster.view("web-01")["web-03"]["incarnation"] > before
        assert wait_for(lambda: events(cluster.log_path, "refuted", node="web-03"), 20)


def test_a_clean_stop_is_a_leave_not_a_down(tmp_path) -> None:
    with local_cluster(tmp_path, SMALL, healing=NO_HEALING) as cluster:
        cluster.stop_node("web-01")
        wait_for(lambda: cluster.all_see("web-01", "left"), 20)
        assert events(cluster.log_path, "down", member="web-01") == []


def test_a_late_down_about_an_earlier_life_does_no_harm(tmp_path) -> None:
    with local_cluster(tmp_path, SMALL, healing=NO_HEALING) as cluster:
        old = cluster.view("web-01")["web-02"]["incarnation"]
        cluster.kill("web-02")
        wait_for(lambda: cluster.all_see("web-02", "down"), 20)
        cluster.start_node("web-02")
        wait_for(lambda: cluster.all_see("web-02", "alive"), 20)
        client = cluster.client()
        try:
            for _ in range(3):  # the old news again, three times, late
                client.send(down_key("web-02"), [
                    Symbol("member-down"), Keyword("node"), "web-02",
                    Keyword("incarnation"), old, Keyword("by"), "web-01"])
            client.send("cell.web-01-membership", read("(members)"))
            wait_for(lambda: client.replies, 20)
        finally:
            client.close()
        assert cluster.all_see("web-02", "alive")
        assert cluster.view("web-01")["web-02"]["incarnation"] > old


def test_a_down_heard_twice_is_applied_once(tmp_path) -> None:
    with local_cluster(tmp_path, SMALL, healing=NO_HEALING) as cluster:
        incarnation = cluster.view("web-01")["web-02"]["incarnation"]
        cluster.kill("web-02")
        wait_for(lambda: cluster.all_see("web-02", "down"), 20)
        client = cluster.client()
        try:
            for _ in range(3):
                client.send(down_key("web-02"), [Symbol("member-down"), Keyword("node"), "web-02",
                                                 Keyword("incarnation"), incarnation,
                                                 Keyword("by"), "someone"], expect_reply=False)
        finally:
            client.close()
        wait_for(lambda: len(events(cluster.log_path, "down", member="web-02")) >= 3, 20)
        downs = events(cluster.log_path, "down", member="web-02")
        assert sorted(line.split("\t")[1] for line in downs) == ["logsump-01", "web-01", "web-03"]


def test_a_node_that_keeps_dying_is_held_out_before_it_counts_again(tmp_path) -> None:
    config = FAST.__class__(**{**FAST.__dict__, "reconcile": False, "hold_base": 0.5})
    with local_cluster(tmp_path, SMALL, healing=config) as cluster:
        cluster.kill("web-02")
        wait_for(lambda: cluster.all_see("web-02", "down"), 20)
        cluster.start_node("web-02")  # the first down costs nothing: it is back at once
        wait_for(lambda: cluster.all_see("web-02", "alive"), 20)
        cluster.kill("web-02")
        wait_for(lambda: cluster.all_see("web-02", "down"), 20)
        cluster.start_node("web-02")
        wait_for(lambda: cluster.all_see("web-02", "held"), 20)  # second down: held 0.5 s
        wait_for(lambda: cluster.all_see("web-02", "alive"), 20)
        assert wait_for(lambda: events(cluster.log_path, "held", member="web-02"), 20)


def test_the_view_is_queryable_by_s_expression(tmp_path) -> None:
    with local_cluster(tmp_path, SMALL, healing=NO_HEALING) as cluster:
        client = cluster.client()
        try:
            client.send("cell.web-01-membership", read("(members)"))
            (reply,) = wait_for(lambda: client.replies, 20)
        finally:
            client.close()
        assert reply.expr[0] == Symbol("members")
        rows = reply.expr[reply.expr.index(Keyword("view")) + 1][1]  # '(...) reads as (quote ...)
        assert sorted(row[0] for row in rows) == sorted(SMALL)
        assert all(row[2] == "alive" for row in rows)


def test_timing_comes_from_dns_settings_with_the_nodes_own_records_winning() -> None:
    config = HealingConfig.from_settings(
        {"heartbeat-ms": "100", "failure-timeout-ms": "500", "healing.down-phi": "10"},
        {"heartbeat-ms": "200"},
    )
    assert config.heartbeat_interval == pytest.approx(0.2)
    assert config.acceptable_pause == pytest.approx(0.5)
    assert config.down_phi == 10.0
    assert config.claim_window_s == pytest.approx(0.4)
    in_code = HealingConfig.from_settings({"heartbeat-ms": "100"}, heartbeat_interval=0.05)
    assert in_code.heartbeat_interval == 0.05


@pytest.mark.parametrize("settings", [
    {"heartbeat-ms": "fast"}, {"heartbeat-ms": "0"},
    {"healing.suspect-phi": "9", "healing.down-phi": "8"},
    {"heartbeat-ms": "0.001"},           # half a core on heartbeats, its own cell flooded
    {"heartbeat-ms": "1e300"},           # never a heartbeat
    {"healing.heartbeat-ms": "120000"},  # two minutes: no detection worth the name
    {"failure-timeout-ms": "1e300"},     # a hung node never found
])
def test_bad_timing_settings_are_a_config_error_naming_the_problem(settings) -> None:
    with pytest.raises(ConfigError):
        HealingConfig.from_settings(settings)


def test_a_configured_membership_class_keeps_its_name_for_routing() -> None:
    configured = Membership.configured(FAST)
    assert configured.__name__ == "Membership"
    assert configured.healing == FAST


def test_a_node_whose_down_notices_were_lost_is_reminded_and_comes_back(tmp_path) -> None:
    gated = {"healing": NO_HEALING, "wrap_transport": GateTransport}
    with local_cluster(tmp_path, SMALL, **gated) as cluster:
        peers = [cluster.node(n).transport for n in ("web-01", "web-02", "logsump-01")]
        for peer in peers:
            peer.close_gate("membership.down.*")  # the notices to web-03 will be lost
        gate = cluster.node("web-03").transport
        gate.close_gate("heartbeat.*")
        wait_for(lambda: cluster.all_see("web-03", "down"), 20)
        for peer in peers:
            with peer._lock:
                peer.held.clear()  # lost, as if web-03's queue had been gone
            peer.open_gate()
        gate.open_gate()  # web-03 heartbeats again, in the life the others declared over
        wait_for(lambda: cluster.all_see("web-03", "alive"), 30)
        assert wait_for(lambda: events(cluster.log_path, "refuted", node="web-03"), 20)
