"""AmqpTransport when the broker drops its connection: it reconnects and nothing is lost.

The connections are closed broker-side with ``rabbitmqctl close_connection`` (only this
test's, found by connection name), as the broker does on a node restart or a network cut.
"""

from __future__ import annotations

import subprocess
import threading

import pytest

from cellframe.errors import BufferFullError
from cellframe.testing import Collector, holds_for, wait_for
from cellframe.transports.base import RESENT_HEADER
from cellframe.wire.envelope import Envelope
from tests.amqp_support import close_connections

pytestmark = [pytest.mark.amqp, pytest.mark.slow]


@pytest.fixture
def durable_queue(amqp_names):
    """A queue name of this test's own, deleted afterwards."""
    return amqp_names.queue("stream")


class Recorder:
    """A handler that records every message id it sees (duplicates included) and acks."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.redelivered = 0
        self.resent: set[str] = set()  # ids of copies the publisher marked as sent again
        self._lock = threading.Lock()

    def __call__(self, delivery) -> None:
        with self._lock:
            self.ids.append(delivery.envelope.message_id)
            self.redelivered += delivery.redelivered
            if RESENT_HEADER in delivery.envelope.headers:
                self.resent.add(delivery.envelope.message_id)
        delivery.ack()


def publish_until(t, key: str, stop: threading.Event, sent: list[str]) -> None:
    """Publish bursts of 50 until ``stop`` is set, backing off while the unconfirmed buffer
    is full. The pauses between bursts (about 2,500 msgs/s) leave CPU to rabbitmqctl, which
    took seconds to close a connection while an unpaced stream held both cores here."""
    i = 0
    while not stop.wait(0.02):
        for _ in range(50):
            envelope = Envelope(b"(n %d)" % i)
            try:
                t.publish(key, envelope, persistent=True)
            except BufferFullError:
                t.flush(0.05)  # wait for confirms to make room
                continue
            sent.append(envelope.message_id)
            i += 1


def test_every_message_arrives_after_the_connections_are_killed_mid_stream(
        amqp_connect, amqp_names, durable_queue, record_property):
    name = f"cf-fault-{amqp_names.token}"
    pub = amqp_connect(name=name, buffer_size=2000)
    con = amqp_connect(name=name)
    pub.declare_queue(durable_queue, durable=True)
    pub.bind(durable_queue, "role.stream")
    recorder = Recorder()
    con.consume(durable_queue, recorder, prefetch=200)
    sent: list[str] = []
    stop = threading.Event()
    publisher = threading.Thread(target=publish_until, args=(pub, "role.stream", stop, sent))
    publisher.start()
    try:
        wait_for(lambda: len(recorder.ids) > 500, 20, what="the stream to be flowing")
        close_connections(name, expect=2)
        at_kill = len(sent)
        wait_for(lambda: len(sent) > at_kill + 500, 20, what="the stream to go on")
    finally:
        stop.set()
        publisher.join(10)
    wait_for(lambda: set(recorder.ids) >= set(sent), 30, what="every message at least once")
    assert len(set(sent)) == len(sent)
    assert pub.stats()["reconnects"] == 1 and con.stats()["reconnects"] == 1
    record_property("published", len(sent))
    record_property("duplicates", len(recorder.ids) - len(set(recorder.ids)))
    record_property("resent", pub.stats()["resent"])
    record_property("redelivered", recorder.redelivered)
    assert pub.flush(10)
    # each message sent again after the close carries the mark (a consumer checks it as it
    # checks a redelivery: the broker may have had the first copy); the others do not
    wait_for(lambda: len(recorder.resent) == pub.stats()["resent"], 30,
             what="a marked copy of every message sent again",
             show=lambda: (len(recorder.resent), pub.stats()["resent"]))
    assert recorder.resent <= set(sent)


def test_a_held_delivery_comes_back_redelivered_and_its_late_ack_is_ignored(
        amqp_connect, amqp_names, durable_queue):
    t = amqp_connect(name=f"cf-held-{amqp_names.token}")
    t.declare_queue(durable_queue, durable=True)
    t.bind(durable_queue, "role.held")
    held = Collector(settle=None)
    t.consume(durable_queue, held)
    sent = Envelope(b"(held)")
    t.publish("role.held", sent)
    first = held.wait(1)[0]
    close_connections(f"cf-held-{amqp_names.token}")
    second = held.wait(2)[1]
    assert (first.redelivered, second.redelivered) == (False, True)
    assert second.envelope.message_id == sent.message_id
    first.ack()  # from the dead channel: dropped, not a channel error
    second.ack()
    after = Envelope(b"(after)")
    t.publish("role.held", after)
    assert held.wait(3)[2].envelope.message_id == after.message_id
    assert t.stats()["reconnects"] == 1


def test_queues_bindings_and_consumers_are_restored_after_a_reconnect(
        amqp_connect, amqp_names):
    t = amqp_connect(name=f"cf-restore-{amqp_names.token}")
    mine = amqp_names.queue("exclusive")
    t.declare_queue(mine, exclusive=True)
    t.bind(mine, "node.web-01")
    collector = Collector()
    t.consume(mine, collector)
    close_connections(f"cf-restore-{amqp_names.token}")
    during = Envelope(b"(sent while reconnecting)")
    t.publish("node.web-01", during)  # buffered until the topology is back, then confirmed
    assert collector.wait(1)[0].envelope.message_id == during.message_id
    assert t.stats()["reconnects"] == 1
    returned = []
    t.publish("node.nobody", Envelope(b"x"), on_return=lambda e, r: returned.append(r))
    wait_for(lambda: returned, what="the unroutable message after a reconnect")


def test_an_idle_transport_keeps_its_connection_alive_with_heartbeats(amqp_connect):
    # The broker closes a connection after about two missed 1 s heartbeats; the I/O thread
    # answers them even when nobody publishes (a BlockingConnection would not).
    t = amqp_connect(heartbeat=1)
    assert holds_for(lambda: t.stats()["reconnects"] == 0 and t.connected, 3.5)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def test_persistent_messages_and_the_buffer_survive_a_broker_restart(
        amqp_connect, amqp_names, durable_queue):
    # The whole broker application stops and starts again (every connection of every client
    # drops): what it had confirmed as persistent is still queued, what was published while it
    # was down waits in the buffer and goes once the transport has reconnected.
    pub = amqp_connect(name=f"cf-restart-{amqp_names.token}", buffer_size=500)
    pub.declare_queue(durable_queue, durable=True)
    pub.bind(durable_queue, "role.restart")
    before = [Envelope(b"(before %d)" % i) for i in range(200)]
    for envelope in before:
        pub.publish("role.restart", envelope, persistent=True)
    assert pub.flush(20)
    during = [Envelope(b"(during %d)" % i) for i in range(100)]
    try:
        _rabbitmqctl("stop_app")
        wait_for(lambda: not pub.connected, 30, what="the transport to see the broker go")
        for envelope in during:
            pub.publish("role.restart", envelope, persistent=True)
    finally:
        _rabbitmqctl("start_app")
        _rabbitmqctl("await_startup")
    assert pub.flush(60)
    assert pub.stats()["reconnects"] >= 1
    arrived = Collector()
    amqp_connect().consume(durable_queue, arrived)
    got = arrived.wait(300, timeout=60)  # at least once: a resent message may come twice
    assert {d.envelope.message_id for d in got} == {e.message_id for e in before + during}


def test_a_queue_deleted_under_its_consumer_is_declared_again_with_its_bindings(
        amqp_connect, amqp_names, amqp_url):
    # As when a node fails over from a dead broker node and the cluster, cleaning up that
    # node's queues late, deletes the exclusive queue the node has just declared again.
    import pika

    t = amqp_connect(name=f"cf-redeclare-{amqp_names.token}")
    mine = amqp_names.queue("deleted")
    t.declare_queue(mine)
    t.bind(mine, "node.web-01")
    collector = Collector()
    t.consume(mine, collector)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().queue_delete(mine)
    finally:
        connection.close()
    after = Envelope(b"(sent after the queue was deleted)")

    def delivered() -> bool:  # unroutable until the queue and its binding are back: resend
        t.publish("node.web-01", after, on_return=lambda e, r: None)
        t.flush(5)
        return after.message_id in collector.ids

    wait_for(delivered, 20, interval=0.2, what="a delivery from the queue declared again",
             show=lambda: collector.bodies)
    assert t.stats()["reconnects"] == 0
