"""The transport conformance suite, and the helpers to test transports without fixed sleeps.

Every transport must pass ``TransportConformance``, like every trio stream must pass
``trio.testing.check_two_way_stream``. A test module subclasses it and supplies one fixture,
``connect``: a callable returning a NEW transport on the same broker each time (one call, one
node), closing them all at the end. ``Connector`` does the bookkeeping::

    class TestMyTransport(TransportConformance):
        @pytest.fixture
        def connect(self):
            with Connector(lambda: MyTransport(URL)) as connect:
                yield connect

The tests hold for a real, shared RabbitMQ: names are unique per test, durable queues are
deleted afterwards, messages are told apart by id, and waits have deadlines of a few seconds.
What they assume of a transport, beyond ``cellframe.transports.base``:

- the setup calls (``declare_queue``, ``delete_queue``, ``bind``, ``unbind``, ``consume``) have
  taken effect at the broker when they return, so another connection can rely on them;
- messages published from one thread of one transport reach each queue in publish order, so a
  last "fence" message proves that everything before it has arrived;
- ``cancel`` and ``close`` give unsettled deliveries back to the queue; a handler that raises is
  logged and its delivery dead-lettered, and the consumer carries on.

This module needs pytest, which cellframe itself does not depend on.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ..errors import CellframeError, ClosedTransportError
from ..transports.base import DEAD_LETTER_REASON, Delivery, Transport
from ..wire.envelope import Envelope
from .waiting import holds_for, wait_for

__all__ = [
    "DEADLINE",
    "Collector",
    "Connector",
    "TransportConformance",
    "envelope",
    "publish_many",
]

#: How long a conformance test waits for something that should happen (seconds).
DEADLINE = 5.0

#: Between polls that publish a probe each: 20 a second at most.
PROBE_INTERVAL = 0.05


class Collector:
    """A delivery handler that records what it receives, so a test can wait for it.

    ``settle`` runs on each delivery before it is recorded (default: ack, so a test that saw it
    knows it is settled); ``accept`` filters: deliveries it refuses are left unsettled and
    unrecorded, which returns them to the queue when the consumer goes (for shared queues such
    as the dead-letter queue of a real broker).
    """

    def __init__(
        self,
        settle: Callable[[Delivery], None] | None = lambda delivery: delivery.ack(),
        *,
        accept: Callable[[Delivery], bool] | None = None,
    ):
        self._settle = settle
        self._accept = accept
        self._lock = threading.Lock()
        self.deliveries: list[Delivery] = []

    def __call__(self, delivery: Delivery) -> None:
        if self._accept is not None and not self._accept(delivery):
            return
        if self._settle is not None:
            self._settle(delivery)
        with self._lock:
            self.deliveries.append(delivery)

    def __len__(self) -> int:
        return len(self.deliveries)

    @property
    def ids(self) -> list[str]:
        return [d.envelope.message_id for d in list(self.deliveries)]

    @property
    def bodies(self) -> list[bytes]:
        return [d.envelope.body for d in list(self.deliveries)]

    def wait(self, count: int, timeout: float = DEADLINE) -> list[Delivery]:
        """Wait until at least ``count`` deliveries arrived; return them all."""
        wait_for(lambda: len(self.deliveries) >= count, timeout,
                 what=f"{count} deliveries", show=lambda: self.bodies)
        return list(self.deliveries)

    def wait_for_id(self, message_id: str, timeout: float = DEADLINE) -> list[Delivery]:
        """Wait until a delivery of ``message_id`` arrived; return everything up to it."""
        wait_for(lambda: message_id in self.ids, timeout, what=f"message {message_id}",
                 show=lambda: self.bodies)
        deliveries = list(self.deliveries)
        end = [d.envelope.message_id for d in deliveries].index(message_id)
        return deliveries[: end + 1]


class Connector:
    """Opens transports with ``factory`` and closes every one it opened when it is closed."""

    def __init__(self, factory: Callable[[], Transport]):
        self._factory = factory
        self._opened: list[Transport] = []

    def __call__(self) -> Transport:
        transport = self._factory()
        self._opened.append(transport)
        return transport

    def close(self) -> None:
        for transport in reversed(self._opened):
            try:
                transport.close()
            except CellframeError:
                pass
        self._opened.clear()

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def envelope(body: bytes | str = b"", **fields: Any) -> Envelope:
    """An envelope for a test; ``str`` bodies are encoded as UTF-8."""
    return Envelope(body.encode() if isinstance(body, str) else body, **fields)


def publish_many(transport: Transport, key: str, count: int, label: str = "m") -> list[str]:
    """Publish ``count`` envelopes with bodies ``label-0`` ... and return their ids in order."""
    ids = []
    for i in range(count):
        env = envelope(f"{label}-{i}")
        transport.publish(key, env)
        ids.append(env.message_id)
    return ids


class TransportConformance:
    """Behaviour every Transport must show; subclass it and supply a ``connect`` fixture."""

    @pytest.fixture
    def connect(self) -> Iterator[Callable[[], Transport]]:
        raise NotImplementedError("a TransportConformance subclass must supply `connect`")

    @pytest.fixture
    def unique(self) -> Callable[[str], str]:
        """``unique(label)``: a routing word (and queue name part) no other test uses."""
        token = "t" + uuid.uuid4().hex[:12]
        return lambda label: f"{token}-{label}"

    @pytest.fixture
    def declare(self, connect: Callable[[], Transport], unique: Callable[[str], str]
                ) -> Iterator[Callable[..., str]]:
        """``declare(label, transport=None, durable=True, exclusive=False)`` -> queue name,
        deleted at teardown (exclusive queues go with their owner)."""
        admin = connect()
        names: list[str] = []

        def declare(label: str, transport: Transport | None = None, *, durable: bool = True,
                    exclusive: bool = False) -> str:
            name = f"cellframe-test.{unique(label)}"
            (transport or admin).declare_queue(name, durable=durable, exclusive=exclusive)
            if not exclusive:
                names.append(name)
            return name

        yield declare
        for name in names:
            try:
                admin.delete_queue(name)
            except CellframeError:
                pass

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _consume_dead_letters(transport: Transport, ids: set[str]) -> Collector:
        """Collect (and ack) the dead letters with these ids; leave everyone else's alone."""
        collector = Collector(accept=lambda d: d.envelope.message_id in ids)
        transport.consume(transport.dead_letter_queue, collector, prefetch=5000)
        return collector

    @staticmethod
    def _fenced(collector: Collector, fence_id: str) -> list[str]:
        """Ids a queue received before the fence message ``fence_id``."""
        return [d.envelope.message_id for d in collector.wait_for_id(fence_id)[:-1]]

    # -- routing ------------------------------------------------------------------------------

    def test_exact_keys_reach_only_their_queue(self, connect, declare, unique):
        node, pub = connect(), connect()
        keys = {"node": f"node.{unique('n')}", "role": f"role.{unique('r')}",
                "cell": f"cell.{unique('c')}"}
        fence_key = f"fence.{unique('f')}"
        collectors = {}
        for kind, key in keys.items():
            queue = declare(kind)
            node.bind(queue, key)
            node.bind(queue, fence_key)
            collectors[kind] = Collector()
            node.consume(queue, collectors[kind])
        sent = {}
        for kind, key in keys.items():
            sent[kind] = envelope(kind)
            pub.publish(key, sent[kind])
        fence = envelope(b"fence")
        pub.publish(fence_key, fence)
        for kind, collector in collectors.items():
            assert self._fenced(collector, fence.message_id) == [sent[kind].message_id]
            delivery = collector.deliveries[0]
            assert delivery.routing_key == keys[kind]
            assert delivery.envelope.body == kind.encode()

    def test_all_reaches_every_bound_queue_with_its_own_copy(self, connect, declare, unique):
        key = f"all.{unique('everyone')}"  # not the bare `all`: a shared broker carries that
        nodes = [connect() for _ in range(3)]
        collectors = [Collector() for _ in nodes]
        for i, (node, collector) in enumerate(zip(nodes, collectors, strict=True)):
            queue = declare(f"node{i}", node, durable=False, exclusive=True)
            node.bind(queue, key)
            node.consume(queue, collector)
        sent = envelope(b"hello", headers={"n": 1})
        connect().publish(key, sent)
        received = [c.wait(1)[0] for c in collectors]
        assert [d.envelope.message_id for d in received] == [sent.message_id] * 3
        received[0].envelope.headers["n"] = 2  # each copy is its own
        assert [d.envelope.headers["n"] for d in received[1:]] == [1, 1]
        assert sent.headers == {"n": 1}

    def test_star_matches_exactly_one_word(self, connect, declare, unique):
        t = connect()
        word = unique("w")
        queue = declare("star")
        t.bind(queue, f"event.*.{word}")
        t.bind(queue, f"fence.{word}")
        collector = Collector()
        t.consume(queue, collector)
        keys = [f"event.join.{word}", f"event.{word}", f"event.a.b.{word}", f"event.leave.{word}"]
        ids = {key: envelope(key) for key in keys}
        for key, env in ids.items():
            t.publish(key, env)
        fence = envelope(b"fence")
        t.publish(f"fence.{word}", fence)
        assert self._fenced(collector, fence.message_id) == [
            ids[f"event.join.{word}"].message_id, ids[f"event.leave.{word}"].message_id]

    def test_hash_matches_zero_or_more_words(self, connect, declare, unique):
        t = connect()
        word = unique("w")
        queue = declare("hash")
        t.bind(queue, f"log.{word}.#")
        t.bind(queue, f"fence.{word}")
        collector = Collector()
        t.consume(queue, collector)
        matching = [f"log.{word}", f"log.{word}.info", f"log.{word}.a.b.c"]
        other = [f"log.x.{word}", f"logs.{word}.info", f"x.log.{word}"]
        envs = [(key, envelope(key)) for key in matching + other]
        for key, env in envs:
            t.publish(key, env)
        fence = envelope(b"fence")
        t.publish(f"fence.{word}", fence)
        assert self._fenced(collector, fence.message_id) == [
            env.message_id for key, env in envs if key in matching]

    def test_a_queue_matched_by_two_bindings_gets_one_copy(self, connect, declare, unique):
        t = connect()
        word = unique("w")
        queue = declare("twice")
        t.bind(queue, f"role.{word}")
        t.bind(queue, f"*.{word}")
        t.bind(queue, "#." + word)
        collector = Collector()
        t.consume(queue, collector)
        first, fence = envelope(b"once"), envelope(b"fence")
        t.publish(f"role.{word}", first)
        t.publish(f"role.{word}", fence)
        assert self._fenced(collector, fence.message_id) == [first.message_id]

    def test_unbind_stops_routing_and_is_idempotent(self, connect, declare, unique):
        t = connect()
        word = unique("w")
        queue = declare("unbind")
        t.bind(queue, f"cell.{word}")
        t.bind(queue, f"fence.{word}")
        t.unbind(queue, f"cell.{word}")
        t.unbind(queue, f"cell.{word}")
        t.unbind(queue, f"never.{word}")
        collector = Collector()
        t.consume(queue, collector)
        fence = envelope(b"fence")
        t.publish(f"cell.{word}", envelope(b"unbound"))
        t.publish(f"fence.{word}", fence)
        assert self._fenced(collector, fence.message_id) == []

    def test_unroutable_publish_is_returned_and_routed_one_is_not(self, connect, declare, unique):
        t = connect()
        queue = declare("routed")
        t.bind(queue, f"role.{unique('bound')}")
        returned: list[tuple[Envelope, str]] = []
        routed, lost = envelope(b"routed"), envelope(b"lost")
        t.publish(f"role.{unique('bound')}", routed, on_return=lambda e, r: returned.append((e, r)))
        t.publish(f"role.{unique('nobody')}", lost, on_return=lambda e, r: returned.append((e, r)))
        wait_for(lambda: returned, what="the unroutable message to be returned")
        assert [env.message_id for env, _ in returned] == [lost.message_id]
        reason = returned[0][1]
        assert isinstance(reason, str) and reason

    def test_on_settled_runs_once_the_broker_settled_a_message_after_its_return(
            self, connect, declare, unique):
        t = connect()
        queue = declare("settled")
        t.bind(queue, f"role.{unique('bound')}")
        events: list[tuple[str, str]] = []
        routed, lost = envelope(b"routed"), envelope(b"lost")
        t.publish(f"role.{unique('bound')}", routed,
                  on_settled=lambda: events.append(("settled", routed.message_id)))
        t.publish(f"role.{unique('nobody')}", lost,
                  on_return=lambda e, r: events.append(("returned", e.message_id)),
                  on_settled=lambda: events.append(("settled", lost.message_id)))
        wait_for(lambda: len(events) >= 3, what="both messages settled, one returned first",
                 show=lambda: events)
        assert sorted(events) == sorted([("settled", routed.message_id),
                                         ("returned", lost.message_id),
                                         ("settled", lost.message_id)])
        assert events.index(("returned", lost.message_id)) < events.index(
            ("settled", lost.message_id))

    # -- competing consumers, backlog, redelivery ---------------------------------------------

    def test_competing_consumers_take_turns(self, connect, declare, unique):
        key = f"role.{unique('work')}"
        pub = connect()
        queue = declare("work")
        pub.bind(queue, key)
        first, second = Collector(), Collector()
        connect().consume(queue, first)
        connect().consume(queue, second)

        def both_consuming() -> bool:  # one probe per poll until each consumer has had one
            pub.publish(key, envelope(b"probe"))
            return bool(first.deliveries and second.deliveries)

        wait_for(both_consuming, DEADLINE, what="both consumers to receive a probe",
                 interval=PROBE_INTERVAL)
        ids = set(publish_many(pub, key, 20, "work"))
        wait_for(lambda: ids <= set(first.ids) | set(second.ids), what="all 20 deliveries")
        mine, theirs = ids & set(first.ids), ids & set(second.ids)
        assert not mine & theirs, "a message went to both competing consumers"
        assert abs(len(mine) - len(theirs)) <= 2, (len(mine), len(theirs))

    def test_durable_backlog_goes_to_a_consumer_that_arrives_later(self, connect, declare, unique):
        key = f"role.{unique('db')}"
        pub = connect()
        queue = declare("backlog", durable=True)
        pub.bind(queue, key)
        ids = publish_many(pub, key, 3)
        later = Collector()
        connect().consume(queue, later)
        deliveries = later.wait(3)
        assert [d.envelope.message_id for d in deliveries] == ids
        assert not any(d.redelivered for d in deliveries)

    @pytest.mark.parametrize("inline", [False, True], ids=["worker", "inline"])
    def test_unsettled_deliveries_are_redelivered_after_cancel(self, connect, declare, unique,
                                                               inline):
        key = f"role.{unique('r')}"
        first_node, second_node = connect(), connect()
        queue = declare("redeliver")
        first_node.bind(queue, key)
        holder = Collector(settle=None)
        tag = first_node.consume(queue, holder, inline=inline)
        ids = publish_many(first_node, key, 3)
        assert [d.redelivered for d in holder.wait(3)] == [False] * 3
        first_node.cancel(tag)
        again = Collector()
        second_node.consume(queue, again)
        deliveries = again.wait(3)
        assert sorted(d.envelope.message_id for d in deliveries) == sorted(ids)
        assert all(d.redelivered for d in deliveries)

    def test_unsettled_deliveries_are_redelivered_after_close(self, connect, declare, unique):
        key = f"role.{unique('r')}"
        dying, survivor = connect(), connect()
        queue = declare("redeliver-close")
        survivor.bind(queue, key)
        holder = Collector(settle=None)
        dying.consume(queue, holder)
        ids = publish_many(survivor, key, 2)
        holder.wait(2)
        dying.close()
        again = Collector()
        survivor.consume(queue, again)
        deliveries = again.wait(2)
        assert sorted(d.envelope.message_id for d in deliveries) == sorted(ids)
        assert all(d.redelivered for d in deliveries)

    def test_reject_with_requeue_redelivers(self, connect, declare, unique):
        key = f"role.{unique('r')}"
        t = connect()
        queue = declare("requeue")
        t.bind(queue, key)
        seen: set[str] = set()

        def reject_first_time(delivery: Delivery) -> None:
            if delivery.envelope.message_id in seen:
                delivery.ack()
            else:
                seen.add(delivery.envelope.message_id)
                delivery.reject(requeue=True)

        collector = Collector(settle=reject_first_time)
        t.consume(queue, collector)
        sent = envelope(b"try again")
        t.publish(key, sent)
        first, second = collector.wait(2)[:2]
        assert first.envelope.message_id == second.envelope.message_id == sent.message_id
        assert (first.redelivered, second.redelivered) == (False, True)
        assert second.envelope.body == b"try again"

    def test_an_inline_handler_gets_every_delivery_in_order_and_may_publish(
        self, connect, declare, unique
    ):
        t = connect()
        word = unique("w")
        work, answers = declare("inline-work"), declare("inline-answers")
        t.bind(work, f"role.{word}")
        t.bind(answers, f"reply.{word}")

        def answer(delivery: Delivery) -> None:  # publishing from the handler, as a node does
            t.publish(f"reply.{word}", envelope(b"re:" + delivery.envelope.body))
            delivery.ack()

        handled, replies = Collector(settle=answer), Collector()
        t.consume(work, handled, inline=True)
        t.consume(answers, replies)
        ids = publish_many(t, f"role.{word}", 20, "inline")
        assert [d.envelope.message_id for d in handled.wait(20)] == ids
        assert sorted(d.envelope.body for d in replies.wait(20)) == sorted(
            b"re:" + d.envelope.body for d in handled.deliveries)

    # -- dead letters -------------------------------------------------------------------------

    def test_reject_without_requeue_dead_letters_with_reason(self, connect, declare, unique):
        key = f"role.{unique('r')}"
        worker, watcher = connect(), connect()
        queue = declare("reject")
        worker.bind(queue, key)
        reason = f"cannot apply {unique('why')}"
        worker.consume(queue, Collector(settle=lambda d: d.reject(requeue=False, reason=reason)))
        sent = envelope(b"\x00poison", sender="web-01", headers={"k": "v"})
        dead = self._consume_dead_letters(watcher, {sent.message_id})
        worker.publish(key, sent)
        letter = dead.wait(1)[0].envelope
        assert letter.body == b"\x00poison"
        assert letter.sender == "web-01"
        assert letter.headers[DEAD_LETTER_REASON] == reason
        assert letter.headers["k"] == "v"

    def test_dead_letter_puts_a_copy_on_the_dead_letter_queue(self, connect, unique):
        t, watcher = connect(), connect()
        reason = f"no transition {unique('why')}"
        sent = envelope(b"(frobnicate)", headers={"n": 3})
        dead = self._consume_dead_letters(watcher, {sent.message_id})
        t.dead_letter(sent, reason)
        letter = dead.wait(1)[0].envelope
        assert letter.body == b"(frobnicate)"
        assert letter.headers[DEAD_LETTER_REASON] == reason
        assert letter.headers["n"] == 3
        assert sent.headers == {"n": 3}, "dead_letter changed the caller's envelope"

    @pytest.mark.parametrize("inline", [False, True], ids=["worker", "inline"])
    def test_a_handler_that_raises_dead_letters_and_the_consumer_goes_on(
        self, connect, declare, unique, inline
    ):
        key = f"role.{unique('r')}"
        t = connect()
        queue = declare("boom")
        t.bind(queue, key)

        def explode_on_boom(delivery: Delivery) -> None:
            if delivery.envelope.body == b"boom":
                raise RuntimeError("boom in handler")
            delivery.ack()

        collector = Collector(settle=explode_on_boom)
        boom, after = envelope(b"boom"), envelope(b"after")
        dead = self._consume_dead_letters(connect(), {boom.message_id})
        t.consume(queue, collector, inline=inline)
        t.publish(key, boom)
        t.publish(key, after)
        assert after.message_id in [d.envelope.message_id for d in collector.wait(1)]
        assert dead.wait(1)[0].envelope.headers[DEAD_LETTER_REASON]

    # -- flow ---------------------------------------------------------------------------------

    def test_prefetch_bounds_unsettled_deliveries(self, connect, declare, unique):
        key = f"role.{unique('r')}"
        t = connect()
        queue = declare("prefetch")
        t.bind(queue, key)
        ids = publish_many(t, key, 6)
        held: list[Delivery] = []
        settled: list[Delivery] = []
        in_flight: list[int] = []  # unsettled count seen at each delivery

        def hold(delivery: Delivery) -> None:
            held.append(delivery)
            in_flight.append(sum(1 for d in held if d not in settled))

        t.consume(queue, Collector(settle=hold), prefetch=2)
        wait_for(lambda: len(held) >= 2, what="the first two deliveries")
        assert holds_for(lambda: len(held) == 2, 0.2), "a third arrived before any ack"
        while len(settled) < len(ids):
            wait_for(lambda: len(held) > len(settled), what="the next delivery")
            delivery = held[len(settled)]
            settled.append(delivery)
            delivery.ack()
        assert [d.envelope.message_id for d in held] == ids
        assert max(in_flight) <= 2, in_flight

    def test_publish_does_not_block_when_nothing_consumes(self, connect, declare, unique):
        key = f"role.{unique('r')}"
        t = connect()
        queue = declare("idle")
        t.bind(queue, key)
        ids: list[str] = []
        publisher = threading.Thread(target=lambda: ids.extend(publish_many(t, key, 1000)))
        publisher.start()
        publisher.join(DEADLINE)
        assert not publisher.is_alive(), "publish blocked with no consumer"
        collector = Collector()
        connect().consume(queue, collector)
        assert collector.wait(1000)[-1].envelope.message_id == ids[-1]

    def test_publish_does_not_block_while_the_handler_is_stuck(self, connect, declare, unique):
        key = f"role.{unique('r')}"
        t = connect()
        queue = declare("stuck")
        t.bind(queue, key)
        release = threading.Event()

        def stuck_then_ack(delivery: Delivery) -> None:
            release.wait(DEADLINE * 2)
            delivery.ack()

        collector = Collector(settle=stuck_then_ack)
        connect().consume(queue, collector, prefetch=1)
        publisher = threading.Thread(target=lambda: publish_many(t, key, 300))
        publisher.start()
        publisher.join(DEADLINE)
        finished_while_stuck = not publisher.is_alive()
        release.set()
        assert finished_while_stuck, "publish waited for a stuck handler"
        collector.wait(300)

    # -- lifetimes ----------------------------------------------------------------------------

    def test_exclusive_queue_is_gone_after_its_transport_closes(self, connect, declare, unique):
        key = f"node.{unique('mortal')}"
        owner, other = connect(), connect()
        queue = declare("mine", owner, durable=False, exclusive=True)
        owner.bind(queue, key)
        owner.consume(queue, Collector())
        owner.close()
        returned: list[Envelope] = []

        def returned_now() -> bool:
            other.publish(key, envelope(b"probe"), on_return=lambda e, r: returned.append(e))
            return bool(returned)

        wait_for(returned_now, DEADLINE, what="the exclusive queue to disappear",
                 interval=PROBE_INTERVAL)

    def test_queue_declare_and_delete_are_idempotent(self, connect, declare, unique):
        t = connect()
        queue = declare("twice", durable=True)
        t.declare_queue(queue, durable=True)
        t.delete_queue(queue)
        t.delete_queue(queue)
        t.declare_queue(queue, durable=True)  # declare again: a fresh, working queue
        key = f"role.{unique('r')}"
        t.bind(queue, key)
        collector = Collector()
        t.consume(queue, collector)
        sent = envelope(b"after delete")
        t.publish(key, sent)
        assert collector.wait(1)[0].envelope.message_id == sent.message_id

    def test_close_is_idempotent_and_later_calls_raise(self, connect, declare, unique):
        t = connect()
        queue = declare("closed")
        t.close()
        t.close()
        calls: list[Callable[[], object]] = [
            lambda: t.declare_queue(queue, durable=True),
            lambda: t.delete_queue(queue),
            lambda: t.bind(queue, f"role.{unique('r')}"),
            lambda: t.unbind(queue, f"role.{unique('r')}"),
            lambda: t.publish(f"role.{unique('r')}", envelope(b"late")),
            lambda: t.dead_letter(envelope(b"late"), "late"),
            lambda: t.consume(queue, Collector()),
            lambda: t.cancel("no-such-consumer"),
        ]
        for call in calls:
            with pytest.raises(ClosedTransportError):
                call()

    def test_transport_and_deliveries_satisfy_the_protocols(self, connect, declare, unique):
        t = connect()
        assert isinstance(t, Transport)
        assert isinstance(t.dead_letter_queue, str) and t.dead_letter_queue
        key = f"role.{unique('r')}"
        queue = declare("protocol")
        t.bind(queue, key)
        collector = Collector()
        t.consume(queue, collector)
        t.publish(key, envelope(b"x"))
        assert isinstance(collector.wait(1)[0], Delivery)

    # -- content ------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "fields",
        [
            {"reply_to": "reply.repl-7", "sender": "web-01",
             "headers": {"text": "héllo wörld", "int": 42, "negative": -7, "big": 2**40,
                         "float": 0.1, "empty": ""}},
            {"reply_to": None, "sender": None, "headers": {}},
        ],
        ids=["every-field", "optional-fields-empty"],
    )
    def test_envelope_metadata_arrives_intact(self, connect, declare, unique, fields):
        t = connect()
        key = f"cell.{unique('meta')}"
        queue = declare("meta")
        t.bind(queue, key)
        collector = Collector()
        connect().consume(queue, collector)
        sent = Envelope(b"(ping)", message_id=unique("id"), timestamp=1_700_000_000.123456,
                        **fields)
        t.publish(key, sent)
        got = collector.wait(1)[0].envelope
        assert (got.body, got.message_id, got.timestamp, got.reply_to, got.sender) == (
            sent.body, sent.message_id, sent.timestamp, sent.reply_to, sent.sender)
        assert got.headers == sent.headers
        assert {k: type(v) for k, v in got.headers.items()} == {
            k: type(v) for k, v in sent.headers.items()}

    @pytest.mark.parametrize(
        "body",
        [bytes(range(256)), b"", b"\xff\xfe\xc3\x28 not utf-8", b"(x)" * 20_000],
        ids=["all-bytes", "empty", "invalid-utf8", "60kB"],
    )
    def test_body_bytes_travel_intact(self, connect, declare, unique, body):
        t = connect()
        key = f"cell.{unique('body')}"
        queue = declare("body")
        t.bind(queue, key)
        collector = Collector()
        t.consume(queue, collector)
        t.publish(key, Envelope(body))
        assert collector.wait(1)[0].envelope.body == body

    # -- settling -----------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "first, second",
        [("ack", "ack"), ("ack", "requeue"), ("ack", "dead"), ("dead", "ack"),
         ("dead", "requeue")],
    )
    def test_settling_twice_is_harmless(self, connect, declare, unique, first, second):
        key = f"role.{unique('r')}"
        t = connect()
        queue = declare("settle")
        t.bind(queue, key)
        actions = {
            "ack": lambda d: d.ack(),
            "requeue": lambda d: d.reject(requeue=True),
            "dead": lambda d: d.reject(requeue=False, reason="settled twice"),
        }

        def settle_twice(delivery: Delivery) -> None:
            if delivery.envelope.body == b"fence":
                delivery.ack()
                return
            actions[first](delivery)
            actions[second](delivery)

        collector = Collector(settle=settle_twice)
        ids = publish_many(t, key, 3)
        dead = self._consume_dead_letters(connect(), set(ids))  # also keeps a real DLQ clean
        t.consume(queue, collector, prefetch=1)
        fence = envelope(b"fence")
        t.publish(key, fence)
        assert self._fenced(collector, fence.message_id) == ids
        if first == "dead":
            dead.wait(3)
            assert sorted(dead.ids) == sorted(ids)
