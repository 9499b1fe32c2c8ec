"""A node routes messages by node, role, each, cell and all, on both transports alike."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from cellframe import Client, Envelope, Keyword, Node, Symbol
from cellframe.cell.cell import Cell
from cellframe.cell.statemachine import transition
from cellframe.node import node as node_module
from cellframe.node.gate import MAX_MESSAGE_ID
from cellframe.node.status import decode_status
from cellframe.roles.registry import RoleRegistry
from cellframe.testing import Collector, wait_for
from cellframe.transports.memory import MemoryBroker, MemoryTransport
from cellframe.wire.keys import Keyring, new_key
from cellframe.wire.signing import Signer
from tests.node_support import Tally, Wire, cell_total, registry, replies_matching

SECRET = b"s" * 32


def test_node_key_reaches_the_daemon_which_calls_back(wire) -> None:
    wire.node("n1", "tally")
    client = wire.client()
    client.send("node.n1", "(ping)")
    (pong,) = replies_matching(client, "pong", 1)
    assert pong[pong.index(Keyword("node")) + 1] == "n1"


def test_all_reaches_every_node(wire) -> None:
    for name in ("a1", "a2", "a3"):
        wire.node(name)
    client = wire.client()
    client.send("all", "(ping)")
    pongs = replies_matching(client, "pong", 3)
    assert sorted(p[p.index(Keyword("node")) + 1] for p in pongs) == ["a1", "a2", "a3"]


def test_role_key_reaches_exactly_one_node_of_the_role(wire) -> None:
    n1, n2 = wire.node("r1", "tally"), wire.node("r2", "tally")
    client = wire.client()
    for _ in range(10):
        client.send("role.tally", "(add 1)")
    wait_for(lambda: cell_total(n1, "r1") + cell_total(n2, "r2") == 10, 30, what="10 adds")


def test_each_key_reaches_every_node_of_the_role_and_no_other(wire) -> None:
    n1, n2 = wire.node("e1", "tally"), wire.node("e2", "tally")
    other = wire.node("e3", "other")
    client = wire.client()
    client.send("each.tally", "(add 5)")
    wait_for(lambda: cell_total(n1, "e1") == 5 and cell_total(n2, "e2") == 5, 30)
    client.send("cell.e3", "(total)")
    (total,) = replies_matching(client, "total", 1)
    assert total == [Symbol("total"), 0, "e3"]
    assert cell_total(other, "e3") == 0


def test_cell_key_reaches_one_cell(wire) -> None:
    wire.node("c1", "tally")
    n2 = wire.node("c2", "tally")
    client = wire.client()
    client.send("cell.c2", "(add 7)")
    client.send("cell.c2", "(total)")
    assert replies_matching(client, "total", 1) == [[Symbol("total"), 7, "c2"]]
    assert cell_total(n2, "c2") == 7


def test_status_calls_back_name_role_cells_states_and_counters(wire) -> None:
    node = wire.node("s1", "tally")
    client = wire.client()
    client.send("cell.s1", "(add 2)")
    client.send("cell.s1", "(bogus)")
    wait_for(lambda: node.cells()["s1"].cell_counters.received == 2, 30)
    client.send("node.s1", "(status)")
    (status,) = replies_matching(client, "node-status", 1)
    fields = decode_status(status)
    assert (fields["node"], fields["role"]) == ("s1", "tally")
    (cell,) = fields["cells"]
    assert (cell["name"], cell["state"], cell["verbs"]) == ("s1", "counting", ["add", "total"])
    assert cell["counters"]["applied"] == 1 and cell["counters"]["ignored"] == 1


def test_differentiate_changes_the_role_and_repeating_it_changes_nothing(wire) -> None:
    spare = wire.node("d1")
    client = wire.client()
    assert spare.role is None and spare.cells() == {}
    for _ in range(2):
        client.send("node.d1", '(differentiate "tally")')
    wait_for(lambda: "d1" in spare.cells(), 30, what="the tally cell")
    client.send("role.tally", "(add 3)")
    wait_for(lambda: cell_total(spare, "d1") == 3, 30)
    assert spare.role == "tally"
    assert list(spare.cells()) == ["d1"]


def test_a_node_that_takes_a_role_later_inherits_its_backlog(wire) -> None:
    first = wire.node("b1", "tally")
    first.differentiate(None)  # the only tally node becomes a spare; its role queue stays
    client = wire.client()
    for n in (1, 2, 3):
        client.send("role.tally", f"(add {n})")
    heir = wire.node("b2")
    heir.differentiate("tally")
    wait_for(lambda: "b2" in heir.cells() and cell_total(heir, "b2") == 6, 30, what="the backlog")


def test_the_same_message_delivered_twice_is_applied_once(wire) -> None:
    node = wire.node("u1", "tally")
    sender = wire.connect()
    envelope = Envelope(b"(add 4)", message_id="the-same-id")
    sender.publish("cell.u1", envelope)
    sender.publish("cell.u1", Envelope(b"(add 4)", message_id="the-same-id"))
    client = wire.client()
    client.send("cell.u1", "(total)")
    replies_matching(client, "total", 1)
    assert cell_total(node, "u1") == 4
    assert node.cells()["u1"].cell_counters.duplicates == 1


def test_unsigned_and_forged_messages_are_refused_and_dead_lettered(wire) -> None:
    signer = Signer(SECRET)
    node = wire.node("t1", "tally", signer=signer, diagnostic=True)
    raw = wire.connect()
    dead = Collector()
    raw.consume(raw.dead_letter_queue, dead)
    unsigned = Envelope(b"(add 100)", message_id="unsigned")
    forged = Envelope(b"(add 1000)", message_id="forged")
    forged = Signer(b"x" * 32).sign(forged, "cell.t1")
    raw.publish("cell.t1", unsigned)
    raw.publish("cell.t1", forged)
    good = Envelope(b"(add 1)", message_id="good")
    good = signer.sign(good, "cell.t1")
    raw.publish("cell.t1", good)
    wait_for(lambda: cell_total(node, "t1") == 1, 30)
    wait_for(lambda: {"unsigned", "forged"} <= set(dead.ids), 30, what="two dead letters")
    assert cell_total(node, "t1") == 1
    assert node.counters.rejected == 2


def test_oversized_and_unreadable_messages_are_refused_with_a_clear_error(wire) -> None:
    node = wire.node("o1", "tally", max_message_bytes=1024)
    client = wire.client()
    sender = wire.connect()
    sender.publish("cell.o1", Envelope(b"(add " + b"1" * 2000 + b")", reply_to=client.reply_to))
    sender.publish("cell.o1", Envelope(b"(add 1", reply_to=client.reply_to))
    sender.publish("cell.o1", Envelope(b"(add \xff\xfe)", reply_to=client.reply_to))
    errors = replies_matching(client, "error", 2)
    reasons = [e[e.index(Keyword("reason")) + 1] for e in errors]
    assert any("line 1" in r for r in reasons), reasons
    wait_for(lambda: node.counters.rejected == 3, 30)
    assert cell_total(node, "o1") == 0


def test_a_message_id_longer_than_the_gate_takes_is_refused_and_the_node_goes_on(wire) -> None:
    node = wire.node("o2", "tally")
    sender = wire.connect()
    sender.publish("cell.o2", Envelope(b"(add 1)", message_id="i" * (MAX_MESSAGE_ID + 1)))
    sender.publish("cell.o2", Envelope(b"(add 2)", message_id="i" * MAX_MESSAGE_ID))
    wait_for(lambda: node.counters.rejected == 1 and cell_total(node, "o2") == 2, 30,
             what="the long id refused, the other applied",
             show=lambda: (node.counters.rejected, cell_total(node, "o2")))


def test_a_cell_error_is_called_back_to_the_sender(wire) -> None:
    wire.node("x1", "tally")
    client = wire.client()
    client.send("cell.x1", "(add 1 2 3)")
    (error,) = replies_matching(client, "error", 1)
    assert "add" in error[error.index(Keyword("reason")) + 1]


def test_a_node_keeps_answering_while_it_differentiates_again_and_again(wire) -> None:
    # Deliveries are handled on the transport's I/O thread, and differentiating waits on that
    # thread to bind and consume: routing that took the node's lock would deadlock here.
    node = wire.node("f1")
    client = wire.client()
    sent = [0]
    stop = threading.Event()

    def keep_pinging() -> None:
        while not stop.is_set() and sent[0] < 2_000:
            client.send("node.f1", "(ping)")
            sent[0] += 1

    pinger = threading.Thread(target=keep_pinging, daemon=True)
    pinger.start()
    try:
        for role in ("tally", None, "other", "tally", None, "tally"):
            changing = threading.Thread(target=node.differentiate, args=(role,), daemon=True)
            changing.start()
            changing.join(20)
            assert not changing.is_alive(), f"differentiate({role!r}) never finished"
            assert node.role == role
    finally:
        stop.set()
        pinger.join(10)
    assert sent[0] > 0
    replies_matching(client, "pong", sent[0], timeout=30)


def test_a_client_with_inline_call_backs_hears_every_answer(wire) -> None:
    wire.node("i1", "tally")
    heard: list[Any] = []
    threads: list[str] = []

    def on_reply(reply: Any) -> None:
        threads.append(threading.current_thread().name)
        heard.append(reply.expr)

    client = wire.client(inline=True, on_reply=on_reply)
    for n in range(1, 6):
        client.send("cell.i1", f"(add {n})")
    client.send("cell.i1", "(total)")
    wait_for(lambda: heard, 30, what="the call-back")
    assert heard == [[Symbol("total"), 15, "i1"]]
    if wire.kind == "amqp":  # no worker thread between the socket and the callback
        assert threads[0].startswith("cellframe-amqp-io-")


def test_a_stopped_node_deletes_its_queue_and_leaves_the_transport_open(wire) -> None:
    transport = wire.connect()
    returned: list[str] = []
    with Node("q1", transport=transport, role="tally", registry=registry(),
              queue_prefix=wire.prefix) as node:
        assert node.started_at is not None  # `with` started it
        transport.publish("cell.q1", Envelope(b"(add 1)"), on_return=lambda e, r: returned.append(r))
        assert transport.flush(10) and returned == []  # its queue received it
    transport.publish("cell.q1", Envelope(b"(add 1)"), on_return=lambda e, r: returned.append(r))
    assert transport.flush(10), "the broker did not settle the publish"
    assert len(returned) == 1  # nothing receives for a stopped node: it comes back at once
    assert not getattr(transport, "closed", False)  # the transport is its maker's to close
    node.stop()  # again: nothing more to do


def test_with_a_client_deletes_its_reply_queue_and_leaves_the_transport_open(wire) -> None:
    transport = wire.connect()
    returned: list[str] = []
    with Client(transport, queue_prefix=wire.prefix) as client:
        reply_to = client.reply_to
    transport.publish(reply_to, Envelope(b"(late)"), on_return=lambda e, r: returned.append(r))
    assert transport.flush(10) and len(returned) == 1
    assert not getattr(transport, "closed", False)


def test_a_node_that_fails_to_start_in_a_with_block_leaves_nothing_behind(wire) -> None:
    from cellframe.errors import ConfigError

    transport = wire.connect()
    returned: list[str] = []
    with pytest.raises(ConfigError, match="no cells are registered for role 'nosuch'"):
        with Node("bad1", transport=transport, role="nosuch", registry=registry(),
                  queue_prefix=wire.prefix):
            pass
    transport.publish("node.bad1", Envelope(b"(ping)"), on_return=lambda e, r: returned.append(r))
    assert transport.flush(10) and len(returned) == 1  # its queue went with it


class AuditConfirmsHeld(MemoryTransport):
    """A connection whose broker confirms the audit events only when the transport is flushed,
    as a loaded broker confirms them late: the acks of an operator's messages wait for them
    (``cellframe.node.audit``). Notes how many still waited at each consumer's cancel."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker)
        self.held: list[Callable[[], None]] = []
        self.waiting_at_cancel: list[int] = []

    def publish(self, routing_key: str, envelope: Envelope, *,
                on_settled: Callable[[], None] | None = None, **options: Any) -> None:
        if on_settled is not None and routing_key.startswith("event.audit."):
            self.held.append(on_settled)
            on_settled = None
        super().publish(routing_key, envelope, on_settled=on_settled, **options)

    def flush(self, timeout: float) -> bool:
        held, self.held = self.held, []
        for confirmed in held:
            confirmed()
        return super().flush(timeout)

    def cancel(self, consumer_tag: str) -> None:
        self.waiting_at_cancel.append(len(self.held))
        super().cancel(consumer_tag)


def test_a_stopping_node_acknowledges_what_it_applied_before_it_closes_its_consumers() -> None:
    """An operator's message is acknowledged once the broker confirms its audit event. A node
    that stopped drained its cells' mailboxes, not those confirms, and closed its consumers:
    the broker requeued messages its cells had applied, and another instance of the role
    applied them again (3 of 8 adds in test_attack_replays, under load). The audit events
    here are confirmed only when the node waits for them."""
    broker = MemoryBroker()
    ops, node_key = new_key("ops-1", ["role:tally add"]), new_key("k-01", kind="node", node="k-01")
    transport = AuditConfirmsHeld(broker)
    node = Node("k-01", transport=transport, role="tally", registry=registry(),
                signer=Signer(node_key, keyring=Keyring([node_key, ops])),
                watch_config=False).start()
    try:
        sender, signer = broker.connect(), Signer(ops)
        for n in range(3):
            sender.publish("role.tally", signer.sign(Envelope(b"(add 1)", message_id=f"add-{n}"),
                                                     "role.tally"))
        wait_for(lambda: len(transport.held) == 3, 10,
                 what="the 3 adds applied, their audit events not yet confirmed",
                 show=lambda: (cell_total(node, "k-01"), len(transport.held),
                               dict(node.counters.refused)))
        assert cell_total(node, "k-01") == 3
    finally:
        node.stop()
    assert transport.waiting_at_cancel and not any(transport.waiting_at_cancel), \
        transport.waiting_at_cancel
    assert broker.message_count("role.tally") == 0  # none back for another instance


class Stuck(Cell):
    """A cell whose action holds it until released: it cannot stop in time."""

    states = ("idle",)
    initial = "idle"
    role = "stuck"
    entered = threading.Event()
    release = threading.Event()

    @transition("hold")
    def hold(self) -> None:
        Stuck.entered.set()
        Stuck.release.wait(30)


def test_a_cell_that_cannot_stop_in_time_leaves_the_node_stopping_every_other(
        monkeypatch, caplog) -> None:
    """A membership cell flooded by its own heartbeats (heartbeat-ms=0.001 in DNS) did not stop
    within 10 s: stop() raised pykka's Timeout, left the cells after it running and the queue
    in place, and `cellframe node` ended in a traceback."""
    monkeypatch.setattr(node_module, "CELL_STOP_TIMEOUT", 0.5)
    wire = Wire.in_process()
    try:
        node = wire.node("s-01", role="stuck", registry=RoleRegistry({"stuck": [Stuck, Tally]}))
        others = [cell for name, cell in node.cells().items() if name != "s-01-stuck"]
        client = wire.client()
        client.send("cell.s-01-stuck", "(hold)")
        assert Stuck.entered.wait(20), "the stuck cell never ran its action"
        node.stop()
        assert others and not any(cell.actor_ref.is_alive() for cell in others)
        assert "s-01: cell s-01-stuck did not stop within 0.5 s" in caplog.text
    finally:
        Stuck.release.set()
        wire.close()
