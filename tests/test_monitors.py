"""Monitors across nodes: a cell hears, as an ordinary message, that a cell of another node
crashed, or that a whole node went down; once for each life of that node, and a cell that
does not care ignores the news."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import pytest

from cellframe import Cell, RoleRegistry, transition
from cellframe.healing.membership import HealingConfig, Membership
from cellframe.language.symbols import Symbol
from cellframe.node.monitors import Monitors
from cellframe.node.supervisor import SupervisionPolicy
from cellframe.testing import wait_for

FAST = SupervisionPolicy(max_restarts=10, period=5.0, backoff=0.01, max_backoff=0.05)
#: Restarts without end, at once: a cell crashed in a loop for as long as a test needs.
TIRELESS = SupervisionPolicy(max_restarts=100_000, period=1.0, backoff=0.001, max_backoff=0.001)
#: 50 ms heartbeats, no healing: the nodes only judge each other. A killed node is found by
#: its probe coming back (its queue gone), within 0.2 s; the 2 s acceptable pause keeps a busy
#: CI machine's stall from declaring a live one down by silence alone.
HEARTBEATS = Membership.configured(HealingConfig(heartbeat_interval=0.05, acceptable_pause=2.0,
                                                 reconcile=False))


class Crashing(Cell):
    """Crashes its actor (SystemExit) on (crash)."""

    role = "crashing"

    @transition("crash")
    def crash(self) -> None:
        raise SystemExit("asked to")


class Watching(Cell):
    """Watches what it is told to and keeps what it heard, in order, in one list for all."""

    role = "watching"
    heard: ClassVar[list[tuple[str, dict[str, Any]]]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    @transition("watch-cell")
    def watch_cell(self, cell: str, node: str) -> None:
        self.cell_monitor(cell, node=node)

    @transition("watch-node")
    def watch_node(self, node: str) -> None:
        self.cell_monitor_node(node)

    @transition("unwatch-cell")
    def unwatch_cell(self, cell: str, node: str) -> None:
        self.cell_demonitor(cell, node=node)

    @transition("crash")
    def crash(self) -> None:
        raise SystemExit("asked to")

    @transition("cell-down")
    def cell_down(self, **news: Any) -> None:
        with self.lock:
            self.heard.append(("cell-down", news))

    @transition("node-down")
    def node_down(self, **news: Any) -> None:
        with self.lock:
            self.heard.append(("node-down", news))


class Indifferent(Cell):
    """Watches a node but has no node-down transition."""

    role = "watching"

    @transition("watch-node")
    def watch_node(self, node: str) -> None:
        self.cell_monitor_node(node)


REGISTRY = RoleRegistry({"crashing": [Crashing], "watching": [Watching, Indifferent],
                         "idle": [Indifferent]})


@pytest.fixture(autouse=True)
def _fresh_records() -> None:
    Watching.heard.clear()


def _counters(node: Any, cell: str) -> dict[str, Any]:
    return next(c for c in node.status()["cells"] if c["name"] == cell)["counters"]


def _sees(node: Any, other: str, status: str) -> bool:
    view = next(c for c in node.status()["cells"] if "members" in c)["members"]
    return any(m["name"] == other and m["status"] == status for m in view)


def _heard(kind: str) -> list[dict[str, Any]]:
    with Watching.lock:
        return [news for verb, news in Watching.heard if verb == kind]


def _applied(node: Any, cell: str, count: int) -> None:
    wait_for(lambda: _counters(node, cell)["applied"] >= count, 30,
             what=f"{cell} applied {count}", show=lambda: _counters(node, cell))


def test_a_cell_watching_a_cell_of_another_node_hears_when_it_crashes(wire) -> None:
    watching = wire.node("mw1", "watching", registry=REGISTRY)
    crashing = wire.node("mc1", "crashing", registry=REGISTRY, supervision=FAST)
    client = wire.client()
    client.send("cell.mw1-watching", '(watch-cell "mc1" "mc1")', expect_reply=False)
    wait_for(lambda: "mw1" in crashing.monitors.askers("mc1"), 30,
             what="mc1 asked to tell mw1", show=lambda: watching.status())
    client.send("cell.mc1", "(crash)", expect_reply=False)
    down = wait_for(lambda: _heard("cell-down"), 30, what="a (cell-down ...) from mc1",
                    show=lambda: (Watching.heard, crashing.status()))
    assert down == [{"cell": "mc1", "node": "mc1", "condition": "restarting",
                     "reason": "SystemExit: asked to"}]


def _condition(node: Any, cell: str) -> str:
    return str(next(c for c in node.status()["cells"] if c["name"] == cell)["condition"])


def test_a_watcher_restarting_when_the_watched_cell_crashes_hears_it_once_restarted(
        wire) -> None:
    # The watcher's restart waits 2 s, against the few ms the notice takes to come.
    watching = wire.node("mw7", "watching", registry=REGISTRY, supervision=SupervisionPolicy(
        max_restarts=10, period=5.0, backoff=2.0, max_backoff=2.0))
    crashing = wire.node("mc7", "crashing", registry=REGISTRY, supervision=FAST)
    client = wire.client()
    client.send("cell.mw7-watching", '(watch-cell "mc7" "mc7")', expect_reply=False)
    wait_for(lambda: "mw7" in crashing.monitors.askers("mc7"), 30, what="mc7 asked to tell mw7",
             show=lambda: watching.status())
    client.send("cell.mw7-watching", "(crash)", expect_reply=False)
    wait_for(lambda: _condition(watching, "mw7-watching") == "restarting", 30,
             what="the watcher restarting", show=lambda: watching.status())
    client.send("cell.mc7", "(crash)", expect_reply=False)
    down = wait_for(lambda: _heard("cell-down"), 30, what="the notice, once restarted",
                    show=lambda: (Watching.heard, watching.status()))
    client.send("cell.mw7-watching", '(watch-node "mc7")', expect_reply=False)
    _applied(watching, "mw7-watching", 2)  # a later message applied: no second copy before it
    assert [(news["cell"], news["condition"]) for news in _heard("cell-down")] == [
        ("mc7", "restarting")] == [(news["cell"], news["condition"]) for news in down]
    watcher = next(c for c in watching.status()["cells"] if c["name"] == "mw7-watching")
    assert watcher["restarts"] == 1


def test_a_crash_notice_returned_unroutable_is_sent_again_and_heard_once_routable(
        wire) -> None:
    watching = wire.node("mw8", "watching", registry=REGISTRY)
    crashing = wire.node("mc8", "crashing", registry=REGISTRY, supervision=FAST)
    client = wire.client()
    client.send("cell.mw8-watching", '(watch-cell "mc8" "mc8")', expect_reply=False)
    wait_for(lambda: "mw8" in crashing.monitors.askers("mc8"), 30, what="mc8 asked to tell mw8",
             show=lambda: watching.status())
    watching.transport.unbind(watching.queue, "node.mw8")  # as mid failover: no queue takes it
    client.send("cell.mc8", "(crash)", expect_reply=False)
    wait_for(lambda: crashing.monitors.notices_owed() == 1, 30,
             what="the notice returned, to be sent again", show=lambda: crashing.status())
    watching.transport.bind(watching.queue, "node.mw8")
    wait_for(lambda: _heard("cell-down"), 30, what="the notice sent again",
             show=lambda: (Watching.heard, crashing.monitors.notices_owed()))
    client.send("cell.mw8-watching", '(watch-node "mc8")', expect_reply=False)
    _applied(watching, "mw8-watching", 2)  # a later message applied: no second copy before it
    assert _heard("cell-down") == [{"cell": "mc8", "node": "mc8", "condition": "restarting",
                                    "reason": "SystemExit: asked to"}]
    assert crashing.monitors.notices_owed() == 0


def _members(wire, watcher: str, other: str, role: str) -> tuple[Any, Any, Any]:
    """Node ``watcher`` (role watching) and node ``other`` (``role``), both with membership,
    once the watcher sees the other alive; and a client."""
    watching = wire.node(watcher, "watching", registry=REGISTRY, system_cells=(HEARTBEATS,))
    watched = wire.node(other, role, registry=REGISTRY, system_cells=(HEARTBEATS,))
    wait_for(lambda: _sees(watching, other, "alive"), 30, what=f"{watcher} seeing {other} alive",
             show=lambda: watching.status())
    return watching, watched, wire.client()


def test_a_cell_watching_a_node_and_its_cell_hears_once_when_that_node_dies(wire) -> None:
    watching, doomed, client = _members(wire, "mw2", "md2", "crashing")
    client.send("cell.mw2-watching", '(watch-node "md2")', expect_reply=False)
    client.send("cell.mw2-watching", '(watch-cell "md2" "md2")', expect_reply=False)
    wait_for(lambda: "mw2" in doomed.monitors.askers("md2"), 30, what="md2 asked to tell mw2",
             show=lambda: doomed.status())
    doomed.transport.close()  # as a crash: its queue goes with its connection, no goodbye
    doomed.stop()
    wait_for(lambda: _heard("node-down") and _heard("cell-down"), 20,
             what="node-down and cell-down for md2", show=lambda: (Watching.heard, watching.status()))
    client.send("cell.mw2-watching", '(watch-cell "mw2-indifferent" "mw2")', expect_reply=False)
    _applied(watching, "mw2-watching", 5)  # a later message applied: no second notice before it
    assert _heard("node-down") == [{"node": "md2", "incarnation": doomed.incarnation,
                                    "reason": "down"}]
    assert _heard("cell-down") == [{"cell": "md2", "node": "md2", "condition": "down",
                                    "reason": "node-down"}]


def test_a_cell_with_no_node_down_transition_ignores_a_node_leaving(wire) -> None:
    watching, leaving, client = _members(wire, "mw3", "ml3", "idle")
    for cell in ("mw3-watching", "mw3-indifferent"):
        client.send(f"cell.{cell}", '(watch-node "ml3")', expect_reply=False)
        _applied(watching, cell, 1)
    leaving.stop()  # a clean stop: membership says goodbye
    wait_for(lambda: _heard("node-down")
             and _counters(watching, "mw3-indifferent")["ignored"] == 1, 30,
             what="the news heard, and ignored by the indifferent cell",
             show=lambda: (Watching.heard, watching.status()))
    assert _heard("node-down") == [{"node": "ml3", "incarnation": leaving.incarnation,
                                    "reason": "left"}]
    indifferent = next(c for c in watching.status()["cells"] if c["name"] == "mw3-indifferent")
    assert indifferent["condition"] == "running" and indifferent["restarts"] == 0
    assert indifferent["counters"]["errors"] == 0


def test_a_cell_watching_a_cell_of_a_node_not_started_yet_hears_once_it_runs(wire) -> None:
    watching = wire.node("mw4", "watching", registry=REGISTRY)
    client = wire.client()
    client.send("cell.mw4-watching", '(watch-cell "mc4" "mc4")', expect_reply=False)
    _applied(watching, "mw4-watching", 1)  # asked while mc4 has no queue: unroutable
    crashing = wire.node("mc4", "crashing", registry=REGISTRY, supervision=FAST)
    wait_for(lambda: "mw4" in crashing.monitors.askers("mc4"), 30,
             what="mw4 asking mc4 again once it runs", show=lambda: crashing.status())
    client.send("cell.mc4", "(crash)", expect_reply=False)
    wait_for(lambda: _heard("cell-down"), 30, what="a (cell-down ...) from mc4",
             show=lambda: (Watching.heard, crashing.status()))
    assert [news["condition"] for news in _heard("cell-down")] == ["restarting"]


def test_a_watch_of_a_cell_outlives_its_nodes_restart_and_hears_the_new_lifes_crash(wire) -> None:
    watching, first, client = _members(wire, "mw5", "mc5", "crashing")
    client.send("cell.mw5-watching", '(watch-cell "mc5" "mc5")', expect_reply=False)
    wait_for(lambda: "mw5" in first.monitors.askers("mc5"), 30, what="mc5 asked to tell mw5",
             show=lambda: first.status())
    first.stop()
    wait_for(lambda: _heard("cell-down"), 30, what="the cell down with its node",
             show=lambda: (Watching.heard, watching.status()))
    second = wire.node("mc5", "crashing", registry=REGISTRY, system_cells=(HEARTBEATS,),
                       supervision=FAST)
    wait_for(lambda: "mw5" in second.monitors.askers("mc5"), 30,
             what="the new life of mc5 asked again", show=lambda: watching.status())
    client.send("cell.mc5", "(crash)", expect_reply=False)
    wait_for(lambda: len(_heard("cell-down")) == 2, 30, what="the new life's crash heard",
             show=lambda: (Watching.heard, second.status()))
    assert [(news["condition"], news["reason"]) for news in _heard("cell-down")] == [
        ("down", "node-down"), ("restarting", "SystemExit: asked to")]


def test_a_cell_that_stops_watching_a_cell_of_another_node_has_that_node_stop_telling(
        wire) -> None:
    watching = wire.node("mw6", "watching", registry=REGISTRY)
    crashing = wire.node("mc6", "crashing", registry=REGISTRY)
    client = wire.client()
    client.send("cell.mw6-watching", '(watch-cell "mc6" "mc6")', expect_reply=False)
    wait_for(lambda: "mw6" in crashing.monitors.askers("mc6"), 30, what="mc6 asked to tell mw6",
             show=lambda: watching.status())
    client.send("cell.mw6-watching", '(unwatch-cell "mc6" "mc6")', expect_reply=False)
    wait_for(lambda: not crashing.monitors.askers("mc6"), 30, what="mc6 told to stop",
             show=lambda: crashing.status())


class _Recorder:
    """Monitors' two outlets, recorded: what it tells cells here, and what it sends."""

    def __init__(self) -> None:
        self.told: list[tuple[str, list[Any]]] = []
        self.sent: list[tuple[str, list[Any]]] = []

    def monitors(self) -> Monitors:
        ids = iter(range(1, 1000))
        return Monitors("here", lambda cell, expr, notice_id: self.told.append((cell, expr)),
                        lambda target, expr, on_return: self.sent.append((target, expr)),
                        lambda: f"here-1-{next(ids)}")

    def heads(self) -> list[tuple[str, str, Any]]:
        return [(cell, expr[0].name, expr[2]) for cell, expr in self.told]


def _news(monitors: Monitors, *events: tuple[str, int]) -> None:
    for kind, incarnation in events:
        monitors.heard_event(kind, {"node": "here", "member": "there", "incarnation": incarnation})


def test_news_of_a_life_already_reported_down_tells_nobody_again() -> None:
    record = _Recorder()
    monitors = record.monitors()
    monitors.watch_node("watcher", "there")
    _news(monitors, ("down", 7), ("down", 7), ("left", 7), ("down", 6), ("up", 7), ("up", 8),
          ("left", 8), ("down", 8))
    assert [(cell, expr[0], expr[4], expr[6]) for cell, expr in record.told] == [
        ("watcher", Symbol("node-down"), 7, "down"), ("watcher", Symbol("node-down"), 8, "left")]


def test_a_watch_asked_after_its_node_died_hears_so_at_once() -> None:
    record = _Recorder()
    monitors = record.monitors()
    _news(monitors, ("up", 3), ("down", 3))
    monitors.watch_node("late", "there")
    monitors.watch_cell("late", "there-cell", node="there")
    assert record.heads() == [("late", "node-down", "there"), ("late", "cell-down", "there-cell")]
    assert record.sent == []  # nothing to ask a dead node: asked when it lives again
    _news(monitors, ("up", 4))
    assert [target for target, _ in record.sent] == ["node.there"]


def test_a_watch_of_a_cell_is_told_its_node_went_down_once_per_life_and_asks_each_new_life() -> None:
    record = _Recorder()
    monitors = record.monitors()
    monitors.watch_cell("watcher", "there-cell", node="there")
    _news(monitors, ("up", 1), ("down", 1), ("left", 1), ("up", 2), ("down", 2))
    assert record.heads() == [("watcher", "cell-down", "there-cell")] * 2
    assert [expr[0].name for _, expr in record.sent] == ["monitor"] * 3  # asked, then twice again


def test_a_cell_that_stops_watching_hears_no_more_and_the_last_one_tells_the_other_node() -> None:
    record = _Recorder()
    monitors = record.monitors()
    for watcher in ("a", "b"):
        monitors.watch_cell(watcher, "there-cell", node="there")
        monitors.watch_node(watcher, "there")
    monitors.unwatch_cell("a", "there-cell", node="there")
    monitors.unwatch_node("a", "there")
    assert [expr[0].name for _, expr in record.sent] == ["monitor", "monitor"]  # b still watches
    monitors.heard_cell_down("there", "there-cell", "restarting", "SystemExit: x")
    _news(monitors, ("down", 1))
    assert record.heads() == [("b", "cell-down", "there-cell"), ("b", "node-down", "there"),
                              ("b", "cell-down", "there-cell")]
    monitors.unwatch_cell("b", "there-cell", node="there")
    assert [(target, expr[0].name) for target, expr in record.sent[2:]] == [
        ("node.there", "demonitor")]


def test_two_copies_of_one_crash_notice_are_applied_once_by_the_watcher(wire) -> None:
    watching = wire.node("mw9", "watching", registry=REGISTRY)
    client = wire.client()
    client.send("cell.mw9-watching", '(watch-cell "mc9" "mc9")', expect_reply=False)
    _applied(watching, "mw9-watching", 1)
    for _ in range(2):  # as the daemon hears a notice sent again, or redelivered
        watching.monitors.heard_cell_down("mc9", "mc9", "restarting", "SystemExit: x", "mc9-1-1")
    wait_for(lambda: _counters(watching, "mw9-watching")["duplicates"] == 1, 30,
             what="the copy dropped as a duplicate", show=lambda: watching.status())
    assert [news["cell"] for news in _heard("cell-down")] == ["mc9"]


def test_a_returned_crash_notice_is_dropped_once_its_node_is_down() -> None:
    returned: list[Any] = []
    monitors = Monitors("here", lambda cell, expr, notice_id: None,
                        lambda target, expr, on_return: returned.append(on_return),
                        lambda: "here-1-1")
    monitors.asked_by("there", "here-cell")
    monitors.cell_went_down("here-cell", "restarting", "SystemExit: x")
    _news(monitors, ("up", 1), ("down", 1))
    returned[-1](None, "NO_ROUTE")
    assert monitors.notices_owed() == 0  # its watchers went with it, or hear node-down
    monitors.heard_event("up", {"node": "here", "member": "there", "incarnation": 2})
    monitors.cell_went_down("here-cell", "restarting", "SystemExit: x")
    returned[-1](None, "NO_ROUTE")
    assert monitors.notices_owed() == 1  # a live node: sent again later
    monitors.close()
    assert monitors.notices_owed() == 0


@pytest.mark.amqp
def test_crash_notices_sent_as_the_connection_drops_are_sent_again_and_heard_once(
        amqp_names, record_property) -> None:
    """A notice the broker never confirmed (the connection dropped first) is not returned, so
    the monitors do not resend it: the transport does, since it keeps every unconfirmed
    publish and sends it again after reconnecting; the notice's id keeps a copy from being
    heard twice. The connection is closed broker-side while the cell crashes again and again,
    and every crash's notice is heard, once."""
    from cellframe import Node
    from cellframe.language.reader import read
    from cellframe.wire.envelope import Message
    from tests.amqp_support import close_connections
    from tests.node_support import Wire

    wire = Wire.on_rabbitmq(amqp_names)
    name = f"cf-crash-{amqp_names.token}"
    try:
        watching = wire.node("mw10", "watching", registry=REGISTRY)
        transport = amqp_names.connect(name=name)
        crashing = Node("mc10", transport=transport, registry=REGISTRY, role="crashing",
                        queue_prefix=wire.prefix, supervision=TIRELESS, watch_config=False).start()
        wire.nodes.append(crashing)
        client = wire.client()
        client.send("cell.mw10-watching", '(watch-cell "mc10" "mc10")', expect_reply=False)
        wait_for(lambda: "mw10" in crashing.monitors.askers("mc10"), 30,
                 what="mc10 asked to tell mw10", show=lambda: watching.status())

        crashes: list[bool] = []  # per crash: whether the link was down as it crashed
        done = threading.Event()

        def crash() -> None:  # told in-process: the node's queue is cut with its link
            # One after another from before the close until 20 after the reconnect: some
            # notices are made while the link is down or going (it is down some milliseconds).
            after = 0
            while after < 20 and len(crashes) < 3000:
                cell = crashing.cells()["mc10"]
                crashes.append(not transport.connected)
                cell.actor_ref.tell(Message(read("(crash)")))
                wait_for(lambda c=cell: crashing.cells().get("mc10") is not c, 30,
                         what="mc10 restarted", show=crashing.status)
                after += done.is_set()

        crasher = threading.Thread(target=crash)
        crasher.start()
        try:
            close_connections(name)
            wait_for(lambda: transport.stats()["reconnects"] == 1 and transport.connected, 30,
                     what="mc10 reconnected", show=transport.stats)
        finally:
            done.set()
            crasher.join(60)
        wait_for(lambda: len(_heard("cell-down")) >= len(crashes), 30,
                 what=f"{len(crashes)} crash notices heard",
                 show=lambda: (len(_heard("cell-down")), crashes, transport.stats()))
        client.send("cell.mw10-watching", '(watch-node "mc10")', expect_reply=False)
        _applied(watching, "mw10-watching", 2)  # a later message applied: copies came before
        assert len(_heard("cell-down")) == len(crashes)
        assert any(crashes), f"no crash while the link was down: {crashes}"
        assert transport.stats()["nacked"] == 0 and crashing.monitors.notices_owed() == 0
        record_property("crashes", len(crashes))
        record_property("crashes_with_the_link_down", sum(crashes))
        record_property("resent_by_the_transport", transport.stats()["resent"])
    finally:
        wire.close()
