"""MemoryTransport: the embedded transport, with RabbitMQ's topic semantics inside one process.

A ``MemoryBroker`` plays RabbitMQ: it holds the queues, the topic bindings and the dead-letter
queue. Each ``MemoryTransport`` is one node's connection to it, so several transports on one
broker behave like several nodes on one RabbitMQ::

    broker = MemoryBroker()
    web, db = broker.connect(name="web-01"), broker.connect(name="db-01")

``MemoryTransport()`` with no broker makes a private one. The semantics are those of an AMQP
topic exchange with manual acknowledgements, and both transports pass the same conformance
suite (``cellframe.testing.TransportConformance``):

- ``*`` matches one word, ``#`` zero or more; a message routed to several queues is copied to
  each, a queue bound by several matching patterns gets one copy;
- competing consumers of one queue take turns (round-robin among those with prefetch credit);
- deliveries left unsettled when their consumer is cancelled or its transport closes go back
  to the front of the queue, marked ``redelivered``;
- ``publish`` never waits for a consumer; an unroutable message, a full queue
  (``x-overflow=reject-publish``) or an oversized body comes back through ``on_return``, which
  runs on a broker thread, as it would on AMQP's I/O thread, never inside ``publish``; a
  message is routed (settled) inside ``publish``, so ``flush`` only waits for those
  ``on_return`` callbacks to have run;
- exclusive queues vanish when the transport that declared them closes (how a node's death is
  seen); ``abort()`` simulates a crash for healing tests.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from queue import SimpleQueue
from typing import Any

from ..errors import ClosedTransportError, ConfigError, TransportError
from ..failures import LineBudget, log_failure
from ..wire.envelope import Envelope
from ..wire.routing import topic_matches
from .base import DEAD_LETTER_REASON, DeliveryHandler, ReturnHandler, SettledHandler

__all__ = ["DEFAULT_DEAD_LETTER_QUEUE", "MemoryBroker", "MemoryDelivery", "MemoryTransport"]

logger = logging.getLogger(__name__)

DEFAULT_DEAD_LETTER_QUEUE = "cellframe.dead-letter"  # the AMQP transport's default too

# AMQP short strings (queue names, routing keys, patterns) hold at most 255 bytes.
_MAX_NAME_BYTES = 255
# Routing keys like reply.<uuid> are unbounded in number; past this the route cache restarts.
_ROUTE_CACHE_SIZE = 10_000

# A queued message: ((body, id, timestamp, reply_to, sender), headers, routing key,
# redelivered). It is taken from the publisher's envelope at publish time and never changed:
# every delivery builds its own Envelope from it, so neither a publisher that reuses its
# envelope nor a consumer that scribbles on its copy disturbs anyone. A tuple rather than a
# pristine Envelope: building a dataclass costs about 0.5 us, which this path cannot spare.
# (body, message_id, timestamp, reply_to, sender, correlation_id, content_type)
_Fields = tuple[bytes, str, float, "str | None", "str | None", "str | None", "str | None"]
_Message = tuple[_Fields, dict[str, Any], str, bool]


def _message(envelope: Envelope, key: str) -> _Message:
    fields = (envelope.body, envelope.message_id, envelope.timestamp, envelope.reply_to,
              envelope.sender, envelope.correlation_id, envelope.content_type)
    return fields, dict(envelope.headers), key, False


def _check_name(name: object, what: str) -> str:
    """Return ``name`` if it can be an AMQP short string, else raise ConfigError."""
    if not isinstance(name, str) or not name or len(name.encode()) > _MAX_NAME_BYTES:
        raise ConfigError(f"{what} {name!r} must be a non-empty string of at most 255 bytes")
    return name


class _Queue:
    """One queue: ready messages in order, and the consumers that take turns on them."""

    __slots__ = (
        "name", "durable", "exclusive", "owner", "max_length", "drop_head",
        "ready", "consumers", "cursor", "patterns",
    )

    def __init__(self, name: str, durable: bool, exclusive: bool, owner: MemoryTransport | None,
                 max_length: int | None, drop_head: bool = False):
        self.name = name
        self.durable = durable
        self.exclusive = exclusive
        self.owner = owner
        self.max_length = max_length
        self.drop_head = drop_head  # overflow drops the oldest instead of refusing the newest
        self.ready: deque[_Message] = deque()
        self.consumers: list[_Consumer] = []
        self.cursor = 0
        self.patterns: set[str] = set()


# Put in a consumer's inbox to make its thread apply settlements made on other threads.
_FLUSH = object()
# Settlements a busy consumer thread collects before it takes the broker lock to apply them.
# Taking the lock per ack made publisher and consumer convoy on it: 96k contended acquires
# and 115k context switches for 200k messages, 56k deliveries/s; batched, see the report.
_SETTLE_BATCH = 64


class _Consumer:
    """A consumer: its handler runs on its own thread, fed through ``inbox``.

    ``ack`` and ``reject`` only append to ``settled``; the consumer thread applies them under
    the broker lock in batches (before it would wait for more, or every ``_SETTLE_BATCH``).
    Until then they still count against prefetch, so the bound only gets stricter.
    """

    __slots__ = (
        "tag", "queue", "transport", "handler", "prefetch", "unsettled", "settled", "inbox",
        "thread", "stopping", "lines",
    )

    def __init__(self, tag: str, queue: _Queue, transport: MemoryTransport,
                 handler: DeliveryHandler, prefetch: int):
        self.tag = tag
        self.queue = queue
        self.transport = transport
        self.handler = handler
        self.prefetch = prefetch
        self.lines = LineBudget()  # handler failures, logged a few a minute
        # A dict as an ordered set: delivery order is the order to requeue in.
        self.unsettled: dict[MemoryDelivery, None] = {}
        self.settled: deque[tuple[MemoryDelivery, bool, str | None]] = deque()
        self.inbox: SimpleQueue[Any] = SimpleQueue()
        self.stopping = False
        self.thread = threading.Thread(
            target=self.run, name=f"cellframe-memory-{tag}", daemon=True
        )

    def settle(self, delivery: MemoryDelivery, requeue: bool, reason: str | None) -> None:
        """Record an ack (``reason`` None) or reject, to be applied by the consumer thread."""
        self.settled.append((delivery, requeue, reason))
        if self.stopping:
            self.transport.broker._flush(self)  # no thread left to do it
        elif threading.get_ident() != self.thread.ident:
            self.inbox.put(_FLUSH)

    def run(self) -> None:
        """Call the handler for each delivery until the sentinel ``None`` arrives."""
        get, empty, handler, settled = self.inbox.get, self.inbox.empty, self.handler, self.settled
        flush = self.transport.broker._flush
        while True:
            if settled and (len(settled) >= _SETTLE_BATCH or empty()):
                flush(self)
            delivery = get()
            if delivery is None:
                return
            if delivery is _FLUSH or delivery._settled or self.stopping:
                continue  # a wake-up, or taken back by cancel/close and queued again
            try:
                handler(delivery)
            except Exception as exc:
                self._handler_failed(delivery, exc)

    def _handler_failed(self, delivery: MemoryDelivery, exc: Exception) -> None:
        if self.transport.closed:
            logger.debug("handler of %s failed after close: %r", self.tag, exc)
        else:
            log_failure(logger, exc, "handler of consumer %s failed; dead-lettering", self.tag,
                        budget=self.lines, kind="handler raised")
        delivery.reject(reason=f"handler failed: {type(exc).__name__}: {exc}")


class MemoryDelivery:
    """One delivery from a memory queue; settle it with ``ack`` or ``reject`` (once counts)."""

    __slots__ = ("envelope", "routing_key", "redelivered", "_consumer", "_message", "_settled",
                 "taken_back")

    def __init__(self, message: _Message, consumer: _Consumer):
        fields, headers, self.routing_key, self.redelivered = message
        body, message_id, timestamp, reply_to, sender, correlation_id, content_type = fields
        self.envelope = Envelope(body, message_id, timestamp, reply_to, sender, headers.copy(),
                                 correlation_id, content_type)
        self._consumer = consumer
        self._message = message
        self._settled = False
        #: Requeued unsettled when its consumer closed (``base.taken_back``).
        self.taken_back = False

    def ack(self) -> None:
        """The message was applied: forget it. Settling again is ignored."""
        self._consumer.settle(self, False, None)

    def reject(self, *, requeue: bool = False, reason: str = "") -> None:
        """Redeliver the message later (``requeue``) or dead-letter it with ``reason``."""
        self._consumer.settle(self, requeue, reason)

    def __repr__(self) -> str:
        return (f"<MemoryDelivery {self.envelope.message_id} key={self.routing_key!r}"
                f" redelivered={self.redelivered} settled={self._settled}>")


class _Returns:
    """One process-wide thread that runs ``on_return`` callbacks, outside any caller's locks."""

    _lock = threading.Lock()
    _inbox: SimpleQueue[tuple[Any, ...]] | None = None
    _thread: threading.Thread | None = None

    @classmethod
    def put(cls, handler: ReturnHandler, envelope: Envelope, reason: str) -> None:
        with cls._lock:
            if cls._inbox is None:
                cls._inbox = SimpleQueue()
                cls._thread = threading.Thread(
                    target=cls._run, args=(cls._inbox,), name="cellframe-memory-returns",
                    daemon=True,
                )
                cls._thread.start()
            cls._inbox.put((handler, envelope, reason))

    @classmethod
    def caught_up(cls, timeout: float) -> bool:
        """Wait until every callback put before this call has run."""
        with cls._lock:
            inbox = cls._inbox
        if inbox is None or threading.current_thread() is cls._thread:
            return True  # none ever put, or called from a callback: those before it have run
        done = threading.Event()
        inbox.put((done,))
        return done.wait(timeout)

    @staticmethod
    def _run(inbox: SimpleQueue[tuple[Any, ...]]) -> None:
        while True:
            item = inbox.get()
            if len(item) == 1:  # a marker of caught_up
                item[0].set()
                continue
            handler, envelope, reason = item
            try:
                handler(envelope, reason)
            except Exception as error:
                log_failure(logger, error, "on_return handler failed for %s", envelope.message_id)


class _Counts:
    """What a broker has done, for ``MemoryBroker.stats``."""

    def __init__(self) -> None:
        self.published = self.delivered = self.acked = self.requeued = 0
        self.dead_lettered = self.returned = self.dropped = 0


class MemoryBroker:
    """An in-process stand-in for RabbitMQ: queues, topic bindings and the dead-letter queue.

    Thread-safe: one lock guards all state, and it is never held while user code runs.
    ``max_queue_length`` bounds every queue's ready messages (overflow refuses the new message,
    like ``x-overflow=reject-publish``); ``max_message_size`` bounds bodies in bytes;
    ``max_dead_letters`` keeps the dead-letter queue a bounded ring (oldest dropped first).
    """

    def __init__(
        self,
        *,
        dead_letter_queue: str = DEFAULT_DEAD_LETTER_QUEUE,
        max_queue_length: int | None = None,
        max_message_size: int | None = None,
        max_dead_letters: int | None = 100_000,
    ):
        for value, what in ((max_queue_length, "max_queue_length"),
                            (max_message_size, "max_message_size"),
                            (max_dead_letters, "max_dead_letters")):
            if value is not None and value < 1:
                raise ConfigError(f"{what} must be at least 1 (or None for no limit), not {value}")
        self.dead_letter_queue = _check_name(dead_letter_queue, "dead-letter queue")
        self.max_queue_length = max_queue_length
        self.max_message_size = max_message_size
        self.max_dead_letters = max_dead_letters
        self._lock = threading.Lock()
        self._queues: dict[str, _Queue] = {}
        self._bindings: dict[str, dict[str, None]] = {}  # pattern -> queue names, ordered
        self._routes: dict[str, tuple[_Queue, ...]] = {}  # routing key -> queues (a cache)
        self._tags = itertools.count(1)
        self._counts = _Counts()
        self._dead_letter_queue_locked()

    def connect(self, **options: object) -> MemoryTransport:
        """A new connection to this broker: one node's transport (options as MemoryTransport)."""
        return MemoryTransport(self, **options)  # type: ignore[arg-type]

    def stats(self) -> dict[str, int]:
        """Counters since the broker was made: published, delivered, acked, and so on."""
        with self._lock:
            self._flush_all_locked()
            return dict(self._counts.__dict__, queues=len(self._queues))

    def message_count(self, queue: str) -> int:
        """How many messages wait in ``queue`` (not counting unsettled deliveries)."""
        with self._lock:
            self._flush_all_locked()
            q = self._queues.get(queue)
            if q is None:
                raise TransportError(f"no queue named {queue!r}")
            return len(q.ready)

    def queue_names(self) -> list[str]:
        with self._lock:
            return sorted(self._queues)

    # -- queues and bindings ------------------------------------------------------------------

    def _declare(self, owner: MemoryTransport, name: str, durable: bool, exclusive: bool,
                 max_length: int | None) -> None:
        _check_name(name, "queue name")
        if max_length is not None and max_length < 1:
            raise ConfigError(f"max_length of queue {name!r} must be at least 1, not {max_length}")
        with self._lock:
            q = self._queues.get(name)
            if q is None:
                limit = max_length if max_length is not None else self.max_queue_length
                self._queues[name] = _Queue(
                    name, durable, exclusive, owner if exclusive else None, limit
                )
                self._routes.clear()
                if exclusive:
                    owner._exclusive.add(name)
                return
            self._check_access(q, owner)
            if (q.durable, q.exclusive) != (durable, exclusive):
                raise TransportError(
                    f"queue {name!r} exists with durable={q.durable}, exclusive={q.exclusive};"
                    f" cannot redeclare it with durable={durable}, exclusive={exclusive}"
                )

    def _delete(self, owner: MemoryTransport, name: str) -> None:
        with self._lock:
            q = self._queues.get(name)
            if q is None:
                return
            self._check_access(q, owner)
            self._delete_locked(q)

    def _delete_locked(self, q: _Queue) -> None:
        del self._queues[q.name]
        for pattern in q.patterns:
            queues = self._bindings[pattern]
            queues.pop(q.name, None)
            if not queues:
                del self._bindings[pattern]
        self._routes.clear()
        if q.owner is not None:
            q.owner._exclusive.discard(q.name)
        for consumer in list(q.consumers):
            self._detach_locked(consumer)
            for delivery in consumer.unsettled:
                delivery._settled = True  # its queue is gone: nothing to requeue into
            consumer.unsettled.clear()
            consumer.settled.clear()
        q.ready.clear()

    def _bind(self, owner: MemoryTransport, queue: str, pattern: str, bound: bool) -> None:
        _check_name(pattern, "binding pattern")
        with self._lock:
            q = self._queues.get(queue)
            if q is None:
                if not bound:
                    return  # unbind is idempotent
                raise TransportError(f"cannot bind: no queue named {queue!r}")
            self._check_access(q, owner)
            if bound:
                self._bindings.setdefault(pattern, {})[queue] = None
                q.patterns.add(pattern)
            elif pattern in q.patterns:
                q.patterns.discard(pattern)
                queues = self._bindings[pattern]
                del queues[queue]
                if not queues:
                    del self._bindings[pattern]
            self._routes.clear()

    @staticmethod
    def _check_access(q: _Queue, who: MemoryTransport) -> None:
        if q.owner is not None and q.owner is not who:
            raise TransportError(f"queue {q.name!r} is exclusive to another connection")

    # -- publishing ---------------------------------------------------------------------------

    def _publish(self, key: str, envelope: Envelope, on_return: ReturnHandler | None) -> None:
        limit = self.max_message_size
        if limit is not None and len(envelope.body) > limit:
            self._returned(envelope, f"body of {len(envelope.body)} bytes exceeds the"
                           f" broker's max_message_size of {limit}", on_return)
            return
        message = _message(envelope, key)
        full: list[str] = []
        with self._lock:
            self._counts.published += 1
            targets = self._routes.get(key)
            if targets is None:
                targets = self._route_locked(key)
            for q in targets:
                if not self._enqueue_locked(q, message):
                    full.append(q.name)
        if not targets:
            self._returned(envelope, f"no queue is bound to routing key {key!r}", on_return)
        elif full:
            self._returned(envelope, f"queue {', '.join(map(repr, full))} is full", on_return)

    def _route_locked(self, key: str) -> tuple[_Queue, ...]:
        names: dict[str, None] = {}
        for pattern, queues in self._bindings.items():
            if topic_matches(pattern, key):
                names.update(queues)
        if len(self._routes) >= _ROUTE_CACHE_SIZE:
            self._routes.clear()
        targets = self._routes[key] = tuple(self._queues[name] for name in names)
        return targets

    # Invariant, true whenever the lock is free: a queue has ready messages only while none of
    # its consumers has prefetch credit. So a new message either goes straight to a consumer
    # (the ready queue is empty) or waits at the back (nobody has room).

    def _enqueue_locked(self, q: _Queue, message: _Message) -> bool:
        """Hand ``message`` to a consumer with room, else queue it; False if ``q`` is full."""
        ready = q.ready
        if not ready and q.consumers:
            consumer = self._next_consumer_locked(q)
            if consumer is not None:
                # _deliver_locked, inlined: this is the hot path of every publish
                delivery = MemoryDelivery(message, consumer)
                consumer.unsettled[delivery] = None
                consumer.inbox.put(delivery)
                self._counts.delivered += 1
                return True
        if q.max_length is not None and len(ready) >= q.max_length:
            if not q.drop_head:
                return False
            ready.popleft()
            self._counts.dropped += 1
        ready.append(message)
        return True

    def _dispatch_locked(self, q: _Queue) -> None:
        """Give ready messages to consumers with prefetch credit (restores the invariant)."""
        ready = q.ready
        while ready and (consumer := self._next_consumer_locked(q)) is not None:
            self._deliver_locked(consumer, ready.popleft())

    @staticmethod
    def _next_consumer_locked(q: _Queue) -> _Consumer | None:
        """The next consumer in turn that has prefetch credit, if any."""
        consumers = q.consumers
        n = len(consumers)
        if n == 1:  # the common case, without the modulo dance
            consumer = consumers[0]
            return consumer if len(consumer.unsettled) < consumer.prefetch else None
        for _ in range(n):
            consumer = consumers[q.cursor % n]
            q.cursor = (q.cursor + 1) % n
            if len(consumer.unsettled) < consumer.prefetch:
                return consumer
        return None

    def _deliver_locked(self, consumer: _Consumer, message: _Message) -> None:
        delivery = MemoryDelivery(message, consumer)
        consumer.unsettled[delivery] = None
        consumer.inbox.put(delivery)
        self._counts.delivered += 1

    def _returned(self, envelope: Envelope, reason: str, on_return: ReturnHandler | None) -> None:
        with self._lock:
            self._counts.returned += 1
        if on_return is None:
            logger.warning("message %s returned: %s", envelope.message_id, reason)
        else:
            _Returns.put(on_return, envelope, reason)

    # -- settling and dead letters ------------------------------------------------------------

    def _flush(self, consumer: _Consumer) -> None:
        with self._lock:
            self._flush_locked(consumer)

    def _flush_locked(self, consumer: _Consumer) -> None:
        """Apply the acks and rejects ``consumer`` has collected, then refill it."""
        settled, unsettled, q = consumer.settled, consumer.unsettled, consumer.queue
        acked = 0
        while settled:
            delivery, requeue, reason = settled.popleft()
            if delivery._settled:
                continue  # settled twice, or taken back by cancel/close: harmless
            delivery._settled = True
            del unsettled[delivery]
            if reason is None:
                acked += 1
            elif requeue:
                self._requeue_locked(q, [delivery])
            else:
                self._dead_letter_locked(delivery._message, reason)
        self._counts.acked += acked
        if q.ready and q.consumers:
            self._dispatch_locked(q)

    def _flush_all_locked(self) -> None:
        for q in self._queues.values():
            for consumer in q.consumers:
                if consumer.settled:
                    self._flush_locked(consumer)

    def _requeue_locked(self, q: _Queue, deliveries: list[MemoryDelivery]) -> None:
        """Put messages back at the front of ``q``, in their original order, as redelivered."""
        if self._queues.get(q.name) is not q:
            return  # the queue was deleted meanwhile
        self._counts.requeued += len(deliveries)
        q.ready.extendleft(d._message[:3] + (True,) for d in reversed(deliveries))

    def _dead_letter_locked(self, message: _Message, reason: str) -> None:
        """Queue ``message`` as a dead letter, ``reason`` in its (copied) headers."""
        fields, headers, key, _ = message
        self._counts.dead_lettered += 1
        letter = (fields, {**headers, DEAD_LETTER_REASON: reason}, key, False)
        self._enqueue_locked(self._dead_letter_queue_locked(), letter)

    def _dead_letter(self, envelope: Envelope, reason: str) -> None:
        message = _message(envelope, self.dead_letter_queue)
        with self._lock:
            self._dead_letter_locked(message, reason)

    def _dead_letter_queue_locked(self) -> _Queue:
        q = self._queues.get(self.dead_letter_queue)
        if q is None:  # made at start; made again if someone deleted it
            q = _Queue(self.dead_letter_queue, True, False, None, self.max_dead_letters,
                       drop_head=True)
            self._queues[q.name] = q
        return q

    # -- consumers ----------------------------------------------------------------------------

    def _consume(self, owner: MemoryTransport, queue: str, handler: DeliveryHandler,
                 prefetch: int) -> _Consumer:
        if not isinstance(prefetch, int) or prefetch < 1:
            raise ConfigError(f"prefetch must be a positive int, not {prefetch!r}")
        with self._lock:
            q = self._queues.get(queue)
            if q is None:
                raise TransportError(f"cannot consume: no queue named {queue!r}")
            self._check_access(q, owner)
            consumer = _Consumer(f"{owner.name}.ctag-{next(self._tags)}", q, owner, handler,
                                 prefetch)
            consumer.thread.start()
            q.consumers.append(consumer)
            owner._consumers[consumer.tag] = consumer
            self._dispatch_locked(q)
        return consumer

    def _cancel(self, consumer: _Consumer) -> None:
        with self._lock:
            self._detach_locked(consumer)
            self._take_back_locked(consumer)

    def _detach_locked(self, consumer: _Consumer) -> None:
        """Stop dispatching to ``consumer`` and tell its thread to finish."""
        if consumer.stopping:
            return
        consumer.stopping = True
        consumer.queue.consumers.remove(consumer)
        consumer.transport._consumers.pop(consumer.tag, None)
        consumer.inbox.put(None)

    def _take_back_locked(self, consumer: _Consumer) -> None:
        """Apply what ``consumer`` settled, requeue the rest, and let others have it."""
        self._flush_locked(consumer)
        taken = list(consumer.unsettled)
        consumer.unsettled.clear()
        for delivery in taken:
            delivery._settled = True  # a late ack or reject of it is now ignored
            delivery.taken_back = True
        q = consumer.queue
        self._requeue_locked(q, taken)
        if q.ready and q.consumers:
            self._dispatch_locked(q)

    # -- connections closing ------------------------------------------------------------------

    def _begin_close(self, owner: MemoryTransport) -> list[_Consumer]:
        with self._lock:
            consumers = list(owner._consumers.values())
            for consumer in consumers:
                self._detach_locked(consumer)
            return consumers

    def _finish_close(self, owner: MemoryTransport, consumers: list[_Consumer]) -> None:
        with self._lock:
            owner._closed = True
            for consumer in consumers:
                self._take_back_locked(consumer)
            for name in list(owner._exclusive):
                self._delete_locked(self._queues[name])


class MemoryTransport:
    """One connection to a ``MemoryBroker``: the embedded transport for in-process clusters.

    ``on_return`` is the default for ``publish``; ``close_timeout`` bounds how long ``close``
    waits for handlers already running to finish (their acks then count).
    """

    def __init__(
        self,
        broker: MemoryBroker | None = None,
        *,
        name: str | None = None,
        on_return: ReturnHandler | None = None,
        close_timeout: float = 2.0,
    ):
        self.broker = broker if broker is not None else MemoryBroker()
        self.name = name or f"memory-{next(_connection_numbers)}"
        self.on_return = on_return
        self.close_timeout = close_timeout
        self._consumers: dict[str, _Consumer] = {}
        self._exclusive: set[str] = set()
        self._closing = False
        self._closed = False

    @property
    def dead_letter_queue(self) -> str:
        return self.broker.dead_letter_queue

    @property
    def closed(self) -> bool:
        return self._closed

    def declare_queue(self, name: str, *, durable: bool = False, exclusive: bool = False,
                      max_length: int | None = None) -> None:
        """Create ``name`` if missing; ``max_length`` overrides the broker's queue bound."""
        self._check_open()
        self.broker._declare(self, name, durable, exclusive, max_length)

    def delete_queue(self, name: str) -> None:
        self._check_open()
        self.broker._delete(self, name)

    def bind(self, queue: str, pattern: str) -> None:
        self._check_open()
        self.broker._bind(self, queue, pattern, True)

    def unbind(self, queue: str, pattern: str) -> None:
        self._check_open()
        self.broker._bind(self, queue, pattern, False)

    def publish(self, routing_key: str, envelope: Envelope, *, persistent: bool = False,
                on_return: ReturnHandler | None = None,
                on_settled: SettledHandler | None = None) -> None:
        """Route ``envelope`` now and return; ``persistent`` means nothing in memory.
        ``on_settled`` runs on the returns thread, after any ``on_return`` of this message."""
        if self._closed:
            raise ClosedTransportError(f"transport {self.name} is closed")
        if not isinstance(envelope, Envelope) or not isinstance(envelope.body, bytes):
            raise TransportError(f"publish needs an Envelope with a bytes body, not {envelope!r}")
        if not isinstance(routing_key, str) or (
            len(routing_key) > 63 and len(routing_key.encode()) > _MAX_NAME_BYTES
        ):
            raise TransportError(f"routing key {routing_key!r} is not a string of <= 255 bytes")
        self.broker._publish(routing_key, envelope, on_return or self.on_return)
        if on_settled is not None:
            _Returns.put(lambda _envelope, _reason: on_settled(), envelope, "")

    def dead_letter(self, envelope: Envelope, reason: str) -> None:
        self._check_open()
        self.broker._dead_letter(envelope, reason)

    def consume(self, queue: str, handler: DeliveryHandler, *, prefetch: int = 256,
                inline: bool = False) -> str:
        """See Transport.consume; ``inline`` is ignored: the broker dispatches under its lock,
        so every consumer keeps a thread of its own."""
        self._check_open()
        if self._closing:
            raise ClosedTransportError(f"transport {self.name} is closing")
        return self.broker._consume(self, queue, handler, prefetch).tag

    def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer (unknown tags are ignored); its unsettled deliveries are requeued."""
        self._check_open()
        consumer = self._consumers.get(consumer_tag)
        if consumer is not None:
            self.broker._cancel(consumer)

    def flush(self, timeout: float) -> bool:
        """Every message is routed within ``publish``: wait only until the ``on_return``
        callbacks of those that came back have run (False if ``timeout`` passed first)."""
        return _Returns.caught_up(timeout)

    def close(self) -> None:
        """Stop consumers, let running handlers finish (up to ``close_timeout``), requeue what
        is unsettled and drop exclusive queues. Idempotent."""
        if self._closing:
            return
        self._closing = True
        consumers = self.broker._begin_close(self)
        deadline = time.monotonic() + self.close_timeout
        current = threading.current_thread()
        for consumer in consumers:
            if consumer.thread is not current:
                consumer.thread.join(max(0.0, deadline - time.monotonic()))
        self.broker._finish_close(self, consumers)

    def abort(self) -> None:
        """Die like a crashed node: no waiting, unsettled work requeued, exclusive queues gone."""
        if self._closed:
            return
        self._closing = True
        consumers = self.broker._begin_close(self)
        self.broker._finish_close(self, consumers)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedTransportError(f"transport {self.name} is closed")

    def __enter__(self) -> MemoryTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._consumers)} consumers"
        return f"<MemoryTransport {self.name} ({state})>"


_connection_numbers = itertools.count(1)
