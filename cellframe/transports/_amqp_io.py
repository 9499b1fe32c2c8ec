"""The AMQP I/O thread: the one thread that owns the pika connection and makes every pika call.

pika connections are not thread-safe: four threads publishing on one channel broke the
connection within milliseconds here. So each transport has exactly one ``SelectConnection``
and one thread running its ioloop; other threads hand it work through two deques (``outbox``
for publishes, ``_work`` for acks and commands) and wake it with one
``add_callback_threadsafe`` per batch, not per message: a flag says a wake-up is already
pending. Measured here: that design with confirms kept in flight reached 20k confirmed
msgs/s from four actors; a ``BlockingConnection`` waiting on each confirm reached 2.3k/s and,
when idle, missed its heartbeats.

Channels on the one connection:

- *control*: declarations, bindings and deletions, one at a time (pika queues them). A
  failed one (the broker closes the channel) fails only that caller; the channel is reopened.
- *publisher*: confirm mode, up to ``max_in_flight`` unconfirmed; ``mandatory`` publishes so
  an unroutable message comes back as ``basic.return`` instead of being dropped and confirmed.
- one per consumer, so ``basic.qos`` is per consumer and cancelling (closing the channel)
  gives its unsettled deliveries back to the broker.

Acks are coalesced: the acks settled while the I/O thread drains its work wait for a run of
``ACK_BATCH`` (at most half the consumer's prefetch, so the broker keeps delivering), for a
command (so a cancel or a close never leaves an applied delivery unacked), or for
``ACK_DELAY`` seconds, and then go out as one ``basic.ack(multiple=True)``, as the raw pika
baseline acks every 100.

On a lost connection it reconnects with backoff, trying each broker address in turn,
re-declares the remembered topology (exchanges, queues, bindings), puts every unconfirmed
message back at the front of the outbox, and restarts the consumers.
"""

from __future__ import annotations

import functools
import logging
import queue
import re
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import pika
import pika.exceptions
from pika.adapters.select_connection import IOLoop
from pika.spec import Basic

from ..errors import TransportError
from ..failures import log_failure
from ..wire.envelope import Envelope
from ._amqp_consumer import ConsumerState, Settle
from ._amqp_reads import read_deliveries
from ._amqp_state import ControlOp, Outgoing, Topology
from ._amqp_wire import dead_letter_properties
from ._amqp_writes import Publish, coalesce_writes, publisher

__all__ = ["BrokerLink"]

log = logging.getLogger("cellframe.transports.amqp")
_CONNECTING, _RESTORING, _READY, _CLOSED = "connecting", "restoring", "ready", "closed"

#: Acks held back until this many are ready to go as one ``multiple`` ack...
ACK_BATCH = 100
#: ...or until this many seconds have passed (a held ack only delays the broker's bookkeeping,
#: never a reply; a redelivery after a crash is deduplicated by the cell).
ACK_DELAY = 0.005


def _guard(method: Callable[..., None]) -> Callable[..., None]:
    """Log instead of raise: an exception escaping a pika callback would stop the ioloop."""

    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            method(*args, **kwargs)
        except Exception:
            log.exception("AMQP I/O thread: %s failed", method.__name__)

    return guarded


class BrokerLink:
    """The I/O thread and everything it owns; the public methods are safe from any thread."""

    def __init__(self, params: list[pika.ConnectionParameters], topology: Topology, *,
                 max_in_flight: int, backoff: tuple[float, float],
                 release: Callable[[int], None], name: str) -> None:
        self.topology = topology
        self.outbox: deque[Outgoing] = deque()
        self.connected = threading.Event()
        self.errors: dict[str, str] = {}  # the last connection error of each broker address
        self.restore_errors: list[str] = []  # re-declarations the broker refused
        #: Set when a broker refused the login or the virtual host before any connection
        #: opened: retrying cannot help, so the transport fails at once with this line.
        self.refused: str | None = None
        self.stats = dict.fromkeys(("published", "confirmed", "returned", "nacked", "resent",
                                    "acked", "requeued", "dead_lettered", "undecodable",
                                    "connections", "reconnects"), 0)
        self._params = params
        self._max_in_flight = max_in_flight
        self._backoff = backoff
        self._delay = backoff[0]
        self._release = release
        self._ioloop = IOLoop()
        self._work: deque[Any] = deque()
        self._wake_lock = threading.Lock()
        self._wake_pending = False
        self._state = _CONNECTING
        self._closing = False
        self._index = 0
        self._tries = 0
        self._timer: Any = None
        self._conn: Any = None
        self._control: Any = None
        self._publisher: Any = None
        self._publish: Publish | None = None  # how to publish on _publisher
        self._tag = 0
        self._unconfirmed: dict[int, Outgoing] = {}
        self._held_acks: set[ConsumerState] = set()  # consumers with acks not yet sent
        self._ack_timer: Any = None
        self._pending_ops: deque[ControlOp] = deque()
        self._deferred_ops: deque[ControlOp] = deque()
        self._reissue: list[ControlOp] = []
        self._notices: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._notifier = threading.Thread(target=self._run_notices, daemon=True,
                                          name=f"cellframe-amqp-notify-{name}")
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"cellframe-amqp-io-{name}")

    # -- any thread ------------------------------------------------------------------------

    def start(self) -> None:
        self._notifier.start()
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def send(self, item: Outgoing) -> None:
        """Queue a publish; the I/O thread sends it when the confirm window has room."""
        self.outbox.append(item)
        self._wake()

    def settle(self, consumer: ConsumerState, channel: Any, tag: int, how: Settle,
               envelope: Envelope, reason: str) -> None:
        """A consumer's ack or reject, carried to the I/O thread (the ``SettleSink``)."""
        self._work.append((consumer, channel, tag, how, envelope, reason))
        self._wake()

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the I/O thread, in order with acks."""
        self._work.append(fn)
        self._wake()

    def control(self, op: ControlOp) -> None:
        self.call(lambda: self._submit_op(op))

    def notify(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a caller's callback on the notifier thread, never on the I/O thread."""
        self._notices.put((fn, args))

    def unsettled(self, timeout: float) -> list[Outgoing] | None:
        """The callers' publishes not settled yet (queued, or awaiting their confirm), read on
        the I/O thread; None if it did not answer within ``timeout``."""
        if threading.current_thread() is self._thread:
            raise TransportError("flush would wait on the transport's own I/O thread, which "
                                 "is the thread that settles what it waits for")
        future: Future[list[Outgoing]] = Future()
        self.call(lambda: future.set_result(
            [item for item in (*self.outbox, *self._unconfirmed.values()) if item.counted]))
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            return None

    def notices_caught_up(self, timeout: float) -> bool:
        """Wait until every callback handed to ``notify`` before this call has run."""
        if threading.current_thread() is self._notifier or not self._notifier.is_alive():
            return True  # called from a callback: those before it have run
        done = threading.Event()
        self._notices.put((done.set, ()))
        return done.wait(timeout)

    def shutdown(self, timeout: float) -> None:
        """Close the connection, stop the ioloop and wait for the I/O thread."""
        if self.alive:
            self.call(self._begin_close)
            self._thread.join(timeout)
        self._notices.put(None)
        if threading.current_thread() is not self._notifier:
            self._notifier.join(timeout)

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        self._ioloop.add_callback_threadsafe(self._drain)

    def _run(self) -> None:
        try:
            self._connect()
            self._ioloop.start()
        except Exception:
            log.exception("AMQP I/O thread stopped by an error")
        finally:
            self._state = _CLOSED
            self.connected.clear()
            self._ioloop.close()

    def _run_notices(self) -> None:
        while (notice := self._notices.get()) is not None:
            fn, args = notice
            try:
                fn(*args)
            except Exception as error:  # a user's callback (on_return...): log it, go on
                log_failure(log, error, "callback %r raised", fn)

    # -- I/O thread: the work queue --------------------------------------------------------

    @_guard
    def _drain(self) -> None:
        # Clear the flag before draining: work queued after this point wakes us again.
        with self._wake_lock:
            self._wake_pending = False
        held = self._held_acks
        work = self._work
        while work:
            item = work.popleft()
            if type(item) is tuple:
                self._settle(item, held)
                continue
            self._flush_acks(held)  # a command (a cancel, a close) sees every ack sent first
            try:
                item()
            except Exception:  # one failed command must not strand the work queued after it
                log.exception("AMQP I/O thread: command %r failed", item)
        self._flush_due_acks()
        self._pump()

    def _flush_due_acks(self) -> None:
        """Send the held acks of consumers with a full batch (``ACK_BATCH``, or half the
        consumer's prefetch, so held acks never close its delivery window); the rest go when
        ``ACK_DELAY`` runs out."""
        held = self._held_acks
        for consumer in [c for c in held if len(c.acked) >= min(ACK_BATCH, max(1, c.prefetch // 2))]:
            held.discard(consumer)
            self._flush_acks({consumer})
        if held and self._ack_timer is None:
            self._ack_timer = self._ioloop.call_later(ACK_DELAY, self._on_ack_timer)

    @_guard
    def _on_ack_timer(self) -> None:
        self._ack_timer = None
        self._flush_acks(self._held_acks)

    def _settle(self, item: tuple[Any, ...], touched: set[ConsumerState]) -> None:
        consumer, channel, tag, how, envelope, reason = item
        if channel is not consumer.channel or not channel.is_open:
            return  # that channel died: the broker has requeued the delivery already
        if how is Settle.ACK:
            consumer.acked.add(tag)
            touched.add(consumer)
            self.stats["acked"] += 1
        elif how is Settle.REQUEUE:
            consumer.outstanding.pop(tag, None)
            channel.basic_reject(tag, requeue=True)
            self.stats["requeued"] += 1
        else:
            # A copy with the reason goes to the dead-letter exchange; ack once it is confirmed.
            self.stats["dead_lettered"] += 1
            if how is Settle.UNDECODABLE:
                self.stats["undecodable"] += 1
            try:
                copy, properties = dead_letter_properties(envelope, reason or "rejected")
            except Exception:  # never leave a delivery unsettled: the broker's DLX takes it
                log.exception("cannot dead-letter %s; rejecting it", envelope.message_id)
                consumer.outstanding.pop(tag, None)
                channel.basic_reject(tag, requeue=False)
                return
            self.outbox.append(Outgoing(
                self.topology.dead_letter_exchange, "dead", copy, properties,
                None, after_confirm=(consumer, channel, tag), counted=False))

    @staticmethod
    def _flush_acks(touched: set[ConsumerState]) -> None:
        for consumer in touched:
            if consumer.channel is not None and consumer.channel.is_open:
                consumer.flush_acks()
        touched.clear()

    def _pump(self) -> None:
        """Send from the outbox while the confirm window has room."""
        if self._state is not _READY:
            return
        publish, outbox, unconfirmed = self._publish, self.outbox, self._unconfirmed
        assert publish is not None  # set with the publisher channel, before _READY
        while outbox and len(unconfirmed) < self._max_in_flight:
            item = outbox.popleft()
            try:
                publish(item.exchange, item.routing_key, item.envelope.body, item.properties)
            except pika.exceptions.AMQPError:
                outbox.appendleft(item)  # the channel is closing; its close handler recovers
                return
            except Exception as exc:  # pika could not encode it: nothing reached the broker
                touched: set[ConsumerState] = set()
                self._finish(item, ok=False, reason=f"could not be encoded: {exc}", touched=touched)
                self._flush_acks(touched)
                self._release_items([item])
                continue
            self._tag += 1
            unconfirmed[self._tag] = item
            self.stats["published"] += 1

    # -- I/O thread: connecting ------------------------------------------------------------

    @_guard
    def _connect(self) -> None:
        self._timer = None
        if self._closing:
            return
        self._state = _CONNECTING
        self._conn = pika.SelectConnection(
            self._params[self._index], on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error, on_close_callback=self._on_closed,
            custom_ioloop=self._ioloop)

    @_guard
    def _on_open_error(self, conn: Any, error: BaseException) -> None:
        self._conn = None
        if self._closing:
            self._ioloop.stop()
            return
        where = self._describe(self._index)
        refusal = _refusal(error, self._params[self._index])
        if refusal is not None and not self.stats["connections"]:
            self.refused = f"broker {where} {refusal}"
        reason = refusal or _short_reason(error)
        # Said once per address and reason (a retry every few seconds repeats it at DEBUG); a
        # refusal before the first connection is raised to the caller as one line instead.
        repeated = self.errors.get(where) == reason
        self.errors[where] = reason
        log.log(logging.DEBUG if self.refused or repeated else logging.WARNING,
                "broker %s unreachable: %s", where, reason)
        self._index = (self._index + 1) % len(self._params)
        self._tries += 1
        if self._tries % len(self._params):
            self._connect()  # fail over to the next address at once
        else:
            self._retry_later()

    def _retry_later(self) -> None:
        delay, self._delay = self._delay, min(self._delay * 2, self._backoff[1])
        self._timer = self._ioloop.call_later(delay, self._connect)

    @_guard
    def _on_open(self, conn: Any) -> None:
        coalesce_writes(conn)
        read_deliveries(conn)
        self._tries = 0
        self._delay = self._backoff[0]
        self.stats["connections"] += 1
        self._state = _RESTORING
        barrier = ControlOp("exchange_declare", {"exchange": self.topology.exchange,
                                                 "passive": True}, "restore barrier",
                            on_ok=self._open_publisher)
        self._reissue = [*self.topology.restore_ops(), barrier]
        conn.channel(on_open_callback=self._on_control_open)

    @_guard
    def _on_control_open(self, channel: Any) -> None:
        self._control = channel
        channel.add_on_close_callback(self._on_control_closed)
        ops, self._reissue = self._reissue, []
        for op in ops:
            self._issue(op)

    def _open_publisher(self) -> None:
        self._conn.channel(on_open_callback=self._on_publisher_open)

    @_guard
    def _on_publisher_open(self, channel: Any) -> None:
        channel.add_on_close_callback(self._on_publisher_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._on_ready(channel))

    @_guard
    def _on_ready(self, channel: Any) -> None:
        self._publisher = channel
        self._publish = publisher(channel)
        self._tag = 0  # delivery tags restart at 1 on every channel
        self._state = _READY
        self.connected.set()
        while self._deferred_ops:
            self._submit_op(self._deferred_ops.popleft())
        for consumer in list(self.topology.consumers.values()):
            self._start_consumer(consumer, None)
        self._pump()

    @_guard
    def _on_closed(self, conn: Any, reason: BaseException) -> None:
        self._conn = self._control = self._publisher = None
        self.connected.clear()
        for consumer in self.topology.consumers.values():
            consumer.reset()
        caller_ops = [op for op in (*self._pending_ops, *self._reissue) if op.future is not None]
        self._pending_ops.clear()
        self._reissue = []
        self._deferred_ops.extendleft(reversed(caller_ops))
        self._requeue_unconfirmed()
        if self._closing:
            self._ioloop.stop()
            return
        self.stats["reconnects"] += 1
        log.warning("connection to %s lost (%r); reconnecting", self._describe(self._index), reason)
        self._state = _CONNECTING
        self._retry_later()

    def _requeue_unconfirmed(self) -> None:
        """Unconfirmed messages go back to the front of the outbox, in their order, each
        marked as a resend (a dead letter's copy is not: its delivery is still held)."""
        self.stats["resent"] += len(self._unconfirmed)
        for item in self._unconfirmed.values():
            if item.after_confirm is None:
                item.mark_resent()
        self.outbox.extendleft(reversed(self._unconfirmed.values()))
        self._unconfirmed = {}

    @property
    def address(self) -> str | None:
        """``host:port`` of the broker node connected to now (None while reconnecting)."""
        return self._describe(self._index) if self.connected.is_set() else None

    def _describe(self, index: int) -> str:
        p = self._params[index]
        return f"{p.host}:{p.port}"

    # -- I/O thread: the control channel ---------------------------------------------------

    def _submit_op(self, op: ControlOp) -> None:
        if not op.start():
            return
        if self._state is not _READY:
            self._deferred_ops.append(op)
        elif self._control is None:
            self._reissue.append(op)  # the control channel is being reopened
        else:
            self._issue(op)

    def _issue(self, op: ControlOp) -> None:
        self._pending_ops.append(op)
        try:
            getattr(self._control, op.method)(callback=functools.partial(self._op_ok, op),
                                              **op.kwargs)
        except Exception as exc:  # pika refused it before sending (a bad argument)
            self._pending_ops.remove(op)
            op.fail(TransportError(f"{op.what}: {exc}"))

    @_guard
    def _op_ok(self, op: ControlOp, _frame: Any) -> None:
        if self._pending_ops and self._pending_ops[0] is op:
            self._pending_ops.popleft()
        else:
            self._pending_ops.remove(op)
        op.done()

    @_guard
    def _on_control_closed(self, channel: Any, reason: BaseException) -> None:
        if channel is not self._control:
            return
        self._control = None
        if not isinstance(reason, pika.exceptions.ChannelClosedByBroker) or self._conn is None \
                or not self._conn.is_open:
            return  # the connection is going: _on_closed re-queues the pending operations
        # The broker refused the oldest pending operation; later ones never ran.
        failed = self._pending_ops.popleft() if self._pending_ops else None
        if failed is not None:
            error = TransportError(f"{failed.what}: the broker refused it: "
                                   f"{reason.reply_code} {reason.reply_text}")
            if failed.future is None:
                self.restore_errors.append(str(error))
            failed.fail(error)
        self._reissue = [*self._pending_ops, *self._reissue]
        self._pending_ops.clear()
        self._conn.channel(on_open_callback=self._on_control_open)

    # -- I/O thread: publishing ------------------------------------------------------------

    @_guard
    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, Basic.Ack)
        unconfirmed, tag = self._unconfirmed, method.delivery_tag
        settled = []
        if method.multiple:
            while unconfirmed:
                first = next(iter(unconfirmed))
                if first > tag:
                    break
                settled.append(unconfirmed.pop(first))
        elif tag in unconfirmed:
            settled.append(unconfirmed.pop(tag))
        touched: set[ConsumerState] = set()
        for item in settled:
            self._finish(item, ok=ok, reason="the broker refused it (basic.nack)", touched=touched)
        self._flush_acks(touched)
        self._release_items(settled)
        self._pump()

    def _finish(self, item: Outgoing, *, ok: bool, reason: str,
                touched: set[ConsumerState]) -> None:
        if ok and not item.returned:
            self.stats["confirmed"] += 1
        elif not ok:
            self.stats["nacked"] += 1
            self._report(item, reason)
        if item.on_settled is not None:  # after its on_return: the notifier runs them in order
            self.notify(item.on_settled)
        if item.after_confirm is not None:
            consumer, channel, tag = item.after_confirm
            how = Settle.ACK if ok and not item.returned else Settle.REQUEUE
            self._settle((consumer, channel, tag, how, item.envelope, ""), touched)

    def _release_items(self, items: list[Outgoing]) -> None:
        for item in items:
            item.settled = True
        count = sum(1 for item in items if item.counted)
        if count:
            self._release(count)

    @_guard
    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        for item in self._unconfirmed.values():
            if (not item.returned and item.routing_key == method.routing_key
                    and item.properties.message_id == properties.message_id):
                item.returned = True
                self.stats["returned"] += 1
                self._report(item, f"unroutable: no queue is bound to {method.routing_key!r} on "
                                   f"exchange {method.exchange!r} ({method.reply_code} "
                                   f"{method.reply_text})")
                return

    def _report(self, item: Outgoing, reason: str) -> None:
        if item.on_return is not None:
            self.notify(item.on_return, item.envelope, reason)
        else:
            log.warning("message %s to %r: %s", item.envelope.message_id, item.routing_key, reason)

    @_guard
    def _on_publisher_closed(self, channel: Any, reason: BaseException) -> None:
        if channel is not self._publisher:
            return
        self._publisher = None
        if self._conn is None or not self._conn.is_open:
            return  # _on_closed handles the whole connection
        log.error("publisher channel closed by the broker (%r); reopening", reason)
        self._state = _RESTORING
        self._requeue_unconfirmed()
        self._ioloop.call_later(self._backoff[0], self._reopen_publisher)

    @_guard
    def _reopen_publisher(self) -> None:
        if self._conn is not None and self._conn.is_open and self._publisher is None:
            self._open_publisher()

    # -- I/O thread: consumers -------------------------------------------------------------

    def start_consumer(self, consumer: ConsumerState, future: Future[str]) -> None:
        self.call(lambda: self._start_consumer(consumer, future))

    def _start_consumer(self, consumer: ConsumerState, future: Future[str] | None) -> None:
        if future is not None and not future.set_running_or_notify_cancel():
            return
        if self._state is not _READY:
            self.topology.consumers[consumer.tag] = consumer  # starts when the link is ready
            if future is not None:
                future.set_result(consumer.tag)
            return
        self._conn.channel(on_open_callback=functools.partial(
            self._on_consumer_channel, consumer, future))

    @_guard
    def _on_consumer_channel(self, consumer: ConsumerState, future: Future[str] | None,
                             channel: Any) -> None:
        consumer.channel = channel
        channel.add_on_close_callback(functools.partial(self._on_consumer_closed, consumer, future))
        channel.add_on_cancel_callback(functools.partial(self._on_broker_cancel, consumer))
        channel.basic_qos(prefetch_count=consumer.prefetch, callback=functools.partial(
            self._on_qos, consumer, future, channel))

    @_guard
    def _on_qos(self, consumer: ConsumerState, future: Future[str] | None, channel: Any,
                _frame: Any) -> None:
        channel.basic_consume(consumer.queue, consumer.on_message, consumer_tag=consumer.tag,
                              callback=functools.partial(self._on_consuming, consumer, future))

    @_guard
    def _on_consuming(self, consumer: ConsumerState, future: Future[str] | None,
                      _frame: Any) -> None:
        self.topology.consumers[consumer.tag] = consumer
        if future is not None and not future.done():
            future.set_result(consumer.tag)

    @_guard
    def _on_consumer_closed(self, consumer: ConsumerState, future: Future[str] | None,
                            channel: Any, reason: BaseException) -> None:
        if channel is not consumer.channel:
            return
        consumer.reset()
        if consumer.closing is not None:  # cancelled by us: now its deliveries are requeued
            consumer.closing.set_result(consumer)
            consumer.closing = None
            return
        if future is not None and not future.done():
            future.set_exception(TransportError(
                f"cannot consume from queue {consumer.queue!r}: {_reason_text(reason)}"))
            return
        if consumer.tag not in self.topology.consumers or self._conn is None \
                or not self._conn.is_open:
            return  # cancelled by us, or the connection is going (restarted on reconnect)
        if getattr(reason, "reply_code", None) == 404 and not self._declare_again(consumer):
            log.error("queue %r is gone; consumer %s stops", consumer.queue, consumer.tag)
            self.topology.consumers.pop(consumer.tag, None)
            consumer.stop(join=False)
            return
        log.error("consumer channel for %r closed (%r); restarting", consumer.queue, reason)
        self._ioloop.call_later(self._backoff[0], lambda: self._restart(consumer))

    @_guard
    def _restart(self, consumer: ConsumerState) -> None:
        if self.topology.consumers.get(consumer.tag) is consumer and consumer.channel is None:
            self._start_consumer(consumer, None)

    def _declare_again(self, consumer: ConsumerState) -> bool:
        """The queue of ``consumer`` vanished under a live connection: if this transport
        declared it, declare it and its bindings again (the consumer restarts once its channel
        is closed). A node that failed over from a dead broker node can declare its exclusive
        queue before the cluster has removed the dead node's copy, which then takes the new
        one with it (seen on the 3-node cluster: 8 of 10 such nodes left deaf for good)."""
        ops = self.topology.redeclare_ops(consumer.queue)
        if not ops:
            return False
        log.warning("queue %r vanished; declaring it again", consumer.queue)
        for op in ops:
            self._submit_op(op)
        return True

    @_guard
    def _on_broker_cancel(self, consumer: ConsumerState, _frame: Any) -> None:
        """The broker cancelled the consumer (its queue was deleted)."""
        log.info("broker cancelled consumer %s on %r", consumer.tag, consumer.queue)
        channel = consumer.channel
        if channel is not None and channel.is_open and self._declare_again(consumer):
            channel.close()  # _on_consumer_closed restarts it, once declared again
            return
        self.topology.consumers.pop(consumer.tag, None)
        self._close_consumer(consumer, None)
        consumer.stop(join=False)

    def cancel_consumer(self, tag: str, future: Future[ConsumerState | None]) -> None:
        def cancel() -> None:
            consumer = self.topology.consumers.pop(tag, None)
            if consumer is None:
                future.set_result(None)
            else:
                self._close_consumer(consumer, future)

        self.call(cancel)

    def _close_consumer(self, consumer: ConsumerState, future: Future[Any] | None) -> None:
        """Close the consumer's channel: the broker requeues what it left unsettled."""
        consumer.cancelled = True
        channel = consumer.channel
        if channel is not None and channel.is_open:
            consumer.closing = future
            channel.close()  # _on_consumer_closed resolves the future once it is closed
        else:
            consumer.reset()
            if future is not None:
                future.set_result(consumer)

    # -- I/O thread: closing ---------------------------------------------------------------

    def _begin_close(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._ioloop.remove_timeout(self._timer)
            self._timer = None
        conn = self._conn
        if conn is not None and not (conn.is_closing or conn.is_closed):
            conn.close()  # _on_closed or _on_open_error stops the ioloop
        elif conn is None:
            self._ioloop.stop()


def _reason_text(reason: BaseException) -> str:
    code, text = getattr(reason, "reply_code", None), getattr(reason, "reply_text", None)
    return f"{code} {text}" if code is not None else repr(reason)


def _refusal(error: BaseException, params: pika.ConnectionParameters) -> str | None:
    """One line for a refusal that retrying cannot cure (403 bad login, 530 no such virtual
    host), else None: a broker that is down or slow may well answer the next try."""
    if isinstance(error, pika.exceptions.ProbableAuthenticationError):
        user = getattr(params.credentials, "username", "?")
        return f"refused the login of user {user!r} (403 ACCESS_REFUSED): check the user and password"
    if isinstance(error, pika.exceptions.ProbableAccessDeniedError):
        return (f"refused virtual host {params.virtual_host!r} (530 NOT_ALLOWED): it does not "
                f"exist or the user may not use it")
    return _tls_refusal(error)


#: OpenSSL's reason in pika's nested workflow error: "[SSL: CODE] text (_ssl.c:1006)".
_SSL_REASON = re.compile(r"\[SSL: ([A-Z0-9_]+)\] (.{0,200}?)\s*\(_ssl")


def _tls_refusal(error: BaseException) -> str | None:
    """A TLS handshake that retrying cannot cure: a certificate not trusted or for another
    name, a client certificate the broker refuses, a port that does not speak TLS. Each was
    retried for the whole connect timeout, then said as 'no broker reachable'."""
    match = _SSL_REASON.search(repr(error))
    if match is None:
        return None
    code, text = match.group(1), match.group(2).replace("\\", "").strip()
    if code == "WRONG_VERSION_NUMBER":
        return (f"does not speak TLS on that port (SSL: {code}): is it the plain AMQP port? "
                f"(amqps:// is usually 5671)")
    if "CERTIFICATE" in code or "UNKNOWN_CA" in code:
        return (f"failed the TLS handshake: {text} (SSL: {code}): check --tls-ca, --tls-cert, "
                f"--tls-key and --tls-server-name")
    return None


_OS_ERROR = re.compile(r"(\w+[Ee]rror)\((-?\d+), '([^']+)'\)")


def _short_reason(error: BaseException) -> str:
    """The operating system's words for a failed connection ("Connection refused") when
    pika's nested workflow error carries them, else its repr, shortened."""
    text = repr(error)
    match = _OS_ERROR.search(text)
    if match:
        return f"{match.group(3)} ({match.group(1)})"
    return text if len(text) <= 200 else text[:197] + "..."
