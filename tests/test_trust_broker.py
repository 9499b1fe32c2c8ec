"""Trust on the real broker, with raw pika as the attacker: every hostile message is refused,
counted by reason, dead-lettered (diagnostic mode) and never applied, and the node still
answers (status) afterwards. Each node signs with a node key bound to it (``node = NAME``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pika
import pytest

from cellframe import Client, Node
from cellframe.cell import transition
from cellframe.healing.membership import HealingConfig, Membership
from cellframe.language.reader import read
from cellframe.replication.coordinate import Coordinator
from cellframe.roles.logsump import LOG_RECORDS_VERB, LogSumpCell
from cellframe.roles.proxy import ProxyCell
from cellframe.roles.registry import RoleRegistry
from cellframe.testing import Collector, wait_for
from cellframe.testing.amqp import raw_channel
from cellframe.transports._amqp_wire import to_amqp
from cellframe.transports.base import DEAD_LETTER_REASON
from cellframe.wire.envelope import Envelope
from cellframe.wire.keys import Key, KeyFiles, dump_keys, new_key
from cellframe.wire.signing import EXPIRES_HEADER, KEY_HEADER, SIGNATURE_HEADER, Signer
from tests.node_support import Tally, cell_total, replies_matching

pytestmark = pytest.mark.amqp


class Gullible(Tally):
    """A tally that applies node-only verbs if they reach it: a replication adds 100, a claim
    1000, so a total that moved shows the gate let one through."""

    @transition("replicate", target="counting")
    def replicate(self, **extra: Any) -> None:
        self.total += 100

    @transition("claim", target="counting")
    def claim(self, **extra: Any) -> None:
        self.total += 1000

    @transition("note")
    def note(self, *args: Any, **extra: Any) -> None:
        """Takes anything: what a verb called inside its arguments did would stay applied."""

    @transition("open", source="empty", target="counting")
    def open(self) -> None:
        """Only from ``empty``: once counting, an (open) is a no-op."""

    @transition("explode")
    def explode(self) -> None:
        self.total += 10_000  # rolled back: the action failed
        raise RuntimeError("boom")

    @transition("crash")
    def crash(self) -> None:
        raise SystemExit("down")  # not an action's failure: the cell crashes


def registry() -> RoleRegistry:
    return RoleRegistry({"tally": [Gullible]})


@dataclass
class Trust:
    """Two nodes trusting a key file (a node key, an operator key, a key limited to (total)),
    an operator's client, a spy queue that captures what the client sends, and the dead
    letters."""

    names: Any
    keys: KeyFiles
    nodes: dict[str, Node]
    client: Client
    spy: str
    dead: Collector

    def send_and_capture(self, target: str, text: str,
                         client: Client | None = None) -> tuple[Any, bytes]:
        """Send ``text`` as the operator (or ``client``) and return what the wire carried
        (properties, body)."""
        message_id = (client or self.client).send(target, text)
        with raw_channel(self.names.url) as channel:
            def captured() -> Any:
                while True:
                    method, properties, body = channel.basic_get(self.spy, auto_ack=True)
                    if method is None:
                        return None
                    if properties.message_id == message_id:
                        return properties, body
            return wait_for(captured, 30, what=f"the spy to capture {message_id}")

    def publish_raw(self, key: str, body: bytes, properties: Any) -> None:
        with raw_channel(self.names.url) as channel:
            channel.basic_publish(self.names.exchange, key, body, properties)

    def publish_signed(self, key: Key, routing_key: str, text: str) -> None:
        """Sign ``text`` for ``routing_key`` with ``key`` (a stolen one) and publish it with raw
        pika."""
        signed = Signer(key, exchange=self.names.exchange).sign(Envelope(text.encode()), routing_key)
        self.publish_raw(routing_key, signed.body, to_amqp(signed, persistent=False))

    def node_key(self, name: str) -> Key:
        return next(k for k in self.keys.keyring if k.node == name)

    def start_node(self, name: str, role: str, cells: list[type[Any]],
                   **options: Any) -> Node:
        """One more node playing ``role`` with its own bound key, added to the key file."""
        key = new_key(name, kind="node", node=name)
        self.keys.paths[0].write_text(dump_keys([*self.keys.keyring, key]))
        assert self.keys.reload()
        signer = Signer(key, keyring=self.keys, exchange=self.names.exchange)
        self.nodes[name] = Node(name, transport=self.names.connect(), signer=signer, role=role,
                                registry=RoleRegistry({role: cells}), diagnostic=True,
                                queue_prefix=self.names.queue_prefix, watch_config=False,
                                **options).start()
        return self.nodes[name]

    def root_key(self) -> Key:
        """An operator key that may send anything to anyone (``all *``), trusted now."""
        everything = new_key("root-ops", ["all *"])
        self.keys.paths[0].write_text(dump_keys([*self.keys.keyring, everything]))
        assert self.keys.reload()
        return everything

    def root_client(self) -> Client:
        """A client whose operator key may send anything to anyone (``all *``)."""
        everything = self.root_key()
        return Client(self.names.connect(), queue_prefix=self.names.queue_prefix,
                      signer=Signer(everything, exchange=self.names.exchange))

    def dead_reasons(self, containing: str) -> list[str]:
        reasons = [d.envelope.headers.get(DEAD_LETTER_REASON, "") for d in self.dead.deliveries]
        return [r for r in reasons if containing in r]

    def refused(self, node: str = "a-01") -> dict[str, int]:
        return dict(self.nodes[node].counters.refused)

    def wait_refused(self, reason: str, count: int = 1, node: str = "a-01") -> None:
        wait_for(lambda: self.refused(node).get(reason, 0) >= count, 30,
                 what=f"{count} refusal(s) for {reason} on {node}", show=lambda: self.refused(node))

    def total(self, node: str) -> int:
        return cell_total(self.nodes[node], node)

    def answers_status(self, node: str = "a-01") -> None:
        since = len(self.client.replies)
        self.client.send(f"node.{node}", "(status)")
        replies_matching(self.client, "node-status", 1, since=since)


@pytest.fixture
def trust(amqp_names: Any, tmp_path: Any) -> Iterator[Trust]:
    node_keys = {name: new_key(name, kind="node", node=name) for name in ("a-01", "b-01")}
    ops = new_key("ops-1", ["cell:* add total", "node:* status"])
    limited = new_key("reader-1", ["cell:* total"])
    key_file = tmp_path / "cluster.keys"
    key_file.write_text(dump_keys([*node_keys.values(), ops, limited]))
    keys = KeyFiles([key_file])
    nodes: dict[str, Node] = {}
    transports = []
    try:
        for name in ("a-01", "b-01"):
            transport = amqp_names.connect()
            transports.append(transport)
            signer = Signer(node_keys[name], keyring=keys, exchange=amqp_names.exchange)
            nodes[name] = Node(name, transport=transport, signer=signer, role="tally",
                               registry=registry(), queue_prefix=amqp_names.queue_prefix,
                               diagnostic=True, watch_config=False).start()
        spy = amqp_names.queue("spy")
        with raw_channel(amqp_names.url) as channel:
            channel.queue_declare(spy)
            channel.queue_bind(spy, amqp_names.exchange, "cell.*")
        raw = amqp_names.connect()
        dead = Collector()
        raw.consume(raw.dead_letter_queue, dead)
        client = Client(amqp_names.connect(), queue_prefix=amqp_names.queue_prefix,
                        signer=Signer(ops, exchange=amqp_names.exchange, ttl=5.0))
        yield Trust(amqp_names, keys, nodes, client, spy, dead)
        client.close()
    finally:
        for node in nodes.values():
            node.stop()


def test_a_signed_hit_replayed_to_another_target_is_refused_and_never_applied(trust) -> None:
    properties, body = trust.send_and_capture("cell.a-01", "(add 5)")
    wait_for(lambda: trust.total("a-01") == 5, 30, what="the genuine add on a-01")
    trust.publish_raw("cell.b-01", body, properties)
    trust.wait_refused("wrong-target", node="b-01")
    assert trust.total("b-01") == 0
    dead = wait_for(lambda: [d for d in trust.dead.deliveries
                             if d.envelope.message_id == properties.message_id], 30,
                    what="the replay's dead letter")
    assert "wrong-target" in dead[0].envelope.headers[DEAD_LETTER_REASON]
    trust.answers_status("b-01")


def test_a_signed_message_replayed_within_its_life_is_refused_as_a_replay(trust) -> None:
    properties, body = trust.send_and_capture("cell.a-01", "(add 3)")
    wait_for(lambda: trust.total("a-01") == 3, 10, what="the genuine add")
    trust.publish_raw("cell.a-01", body, properties)
    trust.wait_refused("replayed")
    assert trust.total("a-01") == 3
    trust.answers_status()


def test_a_signed_role_message_replayed_to_the_roles_other_instance_is_refused(trust) -> None:
    """a-01 and b-01 both play tally: a copy of a role message may reach the instance that
    did not apply it, whose own cache never saw it. The one that admitted it tells the role
    (``cellframe.node.replays``), so every copy is refused, on both nodes."""
    with raw_channel(trust.names.url) as channel:
        channel.queue_bind(trust.spy, trust.names.exchange, "role.tally")
    root = trust.root_client()  # the operator's key may not send to role:tally
    properties, body = trust.send_and_capture("role.tally", "(add 4)", root)
    wait_for(lambda: trust.total("a-01") + trust.total("b-01") == 4, 30,
             what="the genuine add on one instance")
    applied_on = "a-01" if trust.total("a-01") == 4 else "b-01"
    other = "b-01" if applied_on == "a-01" else "a-01"
    wait_for(lambda: trust.nodes[other].replay_gossip.heard_entries >= 1, 30,
             what=f"{other} to hear that {applied_on} admitted it")
    for _ in range(6):  # the broker hands them out in turn: both nodes get some
        trust.publish_raw("role.tally", body, properties)
    wait_for(lambda: sum(trust.refused(n).get("replayed", 0) for n in trust.nodes) == 6, 30,
             what="six replays refused", show=lambda: {n: trust.refused(n) for n in trust.nodes})
    assert trust.refused(other).get("replayed", 0) >= 1  # the instance that never saw it
    assert trust.total("a-01") + trust.total("b-01") == 4
    trust.answers_status(other)
    root.close()


#: Membership only to know who else plays the role.
SEEING = Membership.configured(HealingConfig(heartbeat_interval=0.05, acceptable_pause=5.0))


@pytest.mark.parametrize("mode", ["ask", "gossip"])
def test_copies_of_a_role_message_published_at_once_are_applied_once_across_instances(
        trust, mode: str) -> None:
    """The first copy and six replays, published together: they reach both instances of the
    role before either could tell the other what it admitted. Asking (the default) holds each
    copy until the other instance answers, so one copy is applied and six are refused as
    replays; gossip alone lets the other instance apply a copy too (its window)."""
    nodes = [trust.start_node(name, "counter", [Gullible], system_cells=(SEEING,),
                              replays_across_role=mode) for name in ("r-01", "r-02")]
    wait_for(lambda: all(node.role_siblings() for node in nodes), 30,
             what="each instance to see the other alive",
             show=lambda: {node.name: node.role_siblings() for node in nodes})
    stolen = new_key("ops-role", ["role:counter add"])
    trust.keys.paths[0].write_text(dump_keys([*trust.keys.keyring, stolen]))
    assert trust.keys.reload()
    signed = Signer(stolen, exchange=trust.names.exchange).sign(Envelope(b"(add 4)"),
                                                                "role.counter")
    properties = to_amqp(signed, persistent=False)
    with raw_channel(trust.names.url) as channel:
        for _ in range(7):
            channel.basic_publish(trust.names.exchange, "role.counter", signed.body, properties)

    def settled() -> dict[str, Any]:
        return {node.name: (node.counters.delivered, dict(node.counters.refused))
                for node in nodes}

    def applied() -> int:
        return sum(cell_total(node, node.name) for node in nodes)

    def replays() -> int:
        return sum(node.counters.refused.get("replayed", 0) for node in nodes)

    wait_for(lambda: applied() + replays() * 4 >= 28, 30,
             what="each of the seven copies applied or refused", show=settled)
    if mode == "ask":
        assert applied() == 4, settled()
        assert replays() == 6, settled()
        for node in nodes:
            trust.answers_status(node.name)
    else:  # gossip alone: each instance's own cache refuses its second copy, no more
        assert applied() in (4, 8), settled()


def test_a_signed_message_replayed_after_its_expiry_is_refused(trust) -> None:
    properties, body = trust.send_and_capture("cell.b-01", "(add 2)")
    wait_for(lambda: trust.total("b-01") == 2, 30, what="the genuine add")
    expires = float(properties.headers[EXPIRES_HEADER]["x-cf-float"])
    wait_for(lambda: time.time() > expires + 0.1, 30, what="the message's expiry (5 s ttl)")
    # The replay cache forgets an entry at its expiry: from then on the expiry refuses it.
    trust.publish_raw("cell.b-01", body, properties)
    trust.wait_refused("expired", node="b-01")
    assert trust.total("b-01") == 2
    trust.answers_status("b-01")


def test_a_verb_outside_the_keys_capabilities_is_refused(trust) -> None:
    limited = next(k for k in trust.keys.keyring if k.id == "reader-1")
    client = Client(trust.names.connect(), queue_prefix=trust.names.queue_prefix,
                    signer=Signer(limited, exchange=trust.names.exchange))
    try:
        client.send("cell.a-01", "(add 100)")
        client.send("node.a-01", "(differentiate nil)")
        trust.wait_refused("not-allowed", 2)
        error = replies_matching(client, "error", 2)
        assert "may not send (add ...)" in str(error)
        client.send("cell.a-01", "(total)")
        assert replies_matching(client, "total", 1)[0][1] == 0  # allowed, and answered
    finally:
        client.close()
    assert trust.total("a-01") == 0 and trust.nodes["a-01"].role == "tally"


def test_a_key_removed_from_the_key_file_is_refused_after_a_reload(trust, tmp_path) -> None:
    trust.client.send("cell.a-01", "(add 1)")
    wait_for(lambda: trust.total("a-01") == 1, 30, what="the add before revocation")
    kept = [k for k in trust.keys.keyring if k.id != "ops-1"]
    trust.keys.paths[0].write_text(dump_keys(kept))
    assert trust.keys.reload()
    trust.client.send("cell.a-01", "(add 1)")
    trust.wait_refused("bad-signature")
    assert trust.total("a-01") == 1
    wait_for(lambda: any("unknown or revoked key 'ops-1'" in d.envelope.headers[DEAD_LETTER_REASON]
                         for d in trust.dead.deliveries), 30, what="the revoked key's dead letter",
             show=lambda: [d.envelope.headers.get(DEAD_LETTER_REASON) for d in trust.dead.deliveries])


@pytest.mark.parametrize("case", ["unsigned", "wrong-signature", "absurd-headers",
                                  "missing-headers", "ten-megabytes", "not-utf8-unsigned",
                                  "not-utf8-signed"])
def test_hostile_messages_from_raw_pika_are_refused_and_the_node_stays_up(trust, case) -> None:
    properties, body = trust.send_and_capture("cell.a-01", "(add 1)")
    wait_for(lambda: trust.total("a-01") == 1, 30, what="the genuine add")
    headers = dict(properties.headers)
    fresh = pika.BasicProperties(message_id=f"{case}-1", headers=headers)
    expected = "bad-signature"
    if case == "unsigned":
        fresh.headers = {}
        body, expected = b"(add 100)", "unsigned"
    elif case == "wrong-signature":
        headers[SIGNATURE_HEADER] = "0" * 64
    elif case == "absurd-headers":
        headers.update({SIGNATURE_HEADER: 12345, KEY_HEADER: {"a": [1, 2, {"b": None}]},
                        EXPIRES_HEADER: "x" * 100_000, "x-junk": list(range(1000))})
    elif case == "missing-headers":
        del headers[KEY_HEADER], headers[EXPIRES_HEADER]
    elif case == "ten-megabytes":
        body, expected = b"(add " + b"1" * 10_000_000 + b")", "oversized"
    elif case == "not-utf8-unsigned":
        fresh.headers, body, expected = {}, b"(add \xff\xfe)", "unsigned"
    else:  # a valid key holder sending bytes that are not text: signed, then unreadable
        envelope_signer = trust.client.signer
        from cellframe.transports._amqp_wire import to_amqp
        from cellframe.wire.envelope import Envelope

        signed = envelope_signer.sign(Envelope(b"(add \xff\xfe)"), "cell.a-01")
        fresh, body, expected = to_amqp(signed, persistent=False), signed.body, "unreadable"
    trust.publish_raw("cell.a-01", body, fresh)
    trust.wait_refused(expected)
    assert trust.total("a-01") == 1
    trust.answers_status()


def test_what_an_operator_key_sends_is_an_audit_event_on_the_wire(trust) -> None:
    watcher = trust.names.connect()
    queue = trust.names.queue("audit")
    watcher.declare_queue(queue, exclusive=True)
    watcher.bind(queue, "event.audit.*")
    events = Collector()
    watcher.consume(queue, events)
    accepted = trust.client.send("cell.a-01", "(add 7)")
    refused = trust.client.send("node.a-01", "(differentiate nil)")  # outside ops-1's grant
    wait_for(lambda: len(events.deliveries) >= 2, 30, what="two audit events",
             show=lambda: [d.envelope.body for d in events.deliveries])
    bodies = {d.routing_key: [] for d in events.deliveries}
    texts = [d.envelope.body.decode() for d in events.deliveries]
    assert set(bodies) == {"event.audit.a-01"}
    assert any(f'"{accepted}"' in t and ':result "applied"' in t and ':verb "add"' in t
               and ':key "ops-1"' in t and ':target "cell.a-01"' in t for t in texts)
    assert any(f'"{refused}"' in t and ':result "refused: not-allowed"' in t for t in texts)
    # Signed with the node's key, for its routing key: a log sump verifies and keeps it.
    node_signer = trust.nodes["a-01"].signer
    for delivery in events.deliveries:
        assert node_signer.verify(delivery.envelope, delivery.routing_key).kind == "node"


def audit_watcher(trust: Trust) -> Collector:
    """The audit events of every node, as they are published."""
    watcher = trust.names.connect()
    queue = trust.names.queue("audit")
    watcher.declare_queue(queue, exclusive=True)
    watcher.bind(queue, "event.audit.*")
    watcher.flush(10)
    events = Collector()
    watcher.consume(queue, events)
    return events


def audited(events: Collector, message_id: str, count: int = 1,
            node: str = "a-01") -> list[dict[str, Any]]:
    """The fields of the audit events ``node`` published for ``message_id``, once there are
    ``count`` of them."""
    def found() -> list[dict[str, Any]]:
        fields = []
        for delivery in list(events.deliveries):
            if delivery.routing_key != f"event.audit.{node}":
                continue
            expr = read(delivery.envelope.body)
            event = {str(k)[1:]: v for k, v in zip(expr[1::2], expr[2::2], strict=True)}
            if event["message-id"] == message_id:
                fields.append(event)
        return fields
    return wait_for(lambda: len(found()) >= count and found(), 30,
                    what=f"{count} audit event(s) for {message_id} on {node}",
                    show=lambda: [d.envelope.body for d in events.deliveries])


def test_an_operators_message_applied_is_audited_as_applied_once(trust) -> None:
    events = audit_watcher(trust)
    sent = trust.client.send("cell.a-01", "(add 4)")
    [event] = audited(events, sent)
    assert (event["key"], event["target"], event["verb"]) == ("ops-1", "cell.a-01", "add")
    assert event["result"] == "applied"
    trust.answers_status()  # a later message: still one event for the add
    assert len(audited(events, sent)) == 1


@pytest.mark.parametrize(("first", "text", "result"), [
    ("(add 1)", "(open)",  # only from empty: now counting
     "ignored: no transition for 'open' from state 'counting'"),
    (None, "(explode)", "failed: RuntimeError: boom"),
    (None, "(crash)", "not applied: cell crashed: SystemExit: down"),
], ids=["no-transition-is-ignored", "a-failing-action-is-failed", "a-crash-is-not-applied"])
def test_an_operators_message_is_audited_with_what_applying_it_did(trust, first, text,
                                                                  result) -> None:
    events = audit_watcher(trust)
    client = trust.root_client()
    try:
        if first is not None:
            client.send("cell.a-01", first)
        sent = client.send("cell.a-01", text)
        [event] = audited(events, sent)
    finally:
        client.close()
    assert event["result"] == result
    assert (event["key"], event["verb"]) == ("root-ops", text[1:-1])
    if first is None:
        assert trust.total("a-01") == 0


def test_an_operators_message_applied_twice_is_audited_as_a_duplicate(trust) -> None:
    """The same message id signed for two routing keys that both reach a-01's cell (the gate
    lets it through: a replay is judged per routing key): the cell's dedup skips the second."""
    events = audit_watcher(trust)
    root = trust.root_key()
    signer = Signer(root, exchange=trust.names.exchange)
    for routing_key in ("cell.a-01", "each.tally"):
        signed = signer.sign(Envelope(b"(add 3)", message_id="dup-1"), routing_key)
        trust.publish_raw(routing_key, signed.body, to_amqp(signed, persistent=False))
        if routing_key == "cell.a-01":
            audited(events, "dup-1")  # applied before the second copy is sent
    results = {(e["target"], e["result"]) for e in audited(events, "dup-1", 2)}
    assert results == {("cell.a-01", "applied"), ("each.tally", "duplicate")}
    assert trust.total("a-01") == 3
    # b-01 never saw it: each.tally reaches it as its own first copy, applied.
    assert [e["result"] for e in audited(events, "dup-1", node="b-01")] == ["applied"]


def test_the_log_sump_keeps_an_operators_audit_event_with_its_result(trust, tmp_path) -> None:
    sump_key = new_key("s-01", kind="node", node="s-01")
    trust.keys.paths[0].write_text(dump_keys([*trust.keys.keyring, sump_key]))
    assert trust.keys.reload()
    signer = Signer(sump_key, keyring=trust.keys, exchange=trust.names.exchange)
    sump = Node("s-01", transport=trust.names.connect(), signer=signer, role="logsump",
                registry=RoleRegistry({"logsump": [LogSumpCell]}),
                queue_prefix=trust.names.queue_prefix, watch_config=False)
    sump.settings = {"data-dir": str(tmp_path / "sump")}
    sump.start()
    try:
        sump.transport.flush(10)
        events = tmp_path / "sump" / "logsump" / "events.log"
        sent = trust.client.send("cell.a-01", "(add 6)")

        def kept() -> list[str]:
            lines = events.read_text().splitlines() if events.exists() else []
            return [line for line in lines if f':message-id "{sent}"' in line]
        [line] = wait_for(kept, 30, what=f"the sump to keep the audit of {sent}",
                          show=lambda: events.read_text() if events.exists() else "no file")
    finally:
        sump.stop()
    assert '(event :kind "audit" :node "a-01"' in line
    assert ':key "ops-1"' in line and ':result "applied"' in line


def test_an_operator_key_cannot_impersonate_a_node(trust) -> None:
    client = trust.root_client()
    node = trust.nodes["a-01"]
    for pattern in ("heartbeat.*", "membership.down.*"):  # as a membership cell binds them
        node.transport.bind(node.queue, pattern)
    node.transport.flush(10)
    try:
        client.send("heartbeat.a-01", '(heartbeat :node "b-01" :incarnation 99)')
        client.send("membership.down.b-01", '(member-down :node "b-01")')
        trust.wait_refused("not-allowed", 2)
        client.send("cell.a-01", "(add 2)")  # everything else it may do
        wait_for(lambda: trust.total("a-01") == 2, 30, what="the operator's own add")
    finally:
        client.close()
    assert trust.refused()["not-allowed"] == 2


def test_an_operator_key_cannot_ask_or_answer_a_replay_check_and_bad_entries_are_refused(
        trust, caplog) -> None:
    """A forged ``not-applied`` would let a replay through: only node keys send the replay
    check's verbs. A node's malformed entries are a clear error, and the node stays up."""
    client = trust.root_client()
    try:
        client.send("node.a-01", '(admitted-answers :node "b-01" :answers '
                                 '\'(("k" "m" "role.tally" "not-applied")))')
        client.send("node.a-01", '(were-admitted :by "b-01" :entries \'(("k" "m" "role.tally")))')
        trust.wait_refused("not-allowed", 2)
    finally:
        client.close()
    b_key = trust.node_key("b-01")
    for text in ('(were-admitted :by "b-01" :entries "junk")',
                 '(admitted-answers :node "b-01" :answers \'(("k" "m" "role.tally" "maybe")))',
                 '(were-admitted :by "b-01" :entries \'(("k" 5 "role.tally")))'):
        trust.publish_signed(b_key, "node.a-01", text)
    node = trust.nodes["a-01"]

    def refusals() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if "a-01-daemon" in r.getMessage() and "ArityError" in r.getMessage()]

    # An action that raises ArityError is rolled back and logged, as the other node verbs'.
    wait_for(lambda: len(refusals()) == 3, 30,
             what="three malformed replay checks refused by a-01's daemon", show=refusals)
    assert node.replay_check.holding() == 0
    trust.answers_status()


def test_an_operator_key_with_every_capability_cannot_send_replication_or_claims(trust) -> None:
    assert "replicate" in Coordinator.node_verbs and "claim" in Membership.node_verbs
    assert LOG_RECORDS_VERB == "log-records"
    client = trust.root_client()
    try:
        client.send("cell.a-01", "(replicate :peer \"shard-x\" :rows '())")
        client.send("cell.a-01", '(claim :node "a-01" :role "tally")')
        client.send("cell.a-01", '(log-records :node "a-01" :records ())')  # the sump's
        # A node's monitors: a forged watch, or a forged notice that a watched cell went down.
        client.send("node.a-01", '(monitor :cell "a-01" :by "b-01")')
        client.send("node.a-01", '(cell-down :cell "x" :node "b-01" :condition "failed" '
                                 ':reason "forged")')
        trust.wait_refused("not-allowed", 5)
        client.send("cell.a-01", "(add 2)")  # what it may do still works
        wait_for(lambda: trust.total("a-01") == 2, 30, what="the operator's own add")
    finally:
        client.close()
    assert trust.refused()["not-allowed"] == 5
    wait_for(lambda: len(trust.dead_reasons("only node keys do")) == 5, 30,
             what="five dead letters saying only node keys do",
             show=lambda: trust.dead_reasons(""))
    trust.answers_status()
    # The same verbs from a node's own key reach the cell: the gate refused the operator.
    trust.publish_signed(trust.node_key("a-01"), "cell.a-01", "(replicate :peer \"shard-x\")")
    wait_for(lambda: trust.total("a-01") == 102, 30, what="a node's replication applied",
             show=lambda: (trust.total("a-01"), trust.refused()))


def test_no_operator_key_and_no_other_nodes_key_can_change_a_web_nodes_place_in_a_proxys_pool(
        trust) -> None:
    proxy = trust.start_node("p-01", "proxy", [ProxyCell]).cells()["p-01"]
    a01, b01 = trust.node_key("a-01"), trust.node_key("b-01")
    join = '(join-pool :backend "{}" :node "{}" :weight 10 :incarnation 1 :address "{}" :port 80)'

    def pool() -> dict[str, tuple[int, str]]:  # asked of the cell: its turn, not our thread's
        rows = proxy.actor_ref.proxy().cell_snapshot().get(timeout=10)["pool"]
        return {name: (weight, node) for name, weight, node in rows}

    trust.publish_signed(a01, "cell.p-01", join.format("a-01", "a-01", "10.0.0.1"))
    trust.publish_signed(b01, "cell.p-01", join.format("b-01", "b-01", "10.0.0.2"))
    wait_for(lambda: pool() == {"a-01": (10, "a-01"), "b-01": (10, "b-01")}, 30,
             what="each web node's own join", show=pool)
    # a-01's key, in b-01's name: refused at the gate; in its own: b-01's backend is not its.
    trust.publish_signed(a01, "cell.p-01", join.format("b-01", "b-01", "10.0.0.66"))
    trust.publish_signed(a01, "cell.p-01", '(drain-pool :backend "b-01" :node "b-01")')
    trust.publish_signed(a01, "cell.p-01", join.format("b-01", "a-01", "10.0.0.66"))
    trust.publish_signed(a01, "cell.p-01", '(leave-pool :backend "b-01" :node "a-01")')
    client = trust.root_client()
    try:
        client.send("cell.p-01", join.format("evil", "a-01", "10.0.0.66"))
        client.send("cell.p-01", '(drain-pool :backend "a-01" :node "a-01")')
        client.send("cell.p-01", '(leave-pool :backend "a-01" :node "a-01")')
        trust.wait_refused("not-allowed", 5, node="p-01")
        client.send("cell.p-01", '(set-weight :backend "a-01" :weight 3)')  # an operator's
        wait_for(lambda: proxy.stats["refused_joins"] == 1 and pool()["a-01"] == (3, "a-01"), 30,
                 what="a-01's join of b-01 ignored and the operator's set-weight applied",
                 show=lambda: (pool(), proxy.stats))
    finally:
        client.close()
    assert pool() == {"a-01": (3, "a-01"), "b-01": (10, "b-01")}
    assert trust.refused("p-01") == {"not-allowed": 5}
    wait_for(lambda: len(trust.dead_reasons("only node keys do")) == 3, 30,
             what="three dead letters saying only node keys do",
             show=lambda: trust.dead_reasons(""))


def test_a_node_key_bound_to_one_web_node_sets_only_its_own_backends_weight(trust) -> None:
    proxy = trust.start_node("p-01", "proxy", [ProxyCell]).cells()["p-01"]
    a01, b01 = trust.node_key("a-01"), trust.node_key("b-01")
    join = '(join-pool :backend "{0}" :node "{0}" :weight 10 :incarnation 1)'

    def pool() -> dict[str, int]:  # asked of the cell: its turn, not our thread's
        rows = proxy.actor_ref.proxy().cell_snapshot().get(timeout=10)["pool"]
        return {name: weight for name, weight, _ in rows}

    trust.publish_signed(a01, "cell.p-01", join.format("a-01"))
    trust.publish_signed(b01, "cell.p-01", join.format("b-01"))
    wait_for(lambda: pool() == {"a-01": 10, "b-01": 10}, 30, what="both joins", show=pool)
    # a-01's key: b-01's backend in its own name is not its; in b-01's name, in none, or
    # inside another form, refused at the gate.
    trust.publish_signed(a01, "cell.p-01", '(set-weight :backend "b-01" :node "a-01" :weight 1)')
    trust.publish_signed(a01, "cell.p-01", '(set-weight :backend "b-01" :node "b-01" :weight 1)')
    trust.publish_signed(a01, "cell.p-01", '(set-weight :backend "b-01" :weight 1)')
    trust.publish_signed(a01, "cell.p-01", '(do (set-weight :backend "b-01" :weight 1))')
    trust.publish_signed(a01, "cell.p-01", '(set-weight :backend "a-01" :node "a-01" :weight 2)')
    trust.wait_refused("not-allowed", 3, node="p-01")
    wait_for(lambda: pool()["a-01"] == 2, 30, what="a-01's own weight", show=pool)
    client = trust.root_client()
    try:
        client.send("cell.p-01", '(set-weight :backend "b-01" :weight 5)')  # an operator's
        wait_for(lambda: pool()["b-01"] == 5, 30, what="the operator's weight for b-01",
                 show=pool)
    finally:
        client.close()
    assert pool() == {"a-01": 2, "b-01": 5} and trust.refused("p-01") == {"not-allowed": 3}
    wait_for(lambda: len(trust.dead_reasons("node key 'a-01' speaks for 'a-01'")) == 3, 30,
             what="three dead letters naming a-01's key", show=lambda: trust.dead_reasons(""))
    # The one the gate let through, in a-01's own name, the proxy refused as not a-01's.
    wait_for(lambda: len(trust.dead_reasons("not-allowed: node 'a-01' does not hold backend "
                                            "'b-01' (set-weight ...)")) == 1, 30,
             what="a dead letter for a-01's set-weight of b-01", show=lambda: trust.dead_reasons(""))
    assert proxy.stats["not_held"] == 1


def test_verbs_called_inside_a_message_are_checked_as_its_own_verb_is(trust) -> None:
    noter = new_key("noter-1", ["cell:* note"])
    trust.keys.paths[0].write_text(dump_keys([*trust.keys.keyring, noter]))
    assert trust.keys.reload()
    client = trust.root_client()
    try:
        client.send("cell.a-01", '(do (replicate :peer "shard-x"))')  # node-only, inside
        trust.publish_signed(noter, "cell.a-01", "(note :x (add 5))")  # beyond its capabilities
        trust.publish_signed(trust.node_key("b-01"), "cell.a-01",
                             '(do (claim :node "a-01" :role "tally"))')  # another's name
        trust.wait_refused("not-allowed", 3)
        trust.publish_signed(noter, "cell.a-01", "(note :x (+ 1 2))")  # a built-in is no verb
        client.send("cell.a-01", "(do (add 2) (note '(replicate)))")  # quoted: data, no call
        wait_for(lambda: trust.total("a-01") == 2, 30, what="the root key's own add",
                 show=lambda: (trust.total("a-01"), trust.refused()))
    finally:
        client.close()
    assert trust.refused() == {"not-allowed": 3}
    trust.answers_status()


def test_a_node_key_bound_to_one_node_cannot_speak_for_another(trust) -> None:
    stolen = trust.node_key("a-01")
    victim = trust.nodes["b-01"]
    for pattern in ("heartbeat.*", "membership.#", "log.#", "event.#"):
        victim.transport.bind(victim.queue, pattern)
    victim.transport.flush(10)
    impersonations = [
        ("heartbeat.b-01", '(heartbeat :node "b-01" :incarnation 99)'),
        ("heartbeat.a-01", '(heartbeat :node "b-01" :incarnation 99)'),  # its key, another name
        ("membership.leave.b-01", '(member-leave :node "b-01" :incarnation 1)'),
        ("membership.claim.b-01", '(claim :node "b-01" :role "tally")'),
        ("membership.down.a-01", '(member-down :node "a-01" :incarnation 1 :by "b-01")'),
        ("cell.b-01", '(claim :node "b-01" :role "tally")'),  # to a cell that applies claims
        ("event.down.b-01", '(event :kind "down")'),
        ("log.b-01.info", '(log-records :node "b-01")'),
        ("log.a-01.records", '(log-records :node "b-01")'),
    ]
    for routing_key, text in impersonations:
        trust.publish_signed(stolen, routing_key, text)
    trust.wait_refused("not-allowed", len(impersonations), node="b-01")
    wait_for(lambda: len(trust.dead_reasons("node key 'a-01' speaks for 'a-01'"))
             == len(impersonations), 30, what="a dead letter for each impersonation",
             show=lambda: trust.dead_reasons(""))
    assert trust.total("b-01") == 0
    # In its own name it is still heard, on the same cell.
    trust.publish_signed(stolen, "cell.b-01", '(claim :node "a-01" :role "tally")')
    wait_for(lambda: trust.total("b-01") == 1000, 30, what="a-01's own claim applied",
             show=lambda: (trust.total("b-01"), trust.refused("b-01")))
    assert trust.refused("b-01")["not-allowed"] == len(impersonations)
    trust.answers_status("b-01")


def test_nodes_signing_with_keys_bound_to_them_see_each_other_alive(amqp_names, tmp_path) -> None:
    names = ("m-01", "m-02")
    node_keys = [new_key(name, kind="node", node=name) for name in names]
    key_file = tmp_path / "nodes.keys"
    key_file.write_text(dump_keys(node_keys))
    keys = KeyFiles([key_file])
    membership = Membership.configured(HealingConfig(heartbeat_interval=0.05,
                                                     acceptable_pause=0.5))
    nodes = []
    try:
        for key in node_keys:
            signer = Signer(key, keyring=keys, exchange=amqp_names.exchange)
            nodes.append(Node(key.id, transport=amqp_names.connect(), signer=signer,
                              queue_prefix=amqp_names.queue_prefix, system_cells=(membership,),
                              watch_config=False).start())

        def views() -> dict[str, Any]:
            found = {}
            for node in nodes:
                cell = next(c for c in node.status()["cells"] if "members" in c)
                found[node.name] = {m["name"]: m["status"] for m in cell["members"]}
            return found

        wait_for(lambda: all(v == {"m-01": "alive", "m-02": "alive"} for v in views().values()),
                 20, what="each node to see both alive", show=views)
        assert all(not node.counters.refused for node in nodes)
    finally:
        for node in nodes:
            node.stop()



class DiesBeforeAck:
    """A node's transport that dies as a node would between its audit event and its ack: the
    first audit event it publishes goes out and is confirmed, but the delivery it audits is
    never settled (the test then closes the connection, as the node's death would)."""

    def __init__(self, inner: Any, name: str, died: list[str]) -> None:
        self.inner, self.name, self.died = inner, name, died

    def publish(self, routing_key: str, envelope: Envelope, **options: Any) -> None:
        if routing_key.startswith("event.audit.") and options.get("on_settled") is not None \
                and not self.died:
            self.died.append(self.name)
            options["on_settled"] = lambda: self.died.append("event confirmed")
        self.inner.publish(routing_key, envelope, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_node_that_dies_after_its_audit_event_but_before_its_ack_loses_no_event(trust) -> None:
    """The audit is at least once: the delivery is acked only once the broker has the event,
    so a node that dies between leaves the message to be redelivered, and the node that
    applies it audits it again, under the same message id, marked redelivered."""
    events = audit_watcher(trust)
    died: list[str] = []
    nodes: dict[str, Node] = {}
    try:
        for name in ("c-01", "c-02"):
            key = new_key(name, kind="node", node=name)
            trust.keys.paths[0].write_text(dump_keys([*trust.keys.keyring, key]))
            assert trust.keys.reload()
            signer = Signer(key, keyring=trust.keys, exchange=trust.names.exchange)
            transport = DiesBeforeAck(trust.names.connect(), name, died)
            nodes[name] = Node(name, transport=transport, signer=signer, role="ledger",
                               registry=RoleRegistry({"ledger": [Gullible]}),
                               queue_prefix=trust.names.queue_prefix, watch_config=False).start()
        client = trust.root_client()
        try:
            sent = client.send("role.ledger", "(add 5)")
            wait_for(lambda: "event confirmed" in died, 30, what="the first audit event confirmed",
                     show=lambda: died)
            first, survivor = died[0], next(n for n in nodes if n != died[0])
            dead = nodes.pop(first)
            dead.transport.inner.close()  # its death: the unacked delivery goes back
            dead.stop()
            [again] = audited(events, sent, node=survivor)
        finally:
            client.close()
        [before] = audited(events, sent, node=first)
    finally:
        for node in nodes.values():
            node.stop()
    assert (before["result"], before["redelivered"]) == ("applied", False)
    assert (again["result"], again["redelivered"]) == ("applied", True)
    assert before["message-id"] == again["message-id"] == sent
