"""A node supervises its cells: a crashed cell is restarted with backoff, messages for it wait,
its restarts show in status and events, and past its restart intensity it escalates."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import pytest

from cellframe import Cell, RoleRegistry, Symbol, transition
from cellframe.errors import ConfigError
from cellframe.node.supervisor import RestartIntensity, SupervisionPolicy
from cellframe.testing import wait_for
from tests.node_support import replies_matching

FAST = SupervisionPolicy(max_restarts=10, period=5.0, backoff=0.01, max_backoff=0.05)


class Fragile(Cell):
    """Records every number it adds in a list shared by all its instances; crashes the
    whole actor (SystemExit) on a multiple of five."""

    role = "fragile"
    applied: ClassVar[list[int]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    @transition("add")
    def add(self, n: int) -> None:
        if n % 5 == 0:
            raise SystemExit(f"{n} is a multiple of five")
        with self.lock:
            self.applied.append(n)


class Partner(Cell):
    """A second cell of the role, to see one-for-all restart it with its sibling."""

    role = "fragile"

    @transition("hello")
    def hello(self) -> None:
        self.cell_reply([Symbol("hi")])


class Watcher(Cell):
    """Watches a cell of its node and keeps what it heard."""

    role = "watching"
    heard: ClassVar[list[dict[str, Any]]] = []

    @transition("watch")
    def watch(self, name: str) -> None:
        self.cell_monitor(name)

    @transition("cell-down")
    def cell_down(self, **news: Any) -> None:
        self.heard.append(news)


class SlowToStart(Cell):
    """Fails in ``on_start`` while ``failures_left`` is above zero (shared by all instances)."""

    role = "starting"
    failures_left: ClassVar[int] = 0
    starts: ClassVar[int] = 0

    def on_start(self) -> None:
        super().on_start()
        type(self).starts += 1
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            raise ConfigError("the disk it needs is not mounted yet")

    @transition("hello")
    def hello(self) -> None:
        self.cell_reply([Symbol("hi")])


class StopOrder(Cell):
    """Notes its own name in ``stopped`` when it stops."""

    role = "ordered"
    stopped: ClassVar[list[str]] = []

    def on_stop(self) -> None:
        self.stopped.append(type(self).__name__)


class FirstSystem(StopOrder):
    pass


class SecondSystem(StopOrder):
    pass


def _registry() -> RoleRegistry:
    return RoleRegistry({"fragile": [Fragile], "pair": [Fragile, Partner],
                         "starting": [SlowToStart], "ordered": [StopOrder]})


def _events(node: Any) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    node.listeners.append(lambda kind, payload: seen.append((kind, payload)))
    return seen


def _cell_status(node: Any, name: str) -> dict[str, Any]:
    return next(c for c in node.status()["cells"] if c["name"] == name)


@pytest.fixture(autouse=True)
def _fresh_records() -> None:
    Fragile.applied.clear()
    Watcher.heard.clear()
    SlowToStart.failures_left, SlowToStart.starts = 0, 0


def test_cell_crashing_on_every_fifth_message_is_restarted_and_keeps_serving(wire) -> None:
    node = wire.node("sv1", "fragile", registry=_registry(), supervision=FAST)
    events = _events(node)
    client = wire.client()
    for n in range(1, 21):
        client.send("role.fragile", f"(add {n})")
    wanted = [n for n in range(1, 21) if n % 5]
    wait_for(lambda: sorted(Fragile.applied) == wanted, 15,
             what="every message that did not crash applied once", show=lambda: Fragile.applied)
    wait_for(lambda: _cell_status(node, "sv1")["restarts"] == 4, 30,
             what="four restarts in status", show=lambda: _cell_status(node, "sv1"))
    status = _cell_status(node, "sv1")
    assert status["condition"] == "running"
    assert node.status()["counters"]["crashes"] == 4
    crashed = [payload for kind, payload in events if kind == "cell-crashed"]
    assert sorted(p["verb"] for p in crashed) == ["add"] * 4
    assert all("SystemExit" in p["exception"] and p["message_id"] for p in crashed)
    assert sum(1 for kind, _ in events if kind == "cell-restarted") == 4
    client.send("node.sv1", "(ping)")  # SystemExit in a cell stopped no other actor
    replies_matching(client, "pong", 1)


def test_cell_past_its_restart_intensity_fails_and_its_role_goes_to_another_node(wire) -> None:
    strict = SupervisionPolicy(max_restarts=1, period=30.0, backoff=0.01, quarantine=30.0)
    first = wire.node("sv2", "fragile", registry=_registry(), supervision=strict)
    events = _events(first)
    client = wire.client()
    client.send("cell.sv2", "(add 5)")
    wait_for(lambda: _cell_status(first, "sv2")["restarts"] == 1, 30, what="one restart",
             show=lambda: first.status())
    client.send("cell.sv2", "(add 10)")
    wait_for(lambda: first.role is None, 30, what="the node stepping down",
             show=lambda: events)
    assert first.quarantined
    assert [p["cell"] for kind, p in events if kind == "cell-failed"] == ["sv2"]
    second = wire.node("sv3", "fragile", registry=_registry(), supervision=strict)
    client.send("role.fragile", "(add 7)")
    wait_for(lambda: Fragile.applied == [7], 30, what="the other node applying role messages",
             show=lambda: (Fragile.applied, second.status()))
    with pytest.raises(Exception, match="quarantine"):
        first.differentiate("fragile")


def test_a_cell_that_fails_to_start_is_restarted_like_one_that_crashed(wire) -> None:
    SlowToStart.failures_left = 2
    node = wire.node("sv7", "starting", registry=_registry(), supervision=FAST)
    events = _events(node)
    wait_for(lambda: _cell_status(node, "sv7")["condition"] == "running"
             and SlowToStart.starts == 3, 30, what="two failed starts, then a running cell",
             show=lambda: (SlowToStart.starts, _cell_status(node, "sv7")))
    client = wire.client()
    client.send("cell.sv7", "(hello)")
    replies_matching(client, "hi", 1)
    assert node.status()["counters"]["crashes"] == 2
    assert _cell_status(node, "sv7")["restarts"] == 2
    crashed = [payload for kind, payload in events if kind == "cell-crashed"]
    assert all("not mounted" in p["exception"] and p["verb"] is None for p in crashed), crashed


def test_a_cell_that_never_starts_fails_and_its_node_steps_down(wire) -> None:
    SlowToStart.failures_left = 1_000
    strict = SupervisionPolicy(max_restarts=2, period=30.0, backoff=0.01, quarantine=30.0)
    node = wire.node("sv8", "starting", registry=_registry(), supervision=strict)
    wait_for(lambda: node.role is None, 30, what="the node stepping down from a cell that "
             "never starts", show=lambda: (SlowToStart.starts, node.status()["cells"]))
    assert SlowToStart.starts == 3  # the first start and two restarts
    assert node.quarantined


def test_one_for_all_restarts_every_cell_of_the_role(wire) -> None:
    policy = SupervisionPolicy(backoff=0.01, strategy="one-for-all")
    node = wire.node("sv4", "pair", registry=_registry(), supervision=policy)
    client = wire.client()
    client.send("role.pair", "(add 5)")
    wait_for(lambda: [c["restarts"] for c in node.status()["cells"]] == [1, 1], 30,
             what="both cells of the role restarted", show=lambda: node.status()["cells"])
    client.send("role.pair", "(add 1)")
    wait_for(lambda: Fragile.applied == [1], 30, what="the restarted role serving",
             show=lambda: Fragile.applied)


def test_a_cell_watching_another_hears_when_it_crashes(wire) -> None:
    registry = RoleRegistry({"watching": [Watcher, Fragile]})
    node = wire.node("sv5", "watching", registry=registry, supervision=FAST)
    client = wire.client()
    client.send("cell.sv5-watcher", '(watch "sv5-fragile")')
    client.send("node.sv5", "(ping)")
    replies_matching(client, "pong", 1)
    wait_for(lambda: _cell_status(node, "sv5-watcher")["counters"]["applied"] == 1, 30,
             what="the watch applied", show=lambda: node.status())
    client.send("cell.sv5-fragile", "(add 5)")
    wait_for(lambda: len(Watcher.heard) == 1, 30, what="a (cell-down ...)",
             show=lambda: node.status())
    assert Watcher.heard[0]["cell"] == "sv5-fragile"
    assert Watcher.heard[0]["condition"] == "restarting"


def test_messages_for_a_failed_cell_of_the_node_queue_are_dead_lettered(wire) -> None:
    strict = SupervisionPolicy(max_restarts=0, period=30.0, backoff=0.01)
    node = wire.node("sv6", registry=_registry(), supervision=strict, system_cells=(Fragile,))
    dead = wire.connect()
    seen: list[Any] = []
    dead.consume(dead.dead_letter_queue, lambda d: (seen.append(d), d.ack()))
    client = wire.client()
    client.send("cell.sv6-fragile", "(add 5)")
    wait_for(lambda: _cell_status(node, "sv6-fragile")["condition"] == "failed", 30,
             what="the cell failed", show=lambda: node.status())
    client.send("cell.sv6-fragile", "(add 1)")
    wait_for(lambda: len(seen) == 2, 30, what="both messages dead-lettered",
             show=lambda: [d.envelope.headers for d in seen])
    assert Fragile.applied == []
    assert all("cell crashed" in str(d.envelope.headers) for d in seen)


def test_a_node_stops_its_cells_in_the_reverse_of_their_start_order(wire) -> None:
    """The role's cells first, then the system cells last-started first: so membership says
    goodbye (and a proxy drops the node) only once a web cell has drained."""
    StopOrder.stopped.clear()
    node = wire.node("sv9", role="ordered", registry=_registry(),
                     system_cells=(FirstSystem, SecondSystem))
    wait_for(lambda: any(c["name"] == "sv9" and c["condition"] == "running"
                         for c in node.status()["cells"]), 30,
             what="the role's cell running", show=lambda: node.status())
    node.stop()
    assert StopOrder.stopped == ["StopOrder", "SecondSystem", "FirstSystem"]


def test_restart_intensity_backs_off_exponentially_then_refuses() -> None:
    intensity = RestartIntensity(SupervisionPolicy(max_restarts=3, period=10.0, backoff=0.1,
                                                   max_backoff=0.3))
    assert [intensity.crash(t) for t in (0.0, 1.0, 2.0)] == [0.1, 0.2, 0.3]
    assert intensity.crash(3.0) is None
    assert intensity.crash(20.0) == 0.1  # the old crashes left the period


def test_supervision_policy_is_read_from_dns_settings() -> None:
    policy = SupervisionPolicy.from_settings(
        {"supervision.max-restarts": "5"},
        {"supervision.period": "2.5", "supervision.strategy": "one-for-all"})
    assert (policy.max_restarts, policy.period, policy.strategy) == (5, 2.5, "one-for-all")
    with pytest.raises(ConfigError, match="strategy"):
        SupervisionPolicy.from_settings({"supervision.strategy": "rest-for-one"})
    with pytest.raises(ConfigError, match="period"):
        SupervisionPolicy.from_settings({"supervision.period": "nan"})



_ESCALATION_ZONE = """$ORIGIN cluster.test.
$TTL 5
@           IN SOA  ns.cluster.test. hostmaster.cluster.test. ( 1 60 30 600 5 )
            IN NS   ns
ns          IN A    127.0.0.1
_cluster    IN TXT  "fragile=1" "spares=spare-01"
_cluster    IN TXT  "supervision.max-restarts=1" "supervision.backoff=0.01"
_nodes      IN TXT  "fragile-01 spare-01"
fragile-01  IN TXT  "role=fragile"
spare-01    IN TXT  "rack=r1"
"""


def test_a_cell_past_its_intensity_escalates_and_the_reconciler_gives_its_role_to_a_spare(
        tmp_path: Any) -> None:
    from cellframe.testing import running_cluster
    from tests.healing_support import FAST

    zone = tmp_path / "cluster.zone"
    zone.write_text(_ESCALATION_ZONE)
    with running_cluster(zone, nodes=["fragile-01", "spare-01"], registry=_registry(),
                         healing=FAST, workdir=tmp_path) as cluster:
        failing = cluster.node("fragile-01")
        assert failing.supervision.max_restarts == 1  # read from DNS
        client = cluster.client("escalation")
        client.send("cell.fragile-01", "(add 5)")
        wait_for(lambda: _cell_status(failing, "fragile-01")["restarts"] == 1, 30,
                 what="one restart", show=lambda: failing.status())
        client.send("cell.fragile-01", "(add 10)")
        wait_for(lambda: cluster.roles() == {"fragile-01": None, "spare-01": "fragile"}, 20,
                 what="the spare holding the role", show=cluster.roles)
        client.send("role.fragile", "(add 7)")
        wait_for(lambda: Fragile.applied == [7], 30, what="the spare serving the role",
                 show=lambda: Fragile.applied)


def test_cellframe_status_shows_a_cell_that_is_not_running_by_its_condition() -> None:
    from cellframe.cli.status import _cell_condition

    running = {"name": "c", "state": "ready", "condition": "running", "restarts": 0}
    assert _cell_condition(running) == "ready"
    assert _cell_condition({**running, "restarts": 2}) == "ready, 2 restarts"
    assert _cell_condition({**running, "condition": "failed", "restarts": 3}) == "failed, 3 restarts"


def test_a_crash_of_a_cell_leaves_the_other_actors_of_the_process_running() -> None:
    import pykka

    from cellframe.cell.outbox import RecordingOutbox
    from tests.cell_support import message

    bystander = Partner.start("bystander", outbox=RecordingOutbox())
    alone = Fragile.start("alone", outbox=RecordingOutbox())
    try:
        alone.tell(message("(add 5)"))
        wait_for(lambda: not alone.is_alive(), 30, what="the crashed cell to stop")
        assert bystander.is_alive()  # pykka stops every actor on a BaseException; not here
        assert pykka.ActorRegistry.get_by_urn(bystander.actor_urn) is not None
    finally:
        bystander.stop()
