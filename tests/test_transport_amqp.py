"""AmqpTransport on the real RabbitMQ: the conformance suite, plus what only AMQP shows."""

from __future__ import annotations

import subprocess
import threading

import pytest

from cellframe.errors import BrokerUnavailableError, BufferFullError, ConfigError, TransportError
from cellframe.testing import Collector, Connector, TransportConformance, wait_for
from cellframe.testing.amqp import raw_channel
from cellframe.transports.base import DEAD_LETTER_REASON
from cellframe.wire.envelope import Envelope

pytestmark = pytest.mark.amqp


class TestAmqpTransportConformance(TransportConformance):
    @pytest.fixture
    def connect(self, amqp_names):
        with Connector(amqp_names.connect) as connect:
            yield connect


@pytest.fixture
def queue(amqp_names):
    """``queue(label="q")``: a queue name for this test, deleted afterwards."""
    return lambda label="q": amqp_names.queue(label)


def bound_queue(t, name, key, **declare):
    t.declare_queue(name, **declare)
    t.bind(name, key)
    return name


# -- connecting ----------------------------------------------------------------------------


def test_fails_over_to_the_next_broker_address(amqp_names, queue):
    dead = "amqp://guest:guest@127.0.0.1:1/%2F"
    with amqp_names.connect([dead, amqp_names.url]) as t:
        assert t.connected
        assert any(":1" in address for address in t._link.errors)
        name = bound_queue(t, queue(), "role.web")
        collector = Collector()
        t.consume(name, collector)
        t.publish("role.web", Envelope(b"via the second address"))
        assert collector.wait(1)[0].envelope.body == b"via the second address"


def test_no_reachable_broker_is_broker_unavailable(amqp_names):
    dead = ["amqp://guest:guest@127.0.0.1:1/%2F", "amqp://guest:guest@127.0.0.1:2/%2F"]
    with pytest.raises(BrokerUnavailableError, match="127.0.0.1:2"):
        amqp_names.connect(dead, connect_timeout=0.5)


def test_connections_carry_the_configured_heartbeat(amqp_names):
    with amqp_names.connect(heartbeat=7, name=f"cf-hb-{amqp_names.token}"):
        out = subprocess.run(
            ["rabbitmqctl", "list_connections", "-q", "--no-table-headers", "timeout",
             "client_properties"], capture_output=True, text=True, timeout=30, check=True).stdout
    mine = [line for line in out.splitlines() if f"cf-hb-{amqp_names.token}" in line]
    assert [line.split("\t")[0] for line in mine] == ["7"]


@pytest.mark.parametrize("options", [{"max_in_flight": 0}, {"buffer_size": -1},
                                     {"heartbeat": 1.5}])
def test_bad_limits_are_config_errors(amqp_names, options):
    with pytest.raises(ConfigError):
        amqp_names.connect(**options)


def test_a_malformed_url_is_a_config_error(amqp_names):
    with pytest.raises(ConfigError, match="malformed"):
        amqp_names.connect("amqp://guest:guest@127.0.0.1:notaport/")


def test_a_clash_with_an_existing_exchange_is_a_transport_error(amqp_names):
    with raw_channel(amqp_names.url) as channel:
        channel.exchange_declare(amqp_names.topology["exchange"], "direct")
    with pytest.raises(TransportError, match="inequivalent arg 'type'"):
        amqp_names.connect()


# -- queues --------------------------------------------------------------------------------


def test_quorum_queue_dead_letters_a_poison_message_after_the_delivery_limit(
        amqp_connect, queue):
    t = amqp_connect(quorum=True, delivery_limit=2)
    name = bound_queue(t, queue("quorum"), "role.poison", durable=True)
    deliveries = Collector(settle=lambda d: d.reject(requeue=True))
    t.consume(name, deliveries)
    dead = Collector()
    t.consume(t.dead_letter_queue, dead)
    poison = Envelope(b"(poison)")
    t.publish("role.poison", poison)
    letter = dead.wait(1)[0].envelope
    assert letter.message_id == poison.message_id
    assert letter.headers[DEAD_LETTER_REASON] == "delivery_limit"
    # x-delivery-limit=2 dead-letters after the third delivery (services.md)
    assert [d.redelivered for d in deliveries.deliveries] == [False, True, True]


def test_quorum_queues_are_declared_as_quorum(amqp_connect, queue, amqp_names):
    t = amqp_connect(quorum=True, delivery_limit=4)
    name = queue("quorum-type")
    t.declare_queue(name, durable=True)
    expected = {"x-queue-type": "quorum", "x-delivery-limit": 4,
                "x-dead-letter-exchange": amqp_names.topology["dead_letter_exchange"],
                "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    with raw_channel(amqp_names.url) as channel:  # the broker refuses any inequivalent argument
        channel.queue_declare(name, durable=True, arguments=expected)


def test_classic_durable_queue_dead_letters_what_the_broker_rejects(
        amqp_connect, queue, amqp_names):
    t = amqp_connect()
    name = bound_queue(t, queue("classic"), "role.classic", durable=True)
    dead = Collector()
    t.consume(t.dead_letter_queue, dead)
    sent = Envelope(b"refused by a foreign consumer")
    t.publish("role.classic", sent)
    assert t.flush(5)
    with raw_channel(amqp_names.url) as channel:
        method = wait_for(lambda: channel.basic_get(name)[0], what="the message")
        channel.basic_reject(method.delivery_tag, requeue=False)
    assert dead.wait(1)[0].envelope.message_id == sent.message_id


def test_redeclaring_a_queue_with_other_flags_is_a_transport_error(amqp_connect, queue):
    t = amqp_connect()
    name = queue()
    t.declare_queue(name, durable=True)
    with pytest.raises(TransportError, match="durable"):
        t.declare_queue(name, durable=False)
    t.declare_queue(name, durable=True)  # the control channel recovered


def test_consuming_from_a_missing_queue_is_a_transport_error(amqp_connect, amqp_names):
    t = amqp_connect()
    with pytest.raises(TransportError, match="404"):
        t.consume(amqp_names.queue("ghost"), Collector())


@pytest.mark.parametrize("prefetch", [0, -1, 1.5, 70_000])
def test_bad_prefetch_is_a_config_error(amqp_connect, queue, prefetch):
    t = amqp_connect()
    name = queue()
    t.declare_queue(name)
    with pytest.raises(ConfigError, match="prefetch"):
        t.consume(name, Collector(), prefetch=prefetch)


# -- the wire ------------------------------------------------------------------------------


def test_envelope_fields_use_the_standard_amqp_properties(amqp_connect, queue, amqp_names):
    t = amqp_connect()
    name = bound_queue(t, queue(), "cell.props", durable=True)
    sent = Envelope(b"(x)", message_id="id-1", timestamp=1_700_000_000.75, reply_to="reply.me",
                    sender="web-01", headers={"k": "v"})
    t.publish("cell.props", sent, persistent=True)
    t.publish("cell.props", Envelope(b"transient"))
    assert t.flush(5)
    with raw_channel(amqp_names.url) as channel:
        _, persistent, body = _get(channel, name)
        _, transient, _ = _get(channel, name)
    assert body == b"(x)"
    assert (persistent.message_id, persistent.reply_to, persistent.app_id) == (
        "id-1", "reply.me", "web-01")
    assert persistent.timestamp == 1_700_000_000
    assert persistent.headers["k"] == "v"
    assert (persistent.delivery_mode, transient.delivery_mode) == (2, 1)


def _get(channel, name):
    return wait_for(lambda: (got := channel.basic_get(name, auto_ack=True))[0] and got,
                    what=f"a message on {name}")


def test_fields_too_long_for_amqp_properties_still_round_trip(amqp_connect, queue):
    t = amqp_connect()
    name = bound_queue(t, queue(), "cell.long")
    collector = Collector()
    t.consume(name, collector)
    sent = Envelope(b"", message_id="i" * 300, reply_to="r" * 300, sender="é" * 200,
                    headers={"bytes": b"\xff\x00", "flag": True, "none": None, "f": -0.0})
    t.publish("cell.long", sent)
    got = collector.wait(1)[0].envelope
    assert (got.message_id, got.reply_to, got.sender, got.headers) == (
        sent.message_id, sent.reply_to, sent.sender, sent.headers)
    assert str(got.headers["f"]) == "-0.0"


@pytest.mark.parametrize("headers, problem", [
    ({"list": [1, 2]}, "list"),
    ({"huge": 2**64}, "64 bits"),
    ({"x-cf-ts": "1"}, "reserved"),
    ({1: "x"}, "not a str"),
])
def test_headers_amqp_cannot_carry_are_refused_at_publish(amqp_connect, headers, problem):
    t = amqp_connect()
    with pytest.raises(TransportError, match=problem):
        t.publish("all", Envelope(b"", headers=headers))
    assert t.buffered == 0


def test_unroutable_reason_names_the_key_and_the_broker_reply(amqp_connect):
    t = amqp_connect()
    returned = []
    t.publish("cell.nobody", Envelope(b"x"), on_return=lambda e, r: returned.append(r))
    wait_for(lambda: returned)
    assert "cell.nobody" in returned[0] and "NO_ROUTE" in returned[0]
    assert t.stats()["returned"] == 1


# -- flush ---------------------------------------------------------------------------------


def test_flush_returns_once_the_broker_has_confirmed_what_was_published(amqp_connect, queue):  # noqa: F811
    t = amqp_connect(max_in_flight=1)  # one confirm at a time: 200 take many round trips
    bound_queue(t, queue(), "role.flushed")
    for i in range(200):
        t.publish("role.flushed", Envelope(b"%d" % i))
    assert not t.flush(0)  # confirms take time: flush gives up when its timeout runs out
    assert t.flush(10)
    assert (t.buffered, t.stats()["confirmed"]) == (0, 200)  # at once, without waiting more


def test_flush_returns_once_an_unroutable_messages_on_return_has_run(amqp_connect):  # noqa: F811
    t = amqp_connect()
    returned = []

    def slow_handler(envelope, reason):
        threading.Event().wait(0.2)  # a handler that takes its time: flush still waits for it
        returned.append(reason)

    t.publish("cell.nobody-at-all", Envelope(b"x"), on_return=slow_handler)
    assert t.flush(10)
    assert len(returned) == 1 and "NO_ROUTE" in returned[0]


def test_flush_on_an_inline_handler_is_refused_rather_than_deadlocking(amqp_connect, queue):  # noqa: F811
    t = amqp_connect()
    name = bound_queue(t, queue(), "role.inline-flush")
    outcome: list[BaseException | bool] = []

    def handler(delivery):
        try:
            outcome.append(t.flush(5))
        except TransportError as error:
            outcome.append(error)
        delivery.ack()

    t.consume(name, handler, inline=True)
    t.publish("role.inline-flush", Envelope(b"x"))
    wait_for(lambda: outcome, 30, what="the inline handler")
    assert isinstance(outcome[0], TransportError) and "I/O thread" in str(outcome[0])


def test_an_amqp_transport_is_a_context_manager_that_closes(amqp_names):  # noqa: F811
    with amqp_names.connect() as t:
        assert t.connected
    assert t.closed


# -- flow ----------------------------------------------------------------------------------


def test_a_full_buffer_raises_and_every_accepted_message_arrives(amqp_connect, queue):
    t = amqp_connect(buffer_size=3, max_in_flight=1)
    name = bound_queue(t, queue(), "role.flow")
    accepted, refused = [], 0
    for i in range(20_000):
        envelope = Envelope(b"%d" % i)
        try:
            t.publish("role.flow", envelope)
        except BufferFullError:
            refused += 1
            if refused >= 5:
                break
        else:
            accepted.append(envelope.message_id)
    assert refused >= 5
    collector = Collector()
    t.consume(name, collector)
    assert collector.wait(len(accepted))[-1].envelope.message_id == accepted[-1]
    assert sorted(collector.ids) == sorted(accepted)


def test_a_publisher_waiting_for_room_may_publish_again_once_confirms_come(amqp_connect, queue):
    t = amqp_connect(buffer_size=3, max_in_flight=1)
    bound_queue(t, queue(), "role.room")
    with pytest.raises(BufferFullError):
        for i in range(20_000):
            t.publish("role.room", Envelope(b"%d" % i))
    assert t.wait_for_room(10), f"no room after 10 s: {t.buffered} still buffered"
    t.publish("role.room", Envelope(b"again"))
    assert t.flush(10)


def test_acks_from_many_threads_are_all_applied(amqp_connect, queue):
    t, later = amqp_connect(), amqp_connect()
    name = bound_queue(t, queue(), "role.acks", durable=True)
    handed: list = []
    ready = threading.Condition()

    def hand_off(delivery):
        with ready:
            handed.append(delivery)
            ready.notify()

    def acker():
        while True:
            with ready:
                ready.wait_for(lambda: handed)
                delivery = handed.pop()
            if delivery is None:
                return
            delivery.ack()

    workers = [threading.Thread(target=acker) for _ in range(4)]
    for worker in workers:
        worker.start()
    tag = t.consume(name, hand_off, prefetch=50)
    acked = Collector()
    for i in range(500):
        t.publish("role.acks", Envelope(b"%d" % i))
    try:
        wait_for(lambda: t.stats()["confirmed"] == 500, what="all 500 confirmed")
        wait_for(lambda: not handed and _acked_all(t, 500), what="every delivery acked")
    finally:
        for _ in workers:
            hand_off(None)
        for worker in workers:
            worker.join(5)
    t.cancel(tag)  # anything not acked would now go back to the queue, ahead of the fence
    fence = Envelope(b"fence")
    later.consume(name, acked)
    t.publish("role.acks", fence)
    assert [d.envelope.message_id for d in acked.wait_for_id(fence.message_id)] == [
        fence.message_id]


def _acked_all(t, count: int) -> bool:
    return t.stats()["acked"] >= count


def test_close_lets_a_running_handler_finish_so_its_ack_counts(amqp_connect, queue, amqp_names):
    t = amqp_connect()
    name = bound_queue(t, queue(), "role.slow", durable=True)
    started, release = threading.Event(), threading.Event()

    def slow(delivery):
        started.set()
        release.wait(5)
        delivery.ack()

    t.consume(name, slow)
    t.publish("role.slow", Envelope(b"slow"))
    assert started.wait(5)
    closer = threading.Thread(target=t.close)
    closer.start()
    release.set()
    closer.join(10)
    assert not closer.is_alive()
    with raw_channel(amqp_names.url) as channel:
        assert channel.queue_declare(name, passive=True).method.message_count == 0


def test_cancel_and_close_from_inside_a_handler_do_not_deadlock(amqp_connect, queue):
    t = amqp_connect()
    name = bound_queue(t, queue(), "role.inside")
    done = threading.Event()
    tags: list[str] = []

    def cancel_then_close(delivery):
        delivery.ack()
        t.cancel(tags[0])
        t.close()
        done.set()

    tags.append(t.consume(name, cancel_then_close))
    t.publish("role.inside", Envelope(b"stop"))
    assert done.wait(10)
    assert t.closed and "closed" in repr(t)


def _unacknowledged(name: str) -> int | None:
    listed = subprocess.run(["rabbitmqctl", "list_queues", "--quiet", "--no-table-headers",
                             "name", "messages_unacknowledged"],
                            capture_output=True, text=True, timeout=30).stdout
    for line in listed.splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            return int(fields[1])
    return None


@pytest.mark.parametrize("inline", [False, True], ids=["worker-thread", "inline"])
def test_held_acks_reach_the_broker_without_more_traffic(amqp_connect, queue, inline):
    # Acks are coalesced into batches; a batch that never fills still goes out on its own,
    # whether the consumer's handler runs on a worker thread or inline on the I/O thread.
    t = amqp_connect()
    name = bound_queue(t, queue(), f"role.few-{inline}", durable=True)
    seen = Collector()  # acks each delivery
    t.consume(name, seen, prefetch=256, inline=inline)
    for i in range(3):
        t.publish(f"role.few-{inline}", Envelope(b"%d" % i))
    seen.wait(3)
    wait_for(lambda: _unacknowledged(name) == 0, timeout=20,
             what="the broker to hear the three acks")


def test_an_inline_handler_dead_letters_what_it_rejects(amqp_connect, queue):
    t = amqp_connect()
    name = bound_queue(t, queue(), "role.inline-reject")
    dead = Collector()
    t.consume(t.dead_letter_queue, dead)
    t.consume(name, lambda delivery: delivery.reject(reason="not wanted"), inline=True)
    sent = Envelope(b"refused inline")
    t.publish("role.inline-reject", sent)
    assert dead.wait(1)[0].envelope.message_id == sent.message_id


def test_write_coalescing_leaves_a_connection_it_does_not_recognise_alone() -> None:
    from cellframe.transports._amqp_writes import coalesce_writes

    class Elsewhere:  # e.g. an SSL transport, or a future pika's
        _transport = object()

    assert coalesce_writes(Elsewhere()) is False
    assert coalesce_writes(object()) is False


def test_this_pika_takes_the_one_step_paths_for_reads_and_writes(amqp_connect, queue):
    # They fall back to pika's own framing on a pika of another shape; this test says so
    # loudly instead of letting the transport quietly become slower after an upgrade.
    from cellframe.transports._amqp_reads import _Reader
    from cellframe.transports._amqp_writes import _publish_in_one_buffer

    t = amqp_connect()
    name = bound_queue(t, queue(), "role.paths")
    seen = Collector()
    t.consume(name, seen)
    t.publish("role.paths", Envelope(b"(ping)"))
    seen.wait(1)
    link = t._link
    assert isinstance(link._conn._on_data_available, _Reader)
    assert link._publish.func is _publish_in_one_buffer
