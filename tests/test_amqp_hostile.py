"""Hostile properties on the real RabbitMQ: raw pika publishes what its own encoder would not,
and the node that receives it dead-letters it with a reason, and keeps its connection, its
queue and its answers (issue 21, item 1). Then the decode guard alone, against random and
mutated property bytes.
"""

from __future__ import annotations

import datetime
import decimal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellframe import Client, Node, Symbol
from cellframe.healing.membership import HealingConfig, Membership
from cellframe.testing import wait_for
from cellframe.testing.amqp import AmqpNames, raw_channel
from cellframe.transports._amqp_wire import (
    Undecodable,
    UndecodableError,
    dead_letter_properties,
    decode_properties,
    from_amqp,
)
from cellframe.transports.base import DEAD_LETTER_REASON
from cellframe.wire.envelope import Envelope
from tests.hostile_amqp_support import BROKER_ACCEPTS, RawProperties
from tests.node_support import Tally, registry

PING_WITHIN = 2.0  # seconds: a pong takes milliseconds; this allows for a loaded machine


class Attacker:
    """A plain pika connection that publishes crafted property bytes on the control exchange."""

    def __init__(self, names: AmqpNames) -> None:
        self.exchange = names.topology["exchange"]
        self.connection = pika.BlockingConnection(pika.URLParameters(names.url))
        self.channel = self.connection.channel()

    def publish(self, routing_key: str, raw: bytes, body: bytes = b"(ping)") -> None:
        self.channel.basic_publish(self.exchange, routing_key, body, RawProperties(raw))

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def attacker(amqp_names: AmqpNames) -> Iterator[Attacker]:
    attacker = Attacker(amqp_names)
    yield attacker
    attacker.close()


@pytest.fixture
def node_and_client(amqp_names: AmqpNames) -> Iterator[tuple[Node, Client, str]]:
    prefix = f"cf-test.{amqp_names.token}."
    node = Node(f"hostile-{uuid.uuid4().hex[:6]}", transport=amqp_names.connect(),
                registry=registry(), role="tally", queue_prefix=prefix).start()
    client_transport = amqp_names.connect()
    client = Client(client_transport, queue_prefix=prefix)
    yield node, client, prefix
    client.close()
    node.stop()
    node.transport.close()
    client_transport.close()
    with raw_channel(amqp_names.url) as channel:
        channel.queue_delete(f"{prefix}role.tally")


def _dead_letters(names: AmqpNames, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Wait for ``count`` messages on this test's dead-letter queue; their headers."""
    found: list[dict[str, Any]] = []
    with raw_channel(names.url) as channel:
        def arrived() -> bool:
            while len(found) < count:
                method, properties, _body = channel.basic_get(names.topology["dead_letter_queue"],
                                                              auto_ack=True)
                if method is None:
                    return False
                found.append(properties.headers or {})
            return True

        wait_for(arrived, timeout, what=f"{count} dead letters (have {len(found)})")
    return found


def _pong_within(client: Client, node: Node, seconds: float) -> float:
    """Ping ``node`` and return how long the pong took; fail if longer than ``seconds``."""
    before = len(client.replies)
    started = time.monotonic()
    client.send(f"node.{node.name}", "(ping)")

    def ponged() -> bool:
        return any(reply.expr[:1] == [Symbol("pong")] for reply in client.replies[before:])

    wait_for(ponged, seconds, what=f"a pong from {node.name} within {seconds} s")
    return time.monotonic() - started


def _still_held(names: AmqpNames, queue: str) -> None:
    """Assert that exclusive ``queue`` exists and another connection (its node's) holds it:
    the broker answers a passive declare with 405 RESOURCE_LOCKED, not 404 NOT_FOUND."""
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        with raw_channel(names.url) as channel:
            channel.queue_declare(queue, passive=True)
    assert refused.value.reply_code == 405, refused.value


def _connection_unbroken(node: Node) -> None:
    stats = node.transport.stats()  # type: ignore[attr-defined]
    assert (stats["connections"], stats["reconnects"]) == (1, 0), stats


def test_undecodable_properties_on_a_nodes_own_queue_are_dead_lettered_and_cost_it_nothing(
        amqp_names: AmqpNames, attacker: Attacker,
        node_and_client: tuple[Node, Client, str]) -> None:
    node, client, _prefix = node_and_client
    _pong_within(client, node, 10.0)  # warm: the reply queue and the node answer
    for name, raw in BROKER_ACCEPTS.items():
        attacker.publish(f"node.{node.name}", raw)
        assert _pong_within(client, node, PING_WITHIN) < PING_WITHIN, name
    # A body in several frames is read by pika's framing: the guard is there too.
    attacker.publish(f"node.{node.name}", BROKER_ACCEPTS["table nested 3,000 deep"],
                     body=b"x" * 300_000)
    letters = _dead_letters(amqp_names, len(BROKER_ACCEPTS) + 1)
    reasons = [str(headers[DEAD_LETTER_REASON]) for headers in letters]
    assert all(reason.startswith(("undecodable AMQP properties", "routing key"))
               for reason in reasons), reasons
    assert any("OverflowError" in reason for reason in reasons)
    assert any("RecursionError" in reason for reason in reasons)
    assert sum("nested deeper than 16" in reason for reason in reasons) == 1
    _connection_unbroken(node)
    assert node.transport.stats()["undecodable"] == len(BROKER_ACCEPTS) + 1  # type: ignore[attr-defined]
    _still_held(amqp_names, node.queue)
    client.send(f"node.{node.name}", "(status)")
    wait_for(lambda: any(r.expr[:1] == [Symbol("node-status")] for r in client.replies), 20,
             what="a status reply")


def test_undecodable_properties_on_a_durable_role_queue_are_no_poison(
        amqp_names: AmqpNames, attacker: Attacker,
        node_and_client: tuple[Node, Client, str]) -> None:
    node, client, _prefix = node_and_client
    for raw in BROKER_ACCEPTS.values():
        attacker.publish("role.tally", raw, body=b"(add 100)")
    client.send("role.tally", "(add 5)")
    tally = next(cell for cell in node.cells().values() if isinstance(cell, Tally))
    wait_for(lambda: tally.total == 5, 30, what="(add 5) applied after the attacks")
    letters = _dead_letters(amqp_names, len(BROKER_ACCEPTS))
    assert all(str(h[DEAD_LETTER_REASON]).startswith("undecodable AMQP properties")
               for h in letters)
    _connection_unbroken(node)
    assert _pong_within(client, node, PING_WITHIN) < PING_WITHIN


def test_a_routing_key_that_is_not_utf8_is_dead_lettered_with_the_key(
        amqp_names: AmqpNames, attacker: Attacker,
        node_and_client: tuple[Node, Client, str]) -> None:
    node, client, _prefix = node_and_client
    node.transport.bind(node.queue, "event.#")
    # pika encodes a bytes routing key as it is; the broker routes it as it routes any key.
    attacker.channel.basic_publish(attacker.exchange, b"event.\xff\xfe", b"(ping)",  # type: ignore[arg-type]
                                   pika.BasicProperties(message_id="bad-key"))
    (letter,) = _dead_letters(amqp_names, 1)
    assert "is not UTF-8" in str(letter[DEAD_LETTER_REASON])
    _connection_unbroken(node)
    assert _pong_within(client, node, PING_WITHIN) < PING_WITHIN


def test_a_dead_letter_keeps_the_foreign_headers_pika_can_send_and_names_the_rest() -> None:
    headers = {"x-death": [{"count": 1, "time": datetime.datetime(2024, 1, 1)}],
               "price": decimal.Decimal("1.5"), "x-cf-forged": "by someone", "plain": "kept"}
    copy, properties = dead_letter_properties(Envelope(b"(ping)", headers=headers), "refused")
    assert b"".join(properties.encode())  # pika can write it
    assert properties.headers["x-death"] == headers["x-death"]
    assert properties.headers["price"] == decimal.Decimal("1.5")
    assert properties.headers["plain"] == "kept"
    assert "x-cf-forged" not in properties.headers
    assert properties.headers[DEAD_LETTER_REASON] == "refused (headers dropped: x-cf-forged)"


def _view(node: Node) -> dict[str, dict[str, Any]]:
    for cell in node.status()["cells"]:
        if "members" in cell:
            return {member["name"]: member for member in cell["members"]}
    raise AssertionError(f"{node.name} hosts no membership cell")


def test_a_node_under_attack_keeps_its_standing_with_its_peers(
        amqp_names: AmqpNames, attacker: Attacker) -> None:
    prefix = f"cf-test.{amqp_names.token}."
    healing = HealingConfig(heartbeat_interval=0.05, acceptable_pause=0.5, reconcile=False)
    membership = Membership.configured(healing)
    token = uuid.uuid4().hex[:6]
    nodes = [Node(f"{side}-{token}", transport=amqp_names.connect(), queue_prefix=prefix,
                  system_cells=(membership,)).start() for side in ("target", "peer")]
    target, peer = nodes
    try:
        wait_for(lambda: _view(peer).get(target.name, {}).get("status") == "alive", 30,
                 what=f"{peer.name} to see {target.name} alive")
        incarnation = _view(peer)[target.name]["incarnation"]
        seen: set[str] = set()
        for _ in range(3):
            for raw in BROKER_ACCEPTS.values():
                attacker.publish(f"node.{target.name}", raw)
                seen.add(_view(peer)[target.name]["status"])
        deadline = time.monotonic() + 1.0  # past the acceptable pause: a dropped node is down
        while time.monotonic() < deadline:
            seen.add(_view(peer)[target.name]["status"])
            time.sleep(0.02)
        assert seen == {"alive"}
        assert _view(peer)[target.name]["incarnation"] == incarnation
        assert target.transport.stats()["undecodable"] == 3 * len(BROKER_ACCEPTS)  # type: ignore[attr-defined]
        _connection_unbroken(target)
    finally:
        for node in nodes:
            node.stop()
            node.transport.close()


# -- the decode guard alone, against random and mutated bytes --------------------------------------

_leaves = st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.booleans(),
                    st.binary(max_size=20), st.none(),
                    st.datetimes(min_value=datetime.datetime(1970, 1, 2)),
                    st.decimals(allow_nan=False, allow_infinity=False, places=2,
                                min_value=-1000, max_value=1000))
_tables = st.recursive(
    st.dictionaries(st.text(max_size=8), _leaves, max_size=4),
    lambda inner: st.dictionaries(st.text(max_size=8), st.one_of(_leaves, inner,
                                                                 st.lists(inner, max_size=3)),
                                  max_size=4),
    max_leaves=20)


@st.composite
def _property_bytes(draw: st.DrawFn) -> bytes:
    """Property bytes pika writes for random properties, then mutated: bytes flipped,
    inserted (field types among them), deleted, or the whole cut short."""
    properties = pika.BasicProperties(
        message_id=draw(st.none() | st.text(max_size=30)),
        app_id=draw(st.none() | st.text(max_size=30)),
        timestamp=draw(st.none() | st.integers(0, 2**63 - 1)),
        headers=draw(st.none() | _tables))
    try:
        data = bytearray(b"".join(properties.encode()))
    except Exception:  # pika refused its own value (a name over 255 bytes)
        data = bytearray(draw(st.binary(max_size=64)))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        byte = draw(st.sampled_from(b"TFADdfslxSVtbBuUiIL\x00\xff\x7f") | st.integers(0, 255))
        if action == "flip" and at < len(data):
            data[at] = byte
        elif action == "insert":
            data[at:at] = bytes([byte]) * draw(st.integers(1, 8))
        elif action == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        else:
            del data[at:]
    return bytes(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_property_bytes(), st.binary(max_size=300)))
def test_any_property_bytes_decode_or_become_a_reason_and_whatever_decodes_can_be_dead_lettered(
        data: bytes) -> None:
    properties = decode_properties(data)  # never raises
    assert isinstance(properties, pika.BasicProperties)
    try:
        envelope = from_amqp(properties, b"(ping)")
    except UndecodableError as refused:
        assert str(refused).startswith("undecodable AMQP properties")
        envelope = Envelope(b"(ping)")  # what the consumer dead-letters instead
    else:
        assert not isinstance(properties, Undecodable)
        for field in (envelope.message_id, envelope.reply_to, envelope.sender):
            assert field is None or type(field) is str
        assert all(type(key) is str for key in envelope.headers)
    _copy, dead = dead_letter_properties(envelope, "refused")
    assert b"".join(dead.encode())


def test_the_attacks_the_broker_accepts_are_each_refused_by_the_guard() -> None:
    for name, raw in BROKER_ACCEPTS.items():
        with pytest.raises(UndecodableError):
            from_amqp(decode_properties(raw), b"")
            pytest.fail(f"{name} was not refused")


def test_sound_properties_pass_the_guard_unchanged() -> None:
    properties = pika.BasicProperties(message_id="m1", app_id="n1", timestamp=5,
                                      headers={"x-cf-ts": "5.5", "n": 3,
                                               "x-death": [{"count": 1}]})
    decoded = decode_properties(b"".join(properties.encode()))
    assert not isinstance(decoded, Undecodable)
    envelope = from_amqp(decoded, b"x")
    assert (envelope.message_id, envelope.sender, envelope.timestamp) == ("m1", "n1", 5.5)
    assert envelope.headers == {"n": 3, "x-death": [{"count": 1}]}
