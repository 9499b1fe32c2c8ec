"""MemoryTransport: the conformance suite, plus what only the embedded broker can show."""

from __future__ import annotations

import logging
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe.errors import ClosedTransportError, ConfigError, TransportError
from cellframe.testing import Collector, Connector, TransportConformance, publish_many, wait_for
from cellframe.transports.base import DEAD_LETTER_REASON, taken_back
from cellframe.transports.memory import MemoryBroker, MemoryTransport
from cellframe.wire.envelope import Envelope
from tests.transport_support import reference_matches


class TestMemoryTransportConformance(TransportConformance):
    @pytest.fixture
    def connect(self):
        broker = MemoryBroker()
        with Connector(broker.connect) as connect:
            yield connect


@pytest.fixture
def broker():
    return MemoryBroker()


@pytest.fixture
def connect(broker):
    with Connector(broker.connect) as connect:
        yield connect


def queue_with_consumer(t, name="q", key="role.web", *, settle=lambda d: d.ack(), **consume):
    t.declare_queue(name, durable=True)
    t.bind(name, key)
    collector = Collector(settle=settle)
    tag = t.consume(name, collector, **consume)
    return collector, tag


def test_a_transport_without_broker_has_a_private_one():
    with MemoryTransport() as mine, MemoryTransport() as yours:
        assert mine.broker is not yours.broker
        collector, _ = queue_with_consumer(mine)
        yours.declare_queue("q", durable=True)
        yours.bind("q", "role.web")
        yours.publish("role.web", Envelope(b"yours"))
        mine.publish("role.web", Envelope(b"mine"))
        assert collector.wait(1)[0].envelope.body == b"mine"
        assert yours.broker.message_count("q") == 1


def test_competing_consumers_alternate_strictly(connect):
    pub = connect()
    pub.declare_queue("work", durable=True)
    pub.bind("work", "role.work")
    first, second = Collector(), Collector()
    connect().consume("work", first)
    connect().consume("work", second)
    publish_many(pub, "role.work", 10)
    wait_for(lambda: len(first) + len(second) == 10)
    assert first.bodies == [f"m-{i}".encode() for i in range(0, 10, 2)]
    assert second.bodies == [f"m-{i}".encode() for i in range(1, 10, 2)]


_patterns = st.lists(st.sampled_from(["a", "b", "*", "#"]), min_size=1, max_size=3).map(".".join)
_keys = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(".".join)


@settings(deadline=None, max_examples=60)
@given(
    bindings=st.lists(st.tuples(st.integers(0, 2), _patterns), max_size=6),
    keys=st.lists(_keys, min_size=1, max_size=6),
    unbind=st.integers(0, 5),
)
def test_each_queue_gets_one_copy_per_matching_key(bindings, keys, unbind):
    def matches(queue, bound, key):
        return any(reference_matches(p, key) for i, p in bound if i == queue)

    broker = MemoryBroker()
    with broker.connect() as t:
        for i in range(3):
            t.declare_queue(f"q{i}")
        for i, pattern in bindings:
            t.bind(f"q{i}", pattern)
        t.publish(keys[0], Envelope(b"before the unbind; fills the route cache"))
        after = bindings
        if unbind < len(bindings):
            t.unbind(f"q{bindings[unbind][0]}", bindings[unbind][1])
            after = [b for b in bindings if b != bindings[unbind]]
        for key in keys:
            t.publish(key, Envelope(key.encode()))
        for i in range(3):
            expected = matches(i, bindings, keys[0]) + sum(matches(i, after, k) for k in keys)
            assert broker.message_count(f"q{i}") == expected


def test_binding_after_a_publish_routes_the_next_publish(connect):
    """The route cache is invalidated by bind, unbind and delete."""
    t = connect()
    returned = []
    t.publish("cell.late", Envelope(b"early"), on_return=lambda e, r: returned.append(e.body))
    wait_for(lambda: returned == [b"early"])
    collector, _ = queue_with_consumer(t, key="cell.late")
    t.publish("cell.late", Envelope(b"late"))
    assert collector.wait(1)[0].envelope.body == b"late"
    t.unbind("q", "cell.late")
    t.publish("cell.late", Envelope(b"unbound"), on_return=lambda e, r: returned.append(e.body))
    wait_for(lambda: returned == [b"early", b"unbound"])


def test_deleting_a_queue_removes_its_routes_and_stops_its_consumers(broker, connect):
    t = connect()
    collector, tag = queue_with_consumer(t, settle=None)
    t.publish("role.web", Envelope(b"held"))
    held = collector.wait(1)[0]
    t.delete_queue("q")
    held.ack()  # its queue is gone: ignored, no crash
    returned = []
    t.publish("role.web", Envelope(b"x"), on_return=lambda e, r: returned.append(r))
    wait_for(lambda: returned)
    assert "q" not in broker.queue_names()
    t.cancel(tag)  # the consumer already went with its queue: harmless


def test_publisher_changing_its_envelope_afterwards_changes_nothing(connect):
    t = connect()
    collector, _ = queue_with_consumer(t, settle=None)
    sent = Envelope(b"x", headers={"n": 1})
    t.publish("role.web", sent)
    sent.headers["n"] = 2
    assert collector.wait(1)[0].envelope.headers == {"n": 1}


def test_a_redelivery_is_the_original_even_if_a_consumer_changed_its_copy(connect):
    t = connect()
    seen = []

    def scribble_then_requeue(delivery):
        seen.append(dict(delivery.envelope.headers))
        delivery.envelope.headers["scribbled"] = True
        delivery.reject(requeue=True) if len(seen) == 1 else delivery.ack()

    queue_with_consumer(t, settle=scribble_then_requeue)
    t.publish("role.web", Envelope(b"x", headers={"n": 1}))
    wait_for(lambda: len(seen) == 2)
    assert seen == [{"n": 1}, {"n": 1}]


def test_abort_redelivers_unsettled_work_and_ignores_late_acks(broker, connect):
    dying, survivor = connect(), connect()
    holder, _ = queue_with_consumer(dying, settle=None)
    dying.declare_queue("dying-node", exclusive=True)
    ids = publish_many(survivor, "role.web", 2)
    held = holder.wait(2)
    dying.abort()
    held[0].ack()  # a handler finishing after the crash: too late, ignored
    assert "dying-node" not in broker.queue_names()
    again = Collector()
    survivor.consume("q", again)
    assert [d.envelope.message_id for d in again.wait(2)] == ids
    assert all(d.redelivered for d in again.deliveries)
    with pytest.raises(ClosedTransportError):
        dying.publish("role.web", Envelope(b"ghost"))


def test_close_lets_a_running_handler_finish_so_its_ack_counts(broker, connect):
    t = connect()
    started, release = threading.Event(), threading.Event()

    def slow(delivery):
        started.set()
        release.wait(5)
        delivery.ack()

    queue_with_consumer(t, settle=slow)
    t.publish("role.web", Envelope(b"slow"))
    assert started.wait(5)
    closer = threading.Thread(target=t.close)
    closer.start()
    release.set()
    closer.join(5)
    assert not closer.is_alive()
    assert broker.message_count("q") == 0
    assert broker.stats()["acked"] == 1


def test_cancel_and_close_from_inside_a_handler_do_not_deadlock(connect):
    t = connect()
    done = threading.Event()

    def cancel_then_close(delivery):
        delivery.ack()
        t.cancel(tags[0])
        t.close()
        done.set()

    _, tag = queue_with_consumer(t, settle=cancel_then_close)
    tags = [tag]
    t.publish("role.web", Envelope(b"stop"))
    assert done.wait(5)
    assert t.closed


def test_full_queue_refuses_new_messages_and_returns_them(broker, connect):
    t = connect()
    t.declare_queue("small", durable=True, max_length=2)
    t.bind("small", "role.web")
    returned = []
    for body in (b"1", b"2", b"3"):
        t.publish("role.web", Envelope(body), on_return=lambda e, r: returned.append((e.body, r)))
    wait_for(lambda: returned)
    assert returned == [(b"3", "queue 'small' is full")]
    assert broker.message_count("small") == 2


def test_broker_queue_bound_applies_to_every_queue():
    broker = MemoryBroker(max_queue_length=1)
    with broker.connect() as t:
        t.declare_queue("q")
        t.bind("q", "all")
        t.publish("all", Envelope(b"1"))
        t.publish("all", Envelope(b"2"))
        assert broker.message_count("q") == 1
        assert broker.stats()["returned"] == 1


def test_oversized_body_is_returned_with_a_clear_reason():
    broker = MemoryBroker(max_message_size=10)
    returned = []
    with broker.connect(on_return=lambda e, r: returned.append(r)) as t:
        t.declare_queue("q")
        t.bind("q", "all")
        t.publish("all", Envelope(b"x" * 11))
        t.publish("all", Envelope(b"x" * 10))
        wait_for(lambda: returned)
        assert returned == ["body of 11 bytes exceeds the broker's max_message_size of 10"]
        assert broker.message_count("q") == 1


def test_dead_letter_queue_keeps_only_the_newest():
    broker = MemoryBroker(max_dead_letters=2)
    with broker.connect() as t:
        for body in (b"1", b"2", b"3"):
            t.dead_letter(Envelope(body), "why")
        collector = Collector()
        t.consume(t.dead_letter_queue, collector)
        assert [d.envelope.body for d in collector.wait(2)] == [b"2", b"3"]
        assert broker.stats()["dropped"] == 1


def test_each_double_settle_dead_letters_at_most_once(broker, connect):
    t = connect()

    def twice(delivery):
        delivery.reject(reason="first")
        delivery.reject(reason="second")
        delivery.ack()

    collector, _ = queue_with_consumer(t, settle=twice)
    publish_many(t, "role.web", 3)
    collector.wait(3)
    assert broker.message_count(t.dead_letter_queue) == 3
    dead = Collector()
    t.consume(t.dead_letter_queue, dead)
    assert {d.envelope.headers[DEAD_LETTER_REASON] for d in dead.wait(3)} == {"first"}


def test_on_return_runs_off_the_publishing_thread(connect):
    t = connect()
    threads = []
    t.publish("nowhere", Envelope(b"x"), on_return=lambda e, r: threads.append(
        threading.current_thread()))
    wait_for(lambda: threads)
    assert threads[0] is not threading.current_thread()


def test_a_failing_on_return_is_logged_not_raised(connect, caplog):
    t = connect()
    calls = []

    def broken(envelope, reason):
        calls.append(reason)
        raise RuntimeError("broken callback")

    with caplog.at_level(logging.ERROR, logger="cellframe.transports.memory"):
        t.publish("nowhere", Envelope(b"x"), on_return=broken)
        t.publish("nowhere", Envelope(b"y"), on_return=broken)
        wait_for(lambda: caplog.text.count("on_return handler failed") == 2)
    assert len(calls) == 2  # the returns thread survived the first failure


def test_unroutable_without_handler_is_logged_and_counted(broker, connect, caplog):
    t = connect()
    with caplog.at_level(logging.WARNING, logger="cellframe.transports.memory"):
        t.publish("nowhere", Envelope(b"x", message_id="lost-one"))
    assert "lost-one" in caplog.text
    assert broker.stats()["returned"] == 1


def test_redeclaring_with_other_flags_is_refused(connect):
    t = connect()
    t.declare_queue("q", durable=True)
    with pytest.raises(TransportError, match="durable=True"):
        t.declare_queue("q", durable=False)


def test_an_exclusive_queue_belongs_to_its_transport_alone(connect):
    owner, other = connect(), connect()
    owner.declare_queue("mine", exclusive=True)
    for call in (lambda: other.declare_queue("mine", exclusive=True),
                 lambda: other.bind("mine", "all"),
                 lambda: other.consume("mine", Collector()),
                 lambda: other.delete_queue("mine")):
        with pytest.raises(TransportError, match="exclusive"):
            call()
    owner.bind("mine", "all")
    owner.delete_queue("mine")


def test_missing_queues_are_reported(connect):
    t = connect()
    with pytest.raises(TransportError, match="no queue named 'ghost'"):
        t.bind("ghost", "all")
    with pytest.raises(TransportError, match="no queue named 'ghost'"):
        t.consume("ghost", Collector())
    t.unbind("ghost", "all")  # idempotent
    t.delete_queue("ghost")  # idempotent


@pytest.mark.parametrize("name", ["", "x" * 256, "é" * 128, None, 3])
def test_bad_queue_names_and_patterns_are_config_errors(connect, name):
    t = connect()
    with pytest.raises(ConfigError, match="255 bytes"):
        t.declare_queue(name)
    t.declare_queue("q")
    if name is not None and name != 3:
        with pytest.raises(ConfigError):
            t.bind("q", name)


@pytest.mark.parametrize("prefetch", [0, -1, 1.5])
def test_bad_prefetch_is_a_config_error(connect, prefetch):
    t = connect()
    t.declare_queue("q")
    with pytest.raises(ConfigError, match="prefetch"):
        t.consume("q", Collector(), prefetch=prefetch)


def test_publishing_something_other_than_an_envelope_is_refused(connect):
    t = connect()
    with pytest.raises(TransportError, match="Envelope"):
        t.publish("all", b"raw bytes")
    with pytest.raises(TransportError, match="Envelope"):
        t.publish("all", Envelope("text, not bytes"))
    with pytest.raises(TransportError, match="routing key"):
        t.publish("x" * 256, Envelope(b""))


def test_many_threads_publishing_lose_nothing_and_duplicate_nothing(broker, connect):
    pub = connect()
    pub.declare_queue("work", durable=True)
    pub.bind("work", "role.#")
    workers = [Collector() for _ in range(3)]
    for worker in workers:
        connect().consume("work", worker, prefetch=8)
    sent: list[list[str]] = [[] for _ in range(4)]
    threads = [
        threading.Thread(target=lambda i=i: sent[i].extend(
            publish_many(pub, f"role.r{i}", 500, f"t{i}")))
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    wait_for(lambda: sum(map(len, workers)) == 2000)
    received = [i for worker in workers for i in worker.ids]
    assert sorted(received) == sorted(i for ids in sent for i in ids)
    stats = broker.stats()
    assert (stats["published"], stats["delivered"], stats["acked"]) == (2000, 2000, 2000)


def test_repr_says_what_it_is(connect):
    t = connect()
    assert "MemoryTransport" in repr(t)
    t.close()
    assert "closed" in repr(t)


# -- flush ---------------------------------------------------------------------------------


def test_flush_returns_once_every_unroutable_messages_on_return_has_run(connect):
    t = connect()
    returned = []

    def slow_handler(envelope, reason):
        threading.Event().wait(0.2)  # a handler that takes its time: flush still waits for it
        returned.append(envelope.message_id)

    lost = [Envelope(b"%d" % i) for i in range(3)]
    for envelope in lost:
        t.publish("cell.nobody", envelope, on_return=slow_handler)
    assert t.flush(5)
    assert returned == [e.message_id for e in lost]


def test_flush_with_nothing_returned_is_immediate(connect):
    t = connect()
    collector, _ = queue_with_consumer(t)
    t.publish("role.web", Envelope(b"routed"))
    assert t.flush(0.5)
    assert collector.wait(1)[0].envelope.body == b"routed"


def test_flush_from_inside_an_on_return_handler_does_not_wait_for_itself(connect):
    t = connect()
    flushed = []
    t.publish("cell.nobody", Envelope(b"x"), on_return=lambda e, r: flushed.append(t.flush(5)))
    assert t.flush(10)
    assert flushed == [True]


def test_a_memory_transport_is_a_context_manager_that_closes(broker):
    with broker.connect() as t:
        t.declare_queue("mine", exclusive=True)
    assert t.closed and "mine" not in broker.queue_names()


def test_a_delivery_its_consumer_left_unsettled_is_taken_back_and_says_so(connect):
    """``taken_back``: a node that held a delivery while it asked other nodes must not apply it
    once the broker gave it to another consumer (``cellframe.transports.base.taken_back``)."""
    t = connect()
    collector, tag = queue_with_consumer(t, settle=None)
    t.publish("role.web", Envelope(b"held"))
    t.publish("role.web", Envelope(b"acked"))
    held, acked = collector.wait(2)
    acked.ack()
    assert not taken_back(held)
    t.cancel(tag)
    assert taken_back(held) and not taken_back(acked)
