"""AMQP consumers: a worker thread per consumer that runs the handler, and the deliveries it
hands out.

The I/O thread only records a delivery tag and queues the raw frame; decoding and the
handler run on the consumer's own worker thread, so a slow handler never stalls heartbeats,
confirms or other consumers. An ``inline`` consumer (its handler promised never to block)
has no worker: the I/O thread decodes and handles each delivery as it reads it, which saves
a queue and a thread hand-off per message. Settling (``ack``/``reject``) goes back to the
I/O thread through the transport's command queue; the I/O thread turns a run of
consecutive acks into one ``basic.ack(multiple=True)``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from enum import Enum
from typing import Any

from ..failures import LineBudget, log_failure, log_limited
from ..wire.envelope import Envelope
from ._amqp_wire import UndecodableError, from_amqp
from .base import DeliveryHandler

__all__ = ["AmqpDelivery", "ConsumerState", "Settle", "SettleSink"]

log = logging.getLogger("cellframe.transports.amqp")


class Settle(Enum):
    """What a consumer did with a delivery."""

    ACK = "ack"
    REQUEUE = "requeue"
    DEAD_LETTER = "dead-letter"
    UNDECODABLE = "undecodable"  # dead-lettered before any handler saw it, and counted


#: ``sink(consumer, channel, delivery_tag, settle, envelope, reason)``, called on any thread.
SettleSink = Callable[["ConsumerState", Any, int, Settle, Envelope, str], None]
_STOP = object()


class AmqpDelivery:
    """One delivery from RabbitMQ; settle it exactly once (later settles are ignored)."""

    __slots__ = ("envelope", "routing_key", "redelivered", "_consumer", "_channel", "_tag",
                 "_once")

    def __init__(self, consumer: ConsumerState, channel: Any, tag: int, routing_key: str,
                 redelivered: bool, envelope: Envelope) -> None:
        self.envelope = envelope
        self.routing_key = routing_key
        self.redelivered = redelivered
        self._consumer = consumer
        self._channel = channel
        self._tag = tag
        # list.pop is atomic under the GIL: the one settle that pops it wins, without a lock.
        self._once = [True]

    def ack(self) -> None:
        """The message was applied: the broker may forget it."""
        self._settle(Settle.ACK, "")

    def reject(self, *, requeue: bool = False, reason: str = "") -> None:
        """Redeliver later (``requeue``) or dead-letter with ``reason`` in the headers."""
        self._settle(Settle.REQUEUE if requeue else Settle.DEAD_LETTER, reason)

    @property
    def settled(self) -> bool:
        return not self._once

    @property
    def taken_back(self) -> bool:
        """Its channel closed (the broker requeued it) or the consumer moved to another one
        (``base.taken_back``). Read from any thread: one reference compared."""
        return self._consumer.channel is not self._channel

    def _settle(self, how: Settle, reason: str) -> None:
        try:
            self._once.pop()
        except IndexError:
            log.debug("delivery %s settled twice; ignoring the second", self.envelope.message_id)
            return
        self._consumer.sink(self._consumer, self._channel, self._tag, how, self.envelope, reason)

    def __repr__(self) -> str:
        return (f"<AmqpDelivery {self.envelope.message_id} key={self.routing_key!r} "
                f"redelivered={self.redelivered}>")


class ConsumerState:
    """One consumer: what to restore after a reconnect, its channel, and its worker thread.

    ``channel``, ``outstanding`` and ``acked`` belong to the I/O thread.
    """

    def __init__(self, tag: str, queue_name: str, handler: DeliveryHandler, prefetch: int,
                 sink: SettleSink, *, inline: bool = False) -> None:
        self.tag = tag
        self.queue = queue_name
        self.handler = handler
        self.prefetch = prefetch
        self.sink = sink
        self.lines = LineBudget()  # deliveries refused or failed, logged a few a minute
        self.channel: Any = None
        self.outstanding: dict[int, None] = {}  # unsettled delivery tags, in delivery order
        self.acked: set[int] = set()
        self.closing: Future[Any] | None = None  # a cancel waiting for the channel to close
        self.cancelled = False  # deliveries still queued for the worker are skipped
        self.inline = inline
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if not inline:
            self._thread = threading.Thread(target=self._run, name=f"cellframe-consumer-{tag}",
                                            daemon=True)
            self._thread.start()

    # -- I/O thread ------------------------------------------------------------------------

    def on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        """pika's message callback: note the tag, then queue the rest for the worker, or
        handle it here if the consumer is inline."""
        self.outstanding[method.delivery_tag] = None
        if not self.inline:
            self._inbox.put((channel, method.delivery_tag, method.routing_key,
                             method.redelivered, properties, body))
        elif not self.cancelled:  # a cancelled consumer's deliveries go back to the broker
            self._deliver(channel, method.delivery_tag, method.routing_key, method.redelivered,
                          properties, body)

    def flush_acks(self) -> None:
        """Send the acks collected since the last flush: one ``multiple`` ack for the run at
        the front, single acks for the rest (so a held delivery never holds back others)."""
        channel, outstanding, acked = self.channel, self.outstanding, self.acked
        last = None
        while outstanding:
            front = next(iter(outstanding))
            if front not in acked:
                break
            del outstanding[front]
            acked.discard(front)
            last = front
        if last is not None:
            channel.basic_ack(last, multiple=True)
        for tag in acked:
            outstanding.pop(tag, None)
            channel.basic_ack(tag)
        acked.clear()

    def reset(self) -> None:
        """The channel is gone: the broker requeued everything unsettled."""
        self.channel = None
        self.outstanding.clear()
        self.acked.clear()

    # -- any thread ------------------------------------------------------------------------

    def stop(self, *, join: bool = True, timeout: float = 10.0) -> None:
        """Stop the worker after the delivery it is handling (never joins itself)."""
        self.cancelled = True
        if self._thread is None:
            return
        self._inbox.put(_STOP)
        if join and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # -- worker thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._inbox.get()
            if item is _STOP:
                return
            channel = item[0]
            if channel is not self.channel or self.cancelled:
                continue  # from a channel that died: the broker redelivers it on the new one
            self._deliver(*item)

    def _deliver(self, channel: Any, tag: int, key: Any, redelivered: bool, properties: Any,
                 body: bytes) -> None:
        try:
            if type(key) is not str:  # pika leaves a routing key that is not UTF-8 as bytes
                raise UndecodableError(f"routing key {key[:60]!r} is not UTF-8 text")
            envelope = from_amqp(properties, body)
        except UndecodableError as exc:
            self._refuse(channel, tag, key, redelivered, body, str(exc))
            return
        delivery = None
        try:
            delivery = AmqpDelivery(self, channel, tag, key, redelivered, envelope)
            self.handler(delivery)
        except Exception as exc:  # a handler bug must not kill the consumer (or the I/O thread)
            log_failure(log, exc, "handler for queue %r raised on %r", self.queue, delivery,
                        budget=self.lines, kind="handler raised")
            if delivery is None:
                delivery = AmqpDelivery(self, channel, tag, key, redelivered, Envelope(body))
            if not delivery.settled:
                delivery.reject(reason=f"handler raised {type(exc).__name__}: {exc}")

    def _refuse(self, channel: Any, tag: int, key: Any, redelivered: bool, body: bytes,
                reason: str) -> None:
        """Dead-letter a delivery no handler can be given: its body, under a fresh id, with
        ``reason``; the link counts it. One line in the log, never a traceback."""
        shown = key if type(key) is str else repr(key)
        log_limited(log, self.lines, "undecodable", logging.WARNING,
                    "queue %r: refused a delivery on %r: %s", self.queue, shown, reason)
        delivery = AmqpDelivery(self, channel, tag, shown, redelivered, Envelope(body))
        delivery._settle(Settle.UNDECODABLE, f"{reason} (routing key {shown!r})")
