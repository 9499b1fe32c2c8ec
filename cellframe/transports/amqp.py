"""AmqpTransport: the Transport interface on RabbitMQ, with the broker owning the mailboxes.

    transport = AmqpTransport(["amqp://guest:guest@mq1:5672/%2F", "amqp://guest:guest@mq2/"])
    node = Node(transport=transport)

What it guarantees, and how:

- *Nothing acknowledged is lost.* Publishes are confirmed by the broker (publisher confirms,
  up to ``max_in_flight`` at once) and kept in a bounded buffer until then; after a lost
  connection the unconfirmed ones are sent again. A full buffer raises ``BufferFullError``
  from ``publish``: back off, never a silent drop. A delivery is acked to the broker only when
  the handler calls ``ack()``.
- *Unroutable is an error, not a silence.* Every publish is ``mandatory``; a message no queue
  receives comes back to ``on_return(envelope, reason)``.
- *Faults heal.* Several broker addresses may be given; it fails over to the next, reconnects
  with backoff, re-declares its exchanges, queues and bindings, and restarts its consumers.
  Redelivered messages carry ``redelivered=True``; delivery is at least once, and the node's
  dedup by message id makes a duplicate change nothing.
- *Durable mailboxes.* A durable queue keeps its backlog for a consumer that comes later; with
  ``quorum=True`` durable queues are quorum queues with ``x-delivery-limit``, so a poison
  message is dead-lettered instead of redelivered for ever.

Threads: one I/O thread owns the connection (see ``_amqp_io``); each consumer has a worker
thread that runs its handler, except an ``inline`` consumer, whose handler runs on the I/O
thread; ``on_return`` callbacks run on a notifier thread.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import pika

from ..errors import (
    BrokerUnavailableError,
    BufferFullError,
    ClosedTransportError,
    ConfigError,
    TransportError,
)
from ..wire.envelope import Envelope
from ._amqp_consumer import ConsumerState
from ._amqp_io import BrokerLink
from ._amqp_state import ControlOp, Outgoing, Topology
from ._amqp_wire import encode_properties, with_reason
from .base import DeliveryHandler, ReturnHandler, SettledHandler
from .tls import TlsOptions

__all__ = ["DEFAULT_URL", "AmqpTransport"]

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
log = logging.getLogger("cellframe.transports.amqp")


class AmqpTransport:
    """Topic-routed, confirmed, at-least-once messaging on RabbitMQ (see the module doc).

    ``urls``: one broker URL or several, tried in order (failover). ``exchange``,
    ``dead_letter_exchange`` and ``dead_letter_queue`` name the topology it declares (a topic
    exchange for control, a fanout dead-letter exchange and its queue). ``quorum``: durable
    queues become quorum queues with ``x-delivery-limit=delivery_limit`` (all but the
    dead-letter queue, which stays classic). ``heartbeat``: AMQP
    heartbeat seconds. ``max_in_flight``: unconfirmed publishes on the wire; ``buffer_size``:
    publishes accepted but not yet confirmed, beyond which ``publish`` raises BufferFullError.
    ``connect_timeout`` bounds the first connection, ``op_timeout`` each declaration or
    consume, ``close_timeout`` the wait for confirms and handlers on close. ``backoff``: the
    first and longest pause between reconnection rounds. ``name`` shows as the connection
    name in RabbitMQ's tools. ``tls``: the certificates of ``amqps://`` URLs
    (``transports.tls.TlsOptions``); without it an ``amqps://`` URL is checked against the
    system's trusted CAs.
    """

    def __init__(
        self,
        urls: str | Sequence[str] = DEFAULT_URL,
        *,
        exchange: str = "cellframe.control",
        dead_letter_exchange: str = "cellframe.dead-letter",
        dead_letter_queue: str = "cellframe.dead-letter",
        quorum: bool = False,
        delivery_limit: int = 5,
        heartbeat: int = 30,
        max_in_flight: int = 1000,
        buffer_size: int = 10_000,
        max_message_bytes: int = 16 * 2**20,
        connect_timeout: float = 10.0,
        op_timeout: float = 30.0,
        close_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.1, 5.0),
        name: str | None = None,
        tls: TlsOptions | None = None,
    ) -> None:
        _check_limits(max_in_flight=max_in_flight, buffer_size=buffer_size,
                      delivery_limit=delivery_limit, heartbeat=heartbeat)
        for what, value in (("exchange", exchange), ("dead_letter_exchange", dead_letter_exchange),
                            ("dead_letter_queue", dead_letter_queue)):
            _check_declared_name(value, what)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._exchange = exchange
        self._dead_letter_exchange = dead_letter_exchange
        self._dead_letter_queue = dead_letter_queue
        self._quorum = quorum
        self._delivery_limit = delivery_limit
        self._buffer_size = buffer_size
        self._max_message_bytes = max_message_bytes
        self._op_timeout = op_timeout
        self._close_timeout = close_timeout
        self._buffered = 0
        self._buffer_cond = threading.Condition()
        self._closed = False
        self._lock = threading.Lock()
        self._consumers: dict[str, ConsumerState] = {}
        params = _parameters(urls, heartbeat=heartbeat, name=self.name, tls=tls)
        # The dead-letter queue is classic in either mode: every client and node of a cluster
        # declares it, and the broker refuses a queue redeclared with another type, so a
        # `cellframe send` without --quorum could not talk to a quorum cluster otherwise.
        topology = Topology(exchange, dead_letter_exchange,
                            self._queue_kwargs(dead_letter_queue, durable=True, exclusive=False,
                                               dead_letters=False, quorum=False))
        self._link = BrokerLink(params, topology, max_in_flight=max_in_flight, backoff=backoff,
                                release=self._release, name=self.name)
        self._link.start()
        deadline = time.monotonic() + connect_timeout
        # Woken every 50 ms to see a refusal: a bad login fails at once, not after the timeout.
        while not self._link.connected.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if self._link.refused is None and time.monotonic() < deadline:
                continue
            self._link.shutdown(1.0)
            self._closed = True
            if self._link.refused is not None:
                raise BrokerUnavailableError(self._link.refused)
            tried = "; ".join(f"{url}: {err}" for url, err in self._link.errors.items())
            raise BrokerUnavailableError(
                f"no broker reachable within {connect_timeout} s ({tried or 'no answer'})")
        if self._link.restore_errors:
            self.close()
            raise TransportError("the broker refused this transport's topology: "
                                 + "; ".join(self._link.restore_errors))

    # -- the Transport protocol ------------------------------------------------------------

    @property
    def dead_letter_queue(self) -> str:
        return self._dead_letter_queue

    def declare_queue(self, name: str, *, durable: bool = False, exclusive: bool = False) -> None:
        kwargs = self._queue_kwargs(name, durable=durable, exclusive=exclusive)
        topology = self._link.topology
        self._control("queue_declare", kwargs, f"declare queue {name!r}",
                      lambda: topology.queues.__setitem__(name, kwargs))

    def delete_queue(self, name: str) -> None:
        _check_name(name, "queue name")
        topology = self._link.topology
        self._control("queue_delete", {"queue": name}, f"delete queue {name!r}",
                      lambda: topology.forget_queue(name))

    def bind(self, queue: str, pattern: str) -> None:
        _check_name(queue, "queue name")
        _check_name(pattern, "binding pattern", empty_ok=True)
        topology = self._link.topology
        self._control("queue_bind", {"queue": queue, "exchange": self._exchange,
                                     "routing_key": pattern}, f"bind {queue!r} to {pattern!r}",
                      lambda: topology.bindings.__setitem__((queue, pattern), None))

    def unbind(self, queue: str, pattern: str) -> None:
        _check_name(queue, "queue name")
        _check_name(pattern, "binding pattern", empty_ok=True)
        topology = self._link.topology
        self._control("queue_unbind", {"queue": queue, "exchange": self._exchange,
                                       "routing_key": pattern},
                      f"unbind {queue!r} from {pattern!r}",
                      lambda: topology.bindings.pop((queue, pattern), None))

    def publish(self, routing_key: str, envelope: Envelope, *, persistent: bool = False,
                on_return: ReturnHandler | None = None,
                on_settled: SettledHandler | None = None) -> None:
        """Hand the envelope to the I/O thread and return; raises BufferFullError when
        ``buffer_size`` messages already await the broker's confirmation."""
        self._publish(self._exchange, routing_key, envelope, persistent, on_return, on_settled)

    def dead_letter(self, envelope: Envelope, reason: str) -> None:
        self._check_open()
        copy = with_reason(envelope, reason)
        self._publish(self._dead_letter_exchange, "dead", copy, True, None)

    def consume(self, queue: str, handler: DeliveryHandler, *, prefetch: int = 256,
                inline: bool = False) -> str:
        """See Transport.consume. ``inline`` runs ``handler`` on the I/O thread as each
        delivery is read: no worker thread and no queue between them."""
        self._check_open()
        _check_name(queue, "queue name")
        if not isinstance(prefetch, int) or isinstance(prefetch, bool) \
                or not 1 <= prefetch <= 65_535:
            raise ConfigError(f"prefetch {prefetch!r} must be an int from 1 to 65535")
        tag = f"{self.name}.{uuid.uuid4().hex[:12]}"
        consumer = ConsumerState(tag, queue, handler, prefetch, self._link.settle, inline=inline)
        future: Future[str] = Future()
        self._link.start_consumer(consumer, future)
        try:
            self._wait(future, f"consume from {queue!r}")
        except BaseException:
            consumer.stop()
            raise
        with self._lock:
            self._consumers[tag] = consumer
        return tag

    def flush(self, timeout: float) -> bool:
        """Wait until every message published before this call is confirmed by the broker, or
        returned as unroutable or refused (its ``on_return`` then has run); False if
        ``timeout`` seconds passed first. Messages published meanwhile, by other threads, are
        not waited for. Raises TransportError on a consumer's ``inline`` handler, which runs on
        the I/O thread that settles them."""
        deadline = time.monotonic() + timeout
        if not self._link.alive:
            return self._buffered == 0  # nothing will settle any more
        pending = self._link.unsettled(timeout)
        if pending is None:
            return False
        with self._buffer_cond:
            while pending := [item for item in pending if not item.settled]:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._buffer_cond.wait(left)
        return self._link.notices_caught_up(max(0.0, deadline - time.monotonic()))

    def wait_for_room(self, timeout: float) -> bool:
        """Wait until ``publish`` has room in the buffer again (True), or ``timeout`` seconds
        passed (False): how a publisher backs off after BufferFullError. Cheaper than
        ``flush``, which lists every unsettled message: backing off with ``flush(0.001)`` was
        13% of the client's samples in a py-spy profile of the control pipeline benchmark
        (the client's CPU a message, 33-36 us, did not move measurably with this alone)."""
        with self._buffer_cond:
            return self._buffer_cond.wait_for(lambda: self._buffered < self._buffer_size,
                                              timeout)

    def cancel(self, consumer_tag: str) -> None:
        self._check_open()
        future: Future[ConsumerState | None] = Future()
        self._link.cancel_consumer(consumer_tag, future)
        self._wait(future, f"cancel consumer {consumer_tag!r}")
        with self._lock:
            consumer = self._consumers.pop(consumer_tag, None)
        if consumer is not None:
            consumer.stop(timeout=self._close_timeout)

    def close(self) -> None:
        """Let running handlers finish (their acks count), wait up to ``close_timeout`` for
        unconfirmed messages, then disconnect; unsettled deliveries go back to their queues."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            consumers = list(self._consumers.values())
            self._consumers.clear()
        for consumer in consumers:
            consumer.cancelled = True  # deliveries not yet started stay with the broker
        for consumer in consumers:
            consumer.stop(timeout=self._close_timeout)
        if not self.flush(self._close_timeout):
            log.warning("%s closing with %d messages unconfirmed", self.name, self._buffered)
        self._link.shutdown(self._close_timeout)

    # -- beyond the protocol ---------------------------------------------------------------

    def __enter__(self) -> AmqpTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connected(self) -> bool:
        return self._link.connected.is_set()

    @property
    def broker_address(self) -> str | None:
        """``host:port`` of the broker node this transport is connected to (None while it
        reconnects): peers ask whether that node is up before they take a queue of ours
        that vanished for a death (``cellframe.healing.brokercheck``)."""
        return self._link.address

    def wait_connected(self, timeout: float) -> bool:
        """True once a broker connection is open with the topology restored."""
        return self._link.connected.wait(timeout)

    @property
    def buffered(self) -> int:
        """Messages handed to ``publish`` that the broker has not confirmed yet."""
        return self._buffered

    def stats(self) -> dict[str, int]:
        """Counters: published, confirmed, returned, nacked, resent (after a reconnect),
        acked, requeued, dead_lettered, connections, reconnects, buffered."""
        return {**self._link.stats, "buffered": self._buffered}

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self.connected else "reconnecting"
        return f"<AmqpTransport {self.name} {state} exchange={self._exchange!r}>"

    # -- internals -------------------------------------------------------------------------

    def _queue_kwargs(self, name: str, *, durable: bool, exclusive: bool,
                      dead_letters: bool = True, quorum: bool | None = None) -> dict[str, Any]:
        _check_declared_name(name, "queue name")
        arguments: dict[str, Any] = {}
        if dead_letters:
            arguments["x-dead-letter-exchange"] = self._dead_letter_exchange
        if (self._quorum if quorum is None else quorum) and durable and not exclusive:
            # Quorum queues must be durable and cannot be exclusive (services.md).
            arguments["x-queue-type"] = "quorum"
            if dead_letters:
                # The broker's own dead-lettering (delivery limit, TTL) is then confirmed by
                # the dead-letter queue instead of fire-and-forget; 3.10 requires
                # reject-publish overflow for that (services.md).
                arguments.update({"x-delivery-limit": self._delivery_limit,
                                  "x-dead-letter-strategy": "at-least-once",
                                  "x-overflow": "reject-publish"})
        return {"queue": name, "durable": durable, "exclusive": exclusive, "arguments": arguments}

    def _control(self, method: str, kwargs: dict[str, Any], what: str, on_ok: Any) -> None:
        self._check_open()
        future: Future[None] = Future()
        self._link.control(ControlOp(method, kwargs, what, on_ok, future))
        self._wait(future, what)

    def _wait(self, future: Future[Any], what: str) -> Any:
        try:
            return future.result(timeout=self._op_timeout)
        except FutureTimeout as exc:
            future.cancel()
            raise BrokerUnavailableError(
                f"{what}: no broker answered within {self._op_timeout} s") from exc

    def _publish(self, exchange: str, routing_key: str, envelope: Envelope, persistent: bool,
                 on_return: ReturnHandler | None,
                 on_settled: SettledHandler | None = None) -> None:
        self._check_open()
        if not isinstance(envelope, Envelope):
            raise TransportError(f"publish needs an Envelope, not {type(envelope).__name__}")
        if not isinstance(envelope.body, bytes):
            raise TransportError(
                f"Envelope body must be bytes, not {type(envelope.body).__name__}")
        if not isinstance(routing_key, str) or len(routing_key.encode("utf-8", "replace")) > 255:
            raise TransportError(f"routing key {str(routing_key)[:40]!r} is not a str of at "
                                 "most 255 bytes")
        if len(envelope.body) > self._max_message_bytes:
            raise TransportError(f"envelope body of {len(envelope.body)} bytes is over the "
                                 f"{self._max_message_bytes}-byte limit")
        properties = encode_properties(envelope, persistent=persistent)
        with self._buffer_cond:
            if self._buffered >= self._buffer_size:
                raise BufferFullError(
                    f"{self._buffered} messages await broker confirmation "
                    f"(buffer_size={self._buffer_size}); back off and retry")
            self._buffered += 1
        self._link.send(Outgoing(exchange, routing_key, envelope, properties, on_return,
                                 on_settled=on_settled, persistent=persistent))

    def _release(self, count: int) -> None:
        with self._buffer_cond:
            self._buffered -= count
            self._buffer_cond.notify_all()  # a flush waits for particular messages

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedTransportError(f"transport {self.name} is closed")
        if not self._link.alive:
            raise TransportError(f"transport {self.name}: its I/O thread has stopped")


def _parameters(urls: str | Sequence[str], *, heartbeat: int, name: str,
                tls: TlsOptions | None = None) -> list[pika.ConnectionParameters]:
    """pika parameters for each broker address, with heartbeats, a connection name and, for
    ``amqps://``, a verifying TLS context."""
    if isinstance(urls, str):
        urls = [urls]
    if not urls:
        raise ConfigError("AmqpTransport needs at least one broker URL")
    params = []
    for url in urls:
        _check_url(url)
        try:
            p = pika.URLParameters(url)
        except Exception as exc:
            raise ConfigError(f"broker URL {redacted(url)!r} is malformed: {exc}") from exc
        p.heartbeat = heartbeat
        p.connection_attempts = 1
        p.socket_timeout = p.stack_timeout = 5.0
        p.blocked_connection_timeout = 60.0
        p.client_properties = {"connection_name": name}
        secure = url.lower().startswith("amqps://")
        in_url = p.ssl_options is not None and "ssl_options=" in url
        if secure and in_url and tls is not None:
            # which one won was a silent choice: the TlsOptions, and the URL's were dropped
            raise ConfigError(f"{url.split('@')[-1]!r} carries ssl_options and TLS options "
                              "(--tls-*) were given too: give them one way, not both")
        if secure and in_url:
            _check_url_tls(p.ssl_options, url)  # pika's own ssl_options URL argument holds
        elif secure:
            context = (tls or TlsOptions()).context()
            server_name = tls.server_name if tls is not None and tls.server_name else p.host
            p.ssl_options = pika.SSLOptions(context, server_name)
        elif tls is not None or p.ssl_options is not None:
            # pika's ssl_options on an amqp:// URL would have spoken TLS to the plain port.
            raise ConfigError(f"TLS options given for {url.split('@')[-1]!r}, which is not an "
                              "amqps:// URL")
        params.append(p)
    return params


def _check_url_tls(options: pika.SSLOptions, url: str) -> None:
    """The TLS context pika built from a URL's ``ssl_options`` checks the broker as
    ``TlsOptions`` does: ``{'protocol': 2}`` (PROTOCOL_TLS) made one that checked neither the
    certificate nor the name, and TLS 1.0 with ``3``."""
    context = options.context
    if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
        raise ConfigError(f"the ssl_options of {url.split('@')[-1]!r} would leave the broker's "
                          "certificate unchecked (drop 'protocol'): cellframe always checks it")
    if context.minimum_version < ssl.TLSVersion.TLSv1_2:
        context.minimum_version = ssl.TLSVersion.TLSv1_2


#: ``scheme://user:password@``: what ``redacted`` hides the password of.
_CREDENTIALS = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@")


def redacted(url: str) -> str:
    """A broker URL with its password as ``***``, for messages and logs: a malformed URL's
    error showed it whole."""
    return _CREDENTIALS.sub(r"\1:***@", url, count=1)


def _check_url(url: object) -> None:
    """A broker URL is ``amqp[s]://[user:password@]host[:port][/vhost]``; pika alone would
    accept ``http://...`` and fail on ``not a url`` with an IndexError."""
    from urllib.parse import urlsplit

    example = "amqp://USER:PASSWORD@HOST:5672/%2F"
    if not isinstance(url, str):
        raise ConfigError(f"broker URL {url!r} must be a str like {example}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (read for the ValueError a bad port raises)
    except ValueError as exc:
        raise ConfigError(f"broker URL {redacted(url)!r} is malformed ({exc}); write it like {example}") from None
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigError(f"broker URL {redacted(url)!r} must start with amqp:// or amqps://, like {example}")
    if not parts.hostname:
        raise ConfigError(f"broker URL {redacted(url)!r} names no host; write it like {example}")


def _check_name(name: object, what: str, *, empty_ok: bool = False) -> None:
    """AMQP names are short strings: at most 255 bytes of UTF-8."""
    if not isinstance(name, str):
        raise ConfigError(f"{what} {name!r} must be a str of 1 to 255 bytes")
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > 255 or (size == 0 and not empty_ok):
        raise ConfigError(f"{what} {name[:40]!r} must be 1 to 255 bytes, not {size}")


def _check_declared_name(name: object, what: str) -> None:
    """A name this transport declares: an AMQP name, and not one of the broker's own. RabbitMQ
    refuses to declare a name starting ``amq.`` (403 ACCESS_REFUSED, which closes the channel:
    the transport then waited its whole connect timeout and said "no broker reachable")."""
    _check_name(name, what)
    if isinstance(name, str) and name.startswith("amq."):
        raise ConfigError(f"{what} {name[:40]!r} starts with 'amq.', which the broker keeps "
                          "for its own exchanges and queues: choose another name")


def _check_limits(**limits: int) -> None:
    for what, value in limits.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{what} must be a positive int, not {value!r}")
