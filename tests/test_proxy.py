"""The proxy: a weighted pool kept by messages, smooth weighted round-robin, no thrashing."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pykka
import pytest

from cellframe.cell.outbox import RecordingOutbox
from cellframe.language.reader import read
from cellframe.language.symbols import Keyword, Symbol
from cellframe.roles import ProxyCell, WeightedPool
from cellframe.testing import wait_for
from cellframe.wire.envelope import Message


class QuickProxy(ProxyCell):
    hold_base = 0.2


@pytest.fixture
def proxy():
    outbox = RecordingOutbox()
    ref = QuickProxy.start("proxy-01", outbox=outbox)
    yield ref, outbox
    ref.stop()


def tell(ref: pykka.ActorRef[Any], text: str, reply_to: str | None = None) -> None:
    ref.tell(Message(read(text), reply_to=reply_to))


def pool_of(ref: pykka.ActorRef[Any]) -> dict[str, int]:
    rows = ref.proxy().cell_snapshot().get(timeout=5)["pool"]
    return {name: weight for name, weight, _ in rows}


def served_by(outbox: RecordingOutbox) -> list[str]:
    return [s.target.removeprefix("cell.") for s in outbox.sent if s.expr[0] == Symbol("serve")]


def join(ref: pykka.ActorRef[Any], backend: str, weight: int, incarnation: int = 1) -> None:
    tell(ref, f'(join-pool :backend "{backend}" :node "{backend}" :weight {weight} '
              f':incarnation {incarnation})')


def test_smooth_weighted_round_robin_follows_the_weights_exactly_and_spreads_them() -> None:
    pool = WeightedPool()
    pool.add("a", "a", 5)
    pool.add("b", "b", 1)
    pool.add("c", "c", 1)
    picks = [pool.pick().name for _ in range(7)]  # type: ignore[union-attr]
    assert picks == ["a", "a", "b", "a", "c", "a", "a"]  # nginx's documented sequence


def test_a_weight_of_zero_is_never_picked_and_an_empty_pool_picks_nothing() -> None:
    pool = WeightedPool()
    assert pool.pick() is None
    pool.add("a", "a", 0)
    assert pool.pick() is None
    pool.add("b", "b", 2)
    assert {pool.pick().name for _ in range(4)} == {"b"}  # type: ignore[union-attr]


def test_routed_requests_follow_the_weights_of_the_pool(proxy) -> None:
    ref, outbox = proxy
    join(ref, "web-01", 10)
    join(ref, "web-02", 10)
    join(ref, "web-03", 5)
    for i in range(250):
        tell(ref, f'(route "r{i}")')
    wait_for(lambda: len(served_by(outbox)) == 250)
    assert Counter(served_by(outbox)) == {"web-01": 100, "web-02": 100, "web-03": 50}


def test_a_new_weight_changes_the_distribution_from_then_on(proxy) -> None:
    ref, outbox = proxy
    join(ref, "web-01", 10)
    join(ref, "web-02", 10)
    tell(ref, '(set-weight :backend "web-01" :weight 1)')
    for i in range(110):
        tell(ref, f'(route "r{i}")')
    wait_for(lambda: len(served_by(outbox)) == 110)
    counts = Counter(served_by(outbox))
    assert counts["web-02"] == 10 * counts["web-01"]


def test_a_request_is_sent_to_the_backend_with_the_requesters_reply_address(proxy) -> None:
    ref, outbox = proxy
    join(ref, "web-01", 10)
    tell(ref, '(route "r1")', reply_to="reply.client")
    wait_for(lambda: served_by(outbox))
    (sent,) = [s for s in outbox.sent if s.expr[0] == Symbol("serve")]
    assert sent.target == "cell.web-01" and sent.reply_to == "reply.client"
    assert sent.expr == read('(serve :request "r1" :proxy "proxy-01" :node "proxy-01")')


def test_joining_twice_keeps_one_entry_and_leaving_removes_it(proxy) -> None:
    ref, _ = proxy
    join(ref, "web-01", 10)
    join(ref, "web-01", 10)
    assert pool_of(ref) == {"web-01": 10}
    tell(ref, '(leave-pool :backend "web-01")')
    assert pool_of(ref) == {}


def test_a_backend_is_its_nodes_alone_a_join_drain_or_leave_naming_another_node_is_ignored(
        proxy) -> None:
    ref, _ = proxy
    join(ref, "web-01", 10)
    tell(ref, '(join-pool :backend "web-01" :node "web-02" :weight 50 :incarnation 1 '
              ':address "10.0.0.66" :port 80)')
    tell(ref, '(drain-pool :backend "web-01" :node "web-02")')
    tell(ref, '(leave-pool :backend "web-01" :node "web-02")')
    assert pool_of(ref) == {"web-01": 10}
    assert ref.proxy().stats.get(timeout=5)["refused_joins"] == 1
    assert ref.proxy().stats.get(timeout=5)["not_held"] == 3
    tell(ref, '(drain-pool :backend "web-01" :node "web-01")')
    assert pool_of(ref) == {"web-01": 0}
    tell(ref, '(leave-pool :backend "web-01" :node "web-01")')
    assert pool_of(ref) == {}


def test_a_web_node_changes_only_its_own_backends_weight_and_an_operator_any(proxy) -> None:
    ref, _ = proxy
    join(ref, "web-01", 10)
    join(ref, "web-02", 10)
    tell(ref, '(set-weight :backend "web-02" :node "web-01" :weight 1)')  # not web-01's
    tell(ref, '(set-weight :backend "web-01" :node "web-01" :weight 4)')  # its own
    assert pool_of(ref) == {"web-01": 4, "web-02": 10}
    tell(ref, '(set-weight :backend "web-02" :weight 7)')  # an operator's names no node
    assert pool_of(ref) == {"web-01": 4, "web-02": 7}
    assert ref.proxy().stats.get(timeout=5)["not_held"] == 1  # counted, as a refusal


def test_a_served_request_is_counted_only_from_the_node_holding_its_backend(proxy) -> None:
    ref, _ = proxy
    join(ref, "web-01", 10)
    tell(ref, '(served :request "r1" :backend "web-01" :node "web-02")')
    tell(ref, '(served :request "r1" :backend "web-01" :node "web-01")')
    assert ref.proxy().stats.get(timeout=5)["served"] == 1


def test_a_node_declared_down_loses_its_backends_at_once_and_repeats_change_nothing(proxy) -> None:
    ref, _ = proxy
    join(ref, "web-01", 10)
    join(ref, "web-02", 10)
    for _ in range(3):
        tell(ref, '(member-down :node "web-01" :incarnation 1 :by "web-02")')
    assert pool_of(ref) == {"web-02": 10}
    removed = [c for c in ref.proxy().pool_changes.get(timeout=5) if c[1] == "removed"]
    assert [c[2] for c in removed] == ["web-01"]


def test_a_late_join_from_a_life_declared_down_is_refused(proxy) -> None:
    ref, _ = proxy
    join(ref, "web-01", 10, incarnation=5)
    tell(ref, '(member-down :node "web-01" :incarnation 5)')
    join(ref, "web-01", 10, incarnation=5)  # delayed or duplicated announcement of the dead
    assert pool_of(ref) == {}
    join(ref, "web-01", 10, incarnation=6)  # the node restarted: a new life is welcome
    assert pool_of(ref) == {"web-01": 10}


def test_a_backend_that_flaps_is_held_out_before_it_may_rejoin(proxy) -> None:
    ref, _ = proxy
    for life in (1, 2):
        join(ref, "web-01", 10, incarnation=life)
        tell(ref, f'(member-down :node "web-01" :incarnation {life})')
    join(ref, "web-01", 10, incarnation=3)  # second down in a minute: held out 0.2 s
    assert pool_of(ref) == {}
    assert ref.proxy().cell_snapshot().get(timeout=5)["stats"]["refused_joins"] >= 1

    def rejoined() -> bool:
        join(ref, "web-01", 10, incarnation=3)  # web cells re-announce periodically
        return pool_of(ref) == {"web-01": 10}

    wait_for(rejoined, 20, interval=0.05)


def test_the_pool_is_queryable_by_s_expression(proxy) -> None:
    ref, outbox = proxy
    join(ref, "web-02", 7)
    join(ref, "web-01", 3)
    tell(ref, "(pool)", reply_to="reply.op")
    (reply,) = wait_for(lambda: [s for s in outbox.sent if s.target == "reply.op"])
    assert reply.expr[0] == Symbol("pool")
    rows = reply.expr[reply.expr.index(Keyword("backends")) + 1]
    assert rows == [Symbol("quote"), [["web-01", 3, "web-01"], ["web-02", 7, "web-02"]]]


def test_routes_are_counted_per_backend_since_a_time(proxy) -> None:
    ref, outbox = proxy
    join(ref, "web-01", 1)
    for i in range(3):
        tell(ref, f'(route "r{i}")')
    tell(ref, "(routes :since 0)", reply_to="reply.op")
    (reply,) = wait_for(lambda: [s for s in outbox.sent if s.target == "reply.op"])
    assert reply.expr[reply.expr.index(Keyword("counts")) + 1] == [Symbol("quote"), [["web-01", 3]]]


def test_a_request_with_an_empty_pool_is_answered_unrouted(proxy) -> None:
    ref, outbox = proxy
    tell(ref, '(route "r1")', reply_to="reply.client")
    (reply,) = wait_for(lambda: [s for s in outbox.sent if s.target == "reply.client"])
    assert reply.expr[0] == Symbol("unrouted")


@pytest.mark.parametrize("text", [
    "(join-pool)", '(join-pool :backend 3)', '(join-pool :backend "w" :weight "heavy")',
    '(set-weight :backend "nobody" :weight 5)', '(member-down :node 7)', "(teleport)",
    '(route)', '(served :request "r" :backend "w")',
])
def test_odd_messages_change_nothing_and_do_not_stop_the_proxy(proxy, text) -> None:
    ref, outbox = proxy
    join(ref, "web-01", 10)
    tell(ref, text)
    assert pool_of(ref) == {"web-01": 10}
    tell(ref, '(route "after")')
    wait_for(lambda: "web-01" in served_by(outbox))


def test_a_request_whose_backend_vanished_before_detection_is_rerouted_not_lost() -> None:
    from cellframe import Client, MemoryBroker, Node, RoleRegistry
    from cellframe.roles import WebCell

    broker = MemoryBroker()
    registry = RoleRegistry({"proxy": [QuickProxy], "web": [WebCell]})
    nodes = [Node(name, transport=broker.connect(), role=role, registry=registry).start()
             for name, role in (("px", "proxy"), ("wa", "web"), ("wb", "web"))]
    client = Client(broker.connect())
    try:
        proxy = nodes[0].cells()["px"]
        wait_for(lambda: len(proxy.pool.backends) == 2, 30)
        nodes[2].transport.abort()  # wb's queue is gone; the proxy has not heard it is down
        for n in range(10):
            client.send("cell.px", f'(route "r{n}")')
        served = wait_for(lambda: [r for r in client.replies if r.expr[0] == Symbol("served")]
                          if len([r for r in client.replies if r.expr[0] == Symbol("served")]) == 10
                          else None, 30)
        backends = {r.expr[r.expr.index(Keyword("backend")) + 1] for r in served}
        assert backends == {"wa"}
        assert proxy.stats["rerouted"] >= 1
    finally:
        client.close()
        for node in nodes:
            node.stop()


def test_every_verb_web_and_proxy_nodes_send_each_other_is_declared_node_only(
        local_cluster, tmp_path) -> None:
    """The web tier's own traffic (joins, drains, requests routed and their call-backs) is
    refused from any operator key, so an operator allowed ``all *`` cannot put a server of its
    own into the pool; only what an operator or a client sends stays open."""
    from cellframe import MemoryBroker
    from tests.node_support import VerbTap
    from tests.web_support import web_zone

    broker = MemoryBroker()
    tap = VerbTap(broker)  # before the proxy starts, to see its (pool-hello)
    cluster = local_cluster(web_zone(tmp_path / "web.zone", None, web=2), broker=broker)
    wait_for(lambda: sorted(cluster.pool()) == ["web-01", "web-02"], 20, what="both web cells in the pool",
             show=cluster.pool)
    client = cluster.client()
    for n in range(4):
        client.send("each.proxy", f'(route "r{n}")')
    cluster.stop_node("web-01")  # a clean stop: it drains, then leaves
    exchanged = {"pool-hello", "join-pool", "serve", "served", "drain-pool", "leave-pool"}
    wait_for(lambda: exchanged <= tap.verbs(), 20, what="the web tier's exchanges",
             show=lambda: sorted(map(str, tap.verbs())))
    # An operator's weight, and a client's requests and questions, stay open (docs/security.md).
    assert tap.undeclared() <= {"set-weight", "route", "pool", "routes", "load"}
