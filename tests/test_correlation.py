"""Call-backs name the message they answer (correlation id), and cellframe text says what it
is (content type): on both transports, for answers and errors alike."""

from __future__ import annotations

import uuid
from typing import Any

import pika
import pytest

from cellframe import Client, Envelope, Keyword, RoleRegistry, Symbol
from cellframe.testing import AmqpNames, wait_for
from cellframe.testing.amqp import raw_channel
from cellframe.transports._amqp_wire import from_amqp, to_amqp
from cellframe.transports.base import DEAD_LETTER_REASON
from cellframe.wire.envelope import CONTENT_TYPE, is_cellframe_content
from tests.node_support import Wire
from tests.process_cells import Echo, Relay


def _answers(client: Client, message_id: str, count: int = 1) -> list[Any]:
    return wait_for(lambda: (found := client.answers(message_id)) and len(found) >= count
                    and found, 30, what=f"{count} answer(s) to {message_id}",
                    show=lambda: [(r.correlation_id, r.text) for r in client.replies])


def test_a_cells_call_back_carries_the_id_of_the_message_it_answers(wire: Wire) -> None:
    node = wire.node(f"tally-{uuid.uuid4().hex[:6]}", role="tally")
    client = wire.client()
    client.send(f"node.{node.name}", "(add 2)", expect_reply=False)
    first = client.send(f"node.{node.name}", "(total)")
    second = client.send(f"node.{node.name}", "(total)")
    [answer] = _answers(client, first)
    assert answer.expr[0] == Symbol("total") and answer.correlation_id == first
    assert [r.correlation_id for r in _answers(client, second)] == [second]
    assert client.wait_for_answers(first, 1, 0.0) == [answer]


def test_errors_name_the_message_they_answer_from_the_node_and_from_a_cell(wire: Wire) -> None:
    node = wire.node(f"tally-{uuid.uuid4().hex[:6]}", role="tally")
    client = wire.client()
    # The node refuses what it cannot read, before any cell: its error names the message.
    bad_id = _send_raw_text(client, f"node.{node.name}", b"(add")
    [refused] = _answers(client, bad_id)
    assert refused.expr[:5] == [Symbol("error"), Keyword("node"), node.name, Keyword("id"),
                                bad_id]
    # A cell whose action fails calls back an error that names the message too.
    failing = client.send(f"node.{node.name}", '(add "not a number")')
    [failed] = _answers(client, failing)
    assert failed.expr[0] == Symbol("error") and failed.correlation_id == failing


def _send_raw_text(client: Client, key: str, body: bytes) -> str:
    """Publish ``body`` as-is (not read first) from ``client``, asking for a call-back."""
    envelope = Envelope(body, reply_to=client.reply_to, sender=client.name)
    client.transport.publish(key, envelope)
    return envelope.message_id


def test_correlation_ids_and_the_content_type_travel_as_amqp_intends(
        amqp_names: AmqpNames) -> None:
    short, long = "c" * 40, "é" * 200  # 400 bytes: past an AMQP short string
    for correlation in (short, long, None):
        sent = Envelope(b"(pong)", correlation_id=correlation)
        properties = to_amqp(sent, persistent=False)
        assert properties.content_type == CONTENT_TYPE
        assert properties.correlation_id == (correlation if correlation != long else None)
        back = from_amqp(properties, sent.body)
        assert (back.correlation_id, back.content_type) == (correlation, CONTENT_TYPE)
    # On the broker: a raw AMQP consumer sees the standard properties.
    queue = f"{amqp_names.queue_prefix}corr-{uuid.uuid4().hex[:6]}"
    transport = amqp_names.connect()
    try:
        transport.declare_queue(queue)
        transport.bind(queue, "reply.corr")
        transport.publish("reply.corr", Envelope(b"(pong)", correlation_id=short))
        assert transport.flush(10)
        with raw_channel(amqp_names.url) as channel:
            got = wait_for(lambda: channel.basic_get(queue, auto_ack=True)[1], 30,
                           what=f"the message on {queue}")
        assert (got.correlation_id, got.content_type) == (short, CONTENT_TYPE)
    finally:
        transport.delete_queue(queue)
        transport.close()


@pytest.mark.parametrize("content_type, accepted", [
    (None, True),
    (CONTENT_TYPE, True),
    ("Application/VND.cellframe.sexp; charset=UTF-8", True),
    ('application/vnd.cellframe.sexp;charset="utf-8"', True),
    ("application/vnd.cellframe.sexp; charset=latin-1", False),
    ("application/vnd.cellframe.sexp; version=2", False),
    ("application/json", False),
    ("", False),
])
def test_cellframe_text_is_told_by_its_media_type(content_type: str | None,
                                                  accepted: bool) -> None:
    assert is_cellframe_content(content_type) is accepted


def test_a_delivery_of_a_foreign_content_type_is_dead_lettered_with_the_reason(
        amqp_names: AmqpNames) -> None:
    wire = Wire.on_rabbitmq(amqp_names)
    try:
        node = wire.node(f"tally-{uuid.uuid4().hex[:6]}", role="tally")
        client = wire.client()
        with raw_channel(amqp_names.url) as channel:
            channel.basic_publish(amqp_names.topology["exchange"], f"node.{node.name}",
                                  b'{"add": 1}', pika.BasicProperties(
                                      content_type="application/json", message_id="json-1",
                                      reply_to=client.reply_to))
            letter = wait_for(
                lambda: channel.basic_get(amqp_names.topology["dead_letter_queue"],
                                          auto_ack=True)[1], 30, what="the dead letter")
        reason = str(letter.headers[DEAD_LETTER_REASON])
        assert "foreign content type 'application/json'" in reason and node.name in reason
        [refused] = _answers(client, "json-1")
        assert refused.expr[0] == Symbol("error")
        assert node.counters.rejected == 1
        # Cellframe's own messages, with or without a content type, are read as before.
        ping = client.send(f"node.{node.name}", "(ping)")
        assert _answers(client, ping)[0].expr[0] == Symbol("pong")
    finally:
        wire.close()


def test_a_forwarded_request_is_answered_under_the_original_requests_id(wire: Wire) -> None:
    registry = RoleRegistry({"relay": [Relay], "echo": [Echo]})
    relay = wire.node(f"relay-{uuid.uuid4().hex[:6]}", role="relay", registry=registry)
    echo = wire.node(f"echo-{uuid.uuid4().hex[:6]}", role="echo", registry=registry)
    client = wire.client()
    asked = client.send(f"cell.{relay.name}", [Symbol("relay"), echo.name, "across"])
    [answer] = _answers(client, asked)
    assert answer.expr == [Symbol("echoed"), "across", echo.name]
    assert answer.sender == echo.name  # answered by the cell the request was forwarded to
