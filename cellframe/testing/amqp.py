"""A test's own corner of a shared RabbitMQ: unique names, and everything removed afterwards.

Many test runs (and many engineers) share one broker, so a test must never see another's
messages nor leave anything behind. ``AmqpNames`` gives one test a control exchange, a
dead-letter exchange and queue, and a queue prefix, all carrying a token no other test has;
the transports it opens record every queue they declare, and ``cleanup`` closes them and
deletes those queues and the exchanges. The plugin's ``amqp_names`` fixture does both.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions

from ..errors import CellframeError
from ..transports.amqp import AmqpTransport
from ..transports.topology import AmqpTopology, amqp_topology

__all__ = ["AmqpNames", "raw_channel"]

log = logging.getLogger("cellframe.testing")

#: Short heartbeats and timeouts: a test that loses its broker fails in seconds, not minutes.
TEST_SETTINGS: dict[str, Any] = {"heartbeat": 5, "connect_timeout": 5.0, "op_timeout": 10.0,
                                 "close_timeout": 5.0}


@contextlib.contextmanager
def raw_channel(url: str) -> Iterator[Any]:
    """A plain pika channel, for inspecting or cleaning the broker behind the transport."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        yield connection.channel()
    finally:
        connection.close()


class _RecordingTransport(AmqpTransport):
    """An AmqpTransport that notes the queues it declares, so the test can delete them."""

    def __init__(self, urls: str | Sequence[str], declared: list[str], **options: Any) -> None:
        super().__init__(urls, **options)
        self._declared = declared

    def declare_queue(self, name: str, **options: Any) -> None:
        super().declare_queue(name, **options)
        if name not in self._declared:
            self._declared.append(name)


@dataclass
class AmqpNames:
    """One test's topology on the broker at ``url``: pass ``topology`` to an AmqpTransport and
    ``queue_prefix`` to a Node or Client, or let ``connect`` do it."""

    url: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    transports: list[AmqpTransport] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)

    @property
    def exchange(self) -> str:
        return f"cf-test.{self.token}.control"

    @property
    def queue_prefix(self) -> str:
        return f"cf-test.{self.token}."

    @property
    def topology(self) -> AmqpTopology:
        return amqp_topology(self.exchange)

    def queue(self, label: str) -> str:
        """A queue name of this test's own, deleted with the rest."""
        name = self.queue_prefix + label
        if name not in self.queues:
            self.queues.append(name)
        return name

    def connect(self, urls: str | Sequence[str] | None = None, **options: Any) -> AmqpTransport:
        """A transport on this test's topology (short heartbeats and timeouts, a connection
        name carrying the token), closed by ``cleanup``."""
        settings = {**TEST_SETTINGS, "name": f"cf-test-{self.token}", **self.topology, **options}
        transport = _RecordingTransport(urls or self.url, self.queues, **settings)
        self.transports.append(transport)
        return transport

    def cleanup(self) -> None:
        """Close every transport ``connect`` opened, then delete this test's queues and
        exchanges from the broker."""
        for transport in reversed(self.transports):
            try:
                transport.close()
            except CellframeError as error:
                log.warning("closing a test transport failed: %s", error)
        self.transports.clear()
        topology = self.topology
        with raw_channel(self.url) as channel:
            channel = _delete(channel, "queue", [*self.queues, topology["dead_letter_queue"]])
            _delete(channel, "exchange", [topology["exchange"], topology["dead_letter_exchange"]])


def _delete(channel: Any, kind: str, names: list[str]) -> Any:
    """Delete queues or exchanges, going on past any the broker refuses; the channel to use
    next (a refusal closes a channel)."""
    for name in names:
        try:
            if kind == "queue":
                channel.queue_delete(name)
            else:
                channel.exchange_delete(name)
        except pika.exceptions.ChannelClosedByBroker as refused:
            log.warning("could not delete %s %s: %s", kind, name, refused)
            channel = channel.connection.channel()
    return channel
