"""AMQP benchmarks: raw pika at its best, and the same traffic through AmqpTransport.

Each function returns a dict of figures; ``python -m cellframe.benchmarks.amqp`` prints them
all as JSON. They need the RabbitMQ at ``url`` and clean up the queues and exchanges they
declare.

- ``bench_raw_pika``: a ``SelectConnection`` publisher with up to 1,000 confirms in flight, and
  a consumer on its own connection and thread with prefetch 1,000 acking ``multiple`` every 100.
- ``bench_transport``: the same traffic through ``AmqpTransport.publish``/``consume``/``ack``
  (envelopes, confirms, one ack per message; optionally signed and verified).
- ``bench_raw_rpc`` / ``bench_transport_rpc``: request/reply round trips, one at a time.
"""

from __future__ import annotations

import json
import queue
import statistics
import threading
import time
import uuid
from typing import Any

import pika

from ..errors import BufferFullError
from ..transports.amqp import DEFAULT_URL, AmqpTransport
from ..wire.envelope import Envelope
from ..wire.signing import Signer

__all__ = ["RawRpc", "bench_raw_pika", "bench_raw_rpc", "bench_transport", "bench_transport_rpc",
           "main"]

_WINDOW = 1000  # confirms in flight, and the consumer's prefetch
_ACK_EVERY = 100


def bench_raw_pika(n: int = 20_000, size: int = 100, *, url: str = DEFAULT_URL,
                   like_cellframe: bool = False) -> dict[str, Any]:
    """Raw pika, done as well as pika can: confirmed publishes, batched acks.

    Bare by default: no properties, the default exchange, no ``mandatory``: the baseline the
    goals are set against. ``like_cellframe`` sends what a cellframe client sends instead: the
    properties and headers of a signed envelope, ``mandatory``, through a topic exchange (the
    broker decodes a headers table on every publish, which costs it about 15 us a message here).
    """
    name = f"cf-bench-raw-{uuid.uuid4().hex[:8]}"
    exchange = f"{name}.control" if like_cellframe else ""
    _declare(url, name, exchange=exchange)
    try:
        consumer = _RawConsumer(url, name, n)
        consumer.ready.wait(10)
        publisher = _RawPublisher(url, name, n, b"x" * size, exchange=exchange,
                                  properties=_signed_properties(size) if like_cellframe else None)
        cpu, start = time.process_time(), time.perf_counter()
        publisher.thread.start()
        publisher.thread.join(120)
        consumer.thread.join(120)
        return _rates("raw_pika_like_cellframe" if like_cellframe else "raw_pika", n, size,
                      start, publisher.done_at, consumer.first_at, consumer.done_at,
                      time.process_time() - cpu)
    finally:
        _delete(url, name, exchanges=(exchange,) if exchange else ())


def bench_transport(n: int = 20_000, size: int = 100, *, url: str = DEFAULT_URL,
                    signer: Signer | None = None) -> dict[str, Any]:
    """The same traffic through AmqpTransport: envelopes, confirms, an ack per message."""
    token = uuid.uuid4().hex[:8]
    names = _topology_names(token)
    pub, con = _open(url, names), _open(url, names)
    queue_name = f"cf-bench-{token}"
    try:
        con.declare_queue(queue_name)
        con.bind(queue_name, "role.bench")
        done = threading.Event()
        first_at: list[float] = []
        count = [0]

        def handle(delivery: Any) -> None:
            if signer is not None:
                signer.verify(delivery.envelope, delivery.routing_key)
            delivery.ack()
            count[0] += 1
            if count[0] == 1:
                first_at.append(time.perf_counter())
            if count[0] == n:
                done.set()

        con.consume(queue_name, handle, prefetch=_WINDOW)
        body = b"x" * size
        cpu, start = time.process_time(), time.perf_counter()
        _publish_all(pub, n, body, signer)
        pub.flush(120)
        confirmed_at = time.perf_counter()
        done.wait(120)
        label = "transport_signed" if signer else "transport"
        return _rates(label, n, size, start, confirmed_at, first_at[0], time.perf_counter(),
                      time.process_time() - cpu)
    finally:
        _close(url, [pub, con], names, [queue_name])


def bench_raw_rpc(n: int = 2_000, *, url: str = DEFAULT_URL) -> dict[str, Any]:
    """Raw pika request/reply round trips, one at a time: latency percentiles."""
    with RawRpc(url) as rpc:
        return _latency("raw_rpc", rpc.round_trips(n))


class RawRpc:
    """Raw pika request/reply, open across any number of timed batches: a
    ``BlockingConnection`` client on the caller's thread, a server on a thread of its own,
    no confirms, no thread hand-off on either side. ``round_trips(n)`` times ``n`` one at a
    time; ``close`` stops the server and deletes the request queue."""

    def __init__(self, url: str = DEFAULT_URL) -> None:
        self.url = url
        self.name = f"cf-bench-rpc-{uuid.uuid4().hex[:8]}"
        _declare(url, self.name)
        self._server = threading.Thread(target=_raw_rpc_server, args=(url, self.name), daemon=True)
        self._server.start()
        self._connection = pika.BlockingConnection(pika.URLParameters(url))
        self._channel = self._connection.channel()
        self._reply_queue = self._channel.queue_declare("", exclusive=True).method.queue
        self._replies: list[bytes] = []
        self._channel.basic_consume(self._reply_queue,
                                    lambda ch, m, p, body: self._replies.append(body),
                                    auto_ack=True)
        self._sent = 0

    def round_trips(self, n: int) -> list[float]:
        """Seconds for each of ``n`` requests from publish to its reply in hand."""
        channel, connection, replies = self._channel, self._connection, self._replies
        latencies = []
        for _ in range(n):
            self._sent += 1
            started = time.perf_counter()
            channel.basic_publish("", self.name, b"%d" % self._sent, pika.BasicProperties(
                reply_to=self._reply_queue, correlation_id=str(self._sent)))
            while not replies:
                connection.process_data_events(time_limit=None)
            replies.clear()
            latencies.append(time.perf_counter() - started)
        return latencies

    def close(self) -> None:
        try:
            self._channel.basic_publish("", self.name, b"")  # no reply-to: the server stops
            self._connection.close()
            self._server.join(10)
        finally:
            _delete(self.url, self.name)

    def __enter__(self) -> RawRpc:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def bench_transport_rpc(n: int = 2_000, *, url: str = DEFAULT_URL) -> dict[str, Any]:
    """Request/reply round trips through two AmqpTransports, one at a time."""
    token = uuid.uuid4().hex[:8]
    names = _topology_names(token)
    client, server = _open(url, names), _open(url, names)
    requests_q, replies_q = f"cf-bench-req-{token}", f"cf-bench-rep-{token}"
    try:
        server.declare_queue(requests_q)
        server.bind(requests_q, "role.rpc")
        client.declare_queue(replies_q, exclusive=True)
        client.bind(replies_q, f"reply.{token}")

        def answer(delivery: Any) -> None:
            request = delivery.envelope
            server.publish(request.reply_to, Envelope(request.body, reply_to=None))
            delivery.ack()

        arrived: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def take(delivery: Any) -> None:
            delivery.ack()
            arrived.put(delivery)

        server.consume(requests_q, answer)
        client.consume(replies_q, take)
        latencies = []
        for i in range(n):
            started = time.perf_counter()
            client.publish("role.rpc", Envelope(b"%d" % i, reply_to=f"reply.{token}"))
            arrived.get(timeout=10)
            latencies.append(time.perf_counter() - started)
        return _latency("transport_rpc", latencies)
    finally:
        _close(url, [client, server], names, [requests_q])


def main() -> None:
    """Run every AMQP benchmark once and print the figures as JSON."""
    secret = Signer(b"benchmark secret, not for use!!")
    results = [bench_raw_pika(), bench_transport(), bench_transport(signer=secret),
               bench_raw_rpc(), bench_transport_rpc()]
    print(json.dumps(results, indent=2))


# -- raw pika pieces -----------------------------------------------------------------------


class _RawPublisher:
    """A SelectConnection publisher keeping up to ``_WINDOW`` confirms in flight."""

    def __init__(self, url: str, queue_name: str, n: int, body: bytes, *, exchange: str = "",
                 properties: pika.BasicProperties | None = None) -> None:
        self.queue, self.n, self.body = queue_name, n, body
        self.exchange, self.properties = exchange, properties
        self.routing_key = _LIKE_KEY if exchange else queue_name
        self.sent = self.confirmed = 0
        self.done_at = 0.0
        self.connection = pika.SelectConnection(pika.URLParameters(url),
                                                on_open_callback=self._on_open)
        self.thread = threading.Thread(target=self.connection.ioloop.start, daemon=True)

    def _on_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._fill())

    def _fill(self) -> None:
        while self.sent < self.n and self.sent - self.confirmed < _WINDOW:
            self.channel.basic_publish(self.exchange, self.routing_key, self.body,
                                       self.properties, mandatory=bool(self.exchange))
            self.sent += 1

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        self.confirmed = method.delivery_tag if method.multiple else self.confirmed + 1
        if self.confirmed >= self.n:
            self.done_at = time.perf_counter()
            self.connection.close()
            self.connection.ioloop.stop()
        else:
            self._fill()


class _RawConsumer:
    """A SelectConnection consumer with prefetch ``_WINDOW``, acking every ``_ACK_EVERY``."""

    def __init__(self, url: str, queue_name: str, n: int) -> None:
        self.queue, self.n = queue_name, n
        self.count = 0
        self.first_at = self.done_at = 0.0
        self.ready = threading.Event()
        self.connection = pika.SelectConnection(pika.URLParameters(url),
                                                on_open_callback=self._on_open)
        self.thread = threading.Thread(target=self.connection.ioloop.start, daemon=True)
        self.thread.start()

    def _on_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel: Any) -> None:
        channel.basic_qos(prefetch_count=_WINDOW, callback=lambda _frame: channel.basic_consume(
            self.queue, self._on_message, callback=lambda _frame: self.ready.set()))

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.count += 1
        if self.count == 1:
            self.first_at = time.perf_counter()
        if self.count % _ACK_EVERY == 0 or self.count == self.n:
            channel.basic_ack(method.delivery_tag, multiple=True)
        if self.count == self.n:
            self.done_at = time.perf_counter()
            self.connection.close()
            self.connection.ioloop.stop()


def _raw_rpc_server(url: str, queue_name: str) -> None:
    """Answer each request on its reply-to queue; a request without one stops the server."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()

    def serve(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        if properties.reply_to:
            ch.basic_publish("", properties.reply_to, body,
                             pika.BasicProperties(correlation_id=properties.correlation_id))
        ch.basic_ack(method.delivery_tag)
        if not properties.reply_to:
            ch.stop_consuming()

    channel.basic_consume(queue_name, serve)
    channel.start_consuming()
    connection.close()


# -- shared helpers ------------------------------------------------------------------------


def _publish_all(pub: AmqpTransport, n: int, body: bytes, signer: Signer | None) -> None:
    for _ in range(n):
        envelope = Envelope(body)
        if signer is not None:
            envelope = signer.sign(envelope, "role.bench")
        while True:
            try:
                pub.publish("role.bench", envelope)
                break
            except BufferFullError:
                pub.flush(0.001)  # back off until confirms make room


def _rates(label: str, n: int, size: int, start: float, confirmed_at: float, first_at: float,
           consumed_at: float, cpu: float) -> dict[str, Any]:
    """Rates from wall-clock times; ``cpu_us_per_msg`` (this process, all threads) says more
    than the rates on a shared machine, where they fall whenever others take the cores."""
    return {
        "bench": label, "n": n, "size": size,
        "publish_per_s": round(n / (confirmed_at - start)),
        "consume_per_s": round(n / (consumed_at - first_at)),
        "end_to_end_per_s": round(n / (consumed_at - start)),
        "seconds": round(consumed_at - start, 3),
        "cpu_us_per_msg": round(cpu / n * 1e6, 1),
    }


def _latency(label: str, latencies: list[float]) -> dict[str, Any]:
    cuts = statistics.quantiles(latencies, n=100)
    return {"bench": label, "n": len(latencies),
            "p50_ms": round(cuts[49] * 1000, 3), "p90_ms": round(cuts[89] * 1000, 3),
            "p99_ms": round(cuts[98] * 1000, 3), "max_ms": round(max(latencies) * 1000, 3)}


def _topology_names(token: str) -> dict[str, str]:
    return {"exchange": f"cf-bench-{token}.control",
            "dead_letter_exchange": f"cf-bench-{token}.dlx",
            "dead_letter_queue": f"cf-bench-{token}.dlq"}


def _open(url: str, names: dict[str, str]) -> AmqpTransport:
    return AmqpTransport(url, exchange=names["exchange"],
                         dead_letter_exchange=names["dead_letter_exchange"],
                         dead_letter_queue=names["dead_letter_queue"])


def _declare(url: str, queue_name: str, *, exchange: str = "") -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(queue_name)
    if exchange:
        channel.exchange_declare(exchange, "topic")
        channel.queue_bind(queue_name, exchange, _LIKE_KEY)
    connection.close()


_LIKE_KEY = "role.bench"


def _signed_properties(size: int) -> pika.BasicProperties:
    """The AMQP properties of a signed cellframe envelope as a client sends it."""
    from ..transports._amqp_wire import to_amqp

    envelope = Envelope(b"x" * size, reply_to="reply.bench-client", sender="bench-client")
    return to_amqp(Signer(b"k" * 32).sign(envelope, _LIKE_KEY), persistent=False)


def _delete(url: str, *queues: str, exchanges: tuple[str, ...] = ()) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    for name in queues:
        channel.queue_delete(name)
    for name in exchanges:
        channel.exchange_delete(name)
    connection.close()


def _close(url: str, transports: list[AmqpTransport], names: dict[str, str],
           queues: list[str]) -> None:
    for transport in transports:
        transport.close()
    _delete(url, names["dead_letter_queue"], *queues,
            exchanges=(names["exchange"], names["dead_letter_exchange"]))


if __name__ == "__main__":
    main()
