"""The transport's own framing agrees with pika's: deliveries read in one step
(``_amqp_reads``) give consumers exactly what pika's frame-by-frame reading gives them, however
the bytes are split into reads; publishes marshalled in one buffer (``_amqp_writes``) are the
bytes pika's ``basic_publish`` sends.

The connections here have no socket: the bytes a broker would send are fed to
``_on_data_available`` directly, and what a connection sends is collected. Both paths running
for real, against RabbitMQ, are covered by every AMQP test (each transport installs them).
"""

from __future__ import annotations

from typing import Any

import pika
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pika import frame, spec
from pika.channel import Channel
from pika.connection import Connection

from cellframe.transports._amqp_consumer import ConsumerState, Settle
from cellframe.transports._amqp_reads import read_deliveries
from cellframe.transports._amqp_wire import Undecodable, UndecodableError, from_amqp
from cellframe.transports._amqp_writes import publisher
from tests.hostile_amqp_support import BROKER_ACCEPTS, FRAME_ONLY, header_frames

FRAME_MAX = 4096
TAG = "consumer-1"


class _Socketless(Connection):
    """A pika connection that is open, sends nowhere, and reads only what a test feeds it."""

    def __init__(self) -> None:
        super().__init__(pika.ConnectionParameters(frame_max=FRAME_MAX),
                         internal_connection_workflow=False)
        self.connection_state = self.CONNECTION_OPEN
        self._body_max_length = FRAME_MAX - 8
        self.sent: list[bytes] = []

    def _adapter_call_later(self, delay: float, callback: Any) -> object:
        return object()

    def _adapter_remove_timeout(self, timeout_id: object) -> None:
        pass

    def _adapter_add_callback_threadsafe(self, callback: Any) -> None:
        pass

    def _adapter_connect_stream(self) -> None:
        pass

    def _adapter_disconnect_stream(self) -> None:
        pass

    def _adapter_emit_data(self, data: bytes) -> None:
        self.sent.append(data)

    def consuming(self, channel_number: int, tags: tuple[str, ...] = (TAG,)) -> list[tuple]:
        """Open channel ``channel_number`` with consumers ``tags``; return what they see."""
        seen: list[tuple] = []
        channel = Channel(self, channel_number, lambda _channel: None)
        channel._set_state(Channel.OPEN)
        self._channels[channel_number] = channel
        for tag in tags:
            channel._consumers[tag] = lambda ch, method, props, body, tag=tag: seen.append(
                (tag, ch.channel_number, method.delivery_tag, method.redelivered,
                 method.exchange, method.routing_key, dict(vars(props)), body))
        return seen


def _delivery(channel: int, tag: int, body: bytes, *, consumer: str = TAG,
              routing_key: str = "cell.a", redelivered: bool = False,
              headers: dict[str, Any] | None = None) -> bytes:
    """The frames a broker sends for one delivery, as pika itself marshals them."""
    method = spec.Basic.Deliver(consumer_tag=consumer, delivery_tag=tag, redelivered=redelivered,
                                exchange="control", routing_key=routing_key)
    properties = pika.BasicProperties(message_id=f"m{tag}", app_id="sender", timestamp=tag,
                                      headers=headers or {"x-cf-ts": "1.5"}, delivery_mode=1)
    parts = [frame.Method(channel, method).marshal(),
             frame.Header(channel, len(body), properties).marshal()]
    for start in range(0, len(body), FRAME_MAX - 8):
        parts.append(frame.Body(channel, body[start:start + FRAME_MAX - 8]).marshal())
    return b"".join(parts)


def _feed(stream: bytes, cuts: list[int], *, fast: bool,
          setup: Any = None) -> tuple[list[tuple], _Socketless]:
    connection = _Socketless()
    seen = connection.consuming(1, (TAG, "other"))
    if setup is not None:
        setup(connection)
    if fast:
        assert read_deliveries(connection)
    previous = 0
    for cut in sorted(set(cuts)) + [len(stream)]:
        if previous < cut <= len(stream):
            connection._on_data_available(stream[previous:cut])
            previous = cut
    return seen, connection


def _same_as_pika(stream: bytes, cuts: list[int], setup: Any = None) -> list[tuple]:
    stock, stock_connection = _feed(stream, cuts, fast=False, setup=setup)
    fast, fast_connection = _feed(stream, cuts, fast=True, setup=setup)
    assert fast == stock
    assert fast_connection.frames_received == stock_connection.frames_received
    assert fast_connection.bytes_received == stock_connection.bytes_received
    assert fast_connection._frame_buffer == stock_connection._frame_buffer
    return fast


_bodies = st.one_of(st.binary(max_size=300), st.binary(min_size=FRAME_MAX, max_size=3 * FRAME_MAX))
_messages = st.lists(st.tuples(_bodies, st.sampled_from([TAG, "other", "unknown"]),
                               st.booleans()), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(messages=_messages, cuts=st.lists(st.integers(min_value=0, max_value=40_000), max_size=8),
       heartbeat_after=st.integers(min_value=-1, max_value=12))
def test_consumers_see_what_pika_gives_them_however_the_bytes_arrive(messages, cuts,
                                                                     heartbeat_after):
    parts = []
    for i, (body, consumer, redelivered) in enumerate(messages, start=1):
        parts.append(_delivery(1, i, body, consumer=consumer, redelivered=redelivered))
        if i == heartbeat_after:
            parts.append(frame.Heartbeat().marshal())
    seen = _same_as_pika(b"".join(parts), cuts)
    assert [entry[2] for entry in seen] == [
        i for i, (_, consumer, _) in enumerate(messages, start=1) if consumer != "unknown"]


def test_deliveries_in_one_read_reach_the_consumer_in_order_with_every_field():
    stream = b"".join(_delivery(1, i, f"(add {i})".encode(), redelivered=i == 2,
                                routing_key=f"role.r{i}", headers={"x-cf-ts": "2.5", "n": i})
                      for i in range(1, 4))
    seen = _same_as_pika(stream, [])
    assert [(tag, redelivered, key, body) for _, _, tag, redelivered, _, key, _, body in seen] \
        == [(1, False, "role.r1", b"(add 1)"), (2, True, "role.r2", b"(add 2)"),
            (3, False, "role.r3", b"(add 3)")]
    assert seen[0][6]["headers"] == {"x-cf-ts": "2.5", "n": 1}
    assert seen[0][6]["message_id"] == "m1"


def test_an_empty_body_is_a_delivery_of_two_frames():
    seen = _same_as_pika(_delivery(1, 7, b""), [])
    assert [(entry[2], entry[7]) for entry in seen] == [(7, b"")]


def test_a_cancelled_consumer_gets_nothing_and_pika_rejects_the_delivery():
    def cancel(connection: _Socketless) -> None:
        connection._channels[1]._cancelled.add(TAG)

    stock, stock_connection = _feed(_delivery(1, 9, b"x"), [], fast=False, setup=cancel)
    fast, fast_connection = _feed(_delivery(1, 9, b"x"), [], fast=True, setup=cancel)
    assert stock == fast == []
    assert fast_connection.sent == stock_connection.sent != []  # the basic.reject


def test_frames_of_another_channel_between_a_delivery_go_the_slow_way_unchanged():
    first = _delivery(1, 1, b"one")
    method_end = first.index(b"\xce") + 1
    other = _delivery(2, 1, b"two")
    stream = first[:method_end] + other + first[method_end:]

    def second_channel(connection: _Socketless) -> None:
        connection.extra = connection.consuming(2)

    stock, stock_connection = _feed(stream, [], fast=False, setup=second_channel)
    fast, fast_connection = _feed(stream, [], fast=True, setup=second_channel)
    assert fast == stock and [entry[7] for entry in fast] == [b"one"]
    assert fast_connection.extra == stock_connection.extra
    assert [entry[7] for entry in fast_connection.extra] == [b"two"]


def test_a_bad_frame_end_is_pikas_invalid_frame_error():
    stream = bytearray(_delivery(1, 1, b"body"))
    stream[-1] = 0
    with pytest.raises(pika.exceptions.InvalidFrameError):
        _feed(bytes(stream), [], fast=True)


def test_a_consumer_that_raises_never_gets_the_same_delivery_again():
    connection = _Socketless()
    calls: list[int] = []

    def explode(channel: Any, method: Any, properties: Any, body: bytes) -> None:
        calls.append(method.delivery_tag)
        raise RuntimeError("handler bug")

    connection.consuming(1)
    connection._channels[1]._consumers[TAG] = explode
    read_deliveries(connection)
    with pytest.raises(RuntimeError):
        connection._on_data_available(_delivery(1, 1, b"a") + _delivery(1, 2, b"b"))
    with pytest.raises(RuntimeError):
        connection._on_data_available(b"")
    connection._on_data_available(b"")
    assert calls == [1, 2]
    assert connection._frame_buffer == b""


def test_a_connection_of_another_shape_is_left_alone():
    class Elsewhere:
        _on_data_available = None

    assert read_deliveries(Elsewhere()) is False
    assert read_deliveries(object()) is False


# -- properties that cannot be decoded (issue 21, item 1) --------------------------------------


def _hostile_stream(raw: bytes, body: bytes) -> bytes:
    """A delivery whose content header carries property bytes ``raw``, then a sound one."""
    method = spec.Basic.Deliver(consumer_tag=TAG, delivery_tag=1, redelivered=False,
                                exchange="control", routing_key="cell.a")
    return (frame.Method(1, method).marshal() + header_frames(1, raw, body, FRAME_MAX)
            + _delivery(1, 2, b"(after)"))


@pytest.mark.parametrize("name", sorted({**BROKER_ACCEPTS, **FRAME_ONLY}))
@pytest.mark.parametrize("body", [b"(ping)", b"x" * (3 * FRAME_MAX)], ids=["one-step", "by-frame"])
def test_undecodable_properties_reach_the_consumer_as_a_reason_and_the_next_delivery_follows(
        name: str, body: bytes) -> None:
    raw = {**BROKER_ACCEPTS, **FRAME_ONLY}[name]
    stream = _hostile_stream(raw, body)
    for cuts in ([], list(range(0, len(stream), 7))):  # in one read, and a few bytes at a time
        connection = _Socketless()
        handed: list[tuple[int, Any, bytes]] = []
        connection.consuming(1)
        connection._channels[1]._consumers[TAG] = (
            lambda ch, method, props, b, handed=handed: handed.append(
                (method.delivery_tag, props, b)))
        assert read_deliveries(connection)
        previous = 0
        for cut in [*cuts, len(stream)]:
            connection._on_data_available(stream[previous:cut])
            previous = cut
        assert [(tag, data) for tag, _, data in handed] == [(1, body), (2, b"(after)")]
        first, second = handed[0][1], handed[1][1]
        if isinstance(first, Undecodable):
            assert first.reason and first.message_id is None and first.headers is None
            with pytest.raises(UndecodableError, match="undecodable AMQP properties"):
                from_amqp(first, body)
        else:  # pika decoded it: cellframe refuses what it carries
            with pytest.raises(UndecodableError):
                from_amqp(first, body)
        assert second.message_id == "m2"
        assert connection._frame_buffer == b""


def test_a_routing_key_that_is_not_utf8_is_refused_before_the_handler() -> None:
    settled: list[tuple[Settle, str]] = []
    handled: list[Any] = []
    consumer = ConsumerState("t", "q", handled.append, 10,
                             lambda c, ch, tag, how, env, reason: settled.append((how, reason)),
                             inline=True)
    channel = object()
    method = spec.Basic.Deliver(consumer_tag="t", delivery_tag=1, redelivered=False,
                                exchange="control", routing_key="x")
    method.routing_key = b"event.down.\xff"  # how pika leaves a key that is not UTF-8
    consumer.on_message(channel, method, pika.BasicProperties(), b"(ping)")
    assert handled == []
    ((how, reason),) = settled
    assert how is Settle.UNDECODABLE
    assert reason.startswith("routing key b'event.down.\\xff' is not UTF-8 text")


# -- publishes ---------------------------------------------------------------------------------

_names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
_header_values = st.one_of(st.text(max_size=80), st.integers(-(2**63), 2**63 - 1), st.booleans(),
                           st.binary(max_size=40), st.none())


@settings(max_examples=300, deadline=None)
@given(exchange=_names, routing_key=_names,
       body=st.one_of(st.binary(max_size=300), st.binary(min_size=FRAME_MAX - 10,
                                                         max_size=3 * FRAME_MAX)),
       headers=st.one_of(st.none(), st.dictionaries(st.text(min_size=1, max_size=20),
                                                    _header_values, max_size=4)),
       message_id=st.one_of(st.none(), st.text(max_size=60)),
       timestamp=st.one_of(st.none(), st.integers(0, 2**63 - 1)),
       persistent=st.booleans())
def test_a_publish_in_one_buffer_is_the_bytes_pika_sends(exchange, routing_key, body, headers,
                                                         message_id, timestamp, persistent):
    properties = pika.BasicProperties(headers=headers, message_id=message_id, timestamp=timestamp,
                                      delivery_mode=2 if persistent else 1, app_id="sender")
    stock, fast = _Socketless(), _Socketless()
    for connection in (stock, fast):
        connection.consuming(1)
    stock._channels[1].basic_publish(exchange, routing_key, body, properties, mandatory=True)
    publisher(fast._channels[1])(exchange, routing_key, body, properties)
    assert fast.sent == [b"".join(stock.sent)]
    assert (fast.bytes_sent, fast.frames_sent) == (stock.bytes_sent, stock.frames_sent)


def test_a_publish_on_a_closed_channel_is_pikas_wrong_state_error():
    connection = _Socketless()
    connection.consuming(1)
    channel = connection._channels[1]
    channel._set_state(Channel.CLOSED)
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        publisher(channel)("control", "cell.a", b"x", pika.BasicProperties())
    assert connection.sent == []


def test_a_name_longer_than_a_short_string_is_refused_before_anything_is_sent():
    connection = _Socketless()
    connection.consuming(1)
    with pytest.raises(ValueError, match="short string"):
        publisher(connection._channels[1])("control", "k" * 256, b"x", pika.BasicProperties())
    assert connection.sent == []


def test_a_channel_of_another_shape_publishes_through_basic_publish():
    class Elsewhere:
        def __init__(self) -> None:
            self.published: list[tuple] = []

        def basic_publish(self, *args: Any, **kwargs: Any) -> None:
            self.published.append((args, kwargs))

    channel = Elsewhere()
    publisher(channel)("control", "cell.a", b"x", None)
    assert channel.published == [(("control", "cell.a", b"x", None), {"mandatory": True})]
