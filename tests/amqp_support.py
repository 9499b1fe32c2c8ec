"""Fixtures for tests on the real RabbitMQ: unique names, cleanup, and killing connections.

Every test gets its own control exchange, dead-letter exchange and dead-letter queue (a uuid
in each name), and they are deleted afterwards, so tests never see each other's messages.
Connections are killed broker-side by their connection name (``rabbitmqctl
close_connection``), which touches only this test's connections, not other engineers'.
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pika
import pytest
from services import require_amqp

from cellframe.transports.amqp import AmqpTransport

__all__ = ["AmqpNames", "amqp_connect", "amqp_names", "kill_connections", "raw_channel"]


@dataclass(frozen=True)
class AmqpNames:
    """The per-test topology names, ready to pass to ``AmqpTransport``."""

    token: str
    url: str

    @property
    def kwargs(self) -> dict[str, str]:
        return {"exchange": f"cf-test.{self.token}.control",
                "dead_letter_exchange": f"cf-test.{self.token}.dlx",
                "dead_letter_queue": f"cf-test.{self.token}.dlq"}

    def queue(self, label: str) -> str:
        return f"cf-test.{self.token}.{label}"

    def connect(self, urls: Any = None, **options: Any) -> AmqpTransport:
        """A transport on this test's topology, with short heartbeats and timeouts."""
        settings: dict[str, Any] = {"heartbeat": 5, "connect_timeout": 5.0, "op_timeout": 10.0,
                                    "close_timeout": 5.0, "name": f"cf-test-{self.token}",
                                    **self.kwargs}
        return AmqpTransport(urls or self.url, **{**settings, **options})


@contextlib.contextmanager
def raw_channel(url: str) -> Iterator[Any]:
    """A plain pika channel, for inspecting or cleaning the broker behind the transport."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        yield connection.channel()
    finally:
        connection.close()


def delete_topology(names: AmqpNames, queues: list[str] = ()) -> None:
    """Remove this test's exchanges and queues from the broker."""
    kw = names.kwargs
    with raw_channel(names.url) as channel:
        for queue in [kw["dead_letter_queue"], *queues]:
            channel.queue_delete(queue)
        channel.exchange_delete(kw["exchange"])
        channel.exchange_delete(kw["dead_letter_exchange"])


@pytest.fixture
def amqp_names() -> Iterator[AmqpNames]:
    """Unique names for this test; its exchanges and dead-letter queue go at teardown."""
    names = AmqpNames(uuid.uuid4().hex[:12], require_amqp())
    yield names
    delete_topology(names)


@pytest.fixture
def amqp_connect(amqp_names: AmqpNames) -> Iterator[Callable[..., AmqpTransport]]:
    """``connect(urls=None, **options)``: a new AmqpTransport on this test's topology; every
    one is closed after the test."""
    opened: list[AmqpTransport] = []

    def connect(urls: Any = None, **options: Any) -> AmqpTransport:
        opened.append(amqp_names.connect(urls, **options))
        return opened[-1]

    yield connect
    for transport in reversed(opened):
        transport.close()


# One rabbitmqctl call that closes the connections with a given client-provided name: each
# rabbitmqctl starts an Erlang VM (0.6 s idle, seconds on a busy machine), so listing the
# connections and then closing each one took 2 to 6 s here. Another client's connection may
# be half open (its client properties are still `none`) or gone by the time it is asked
# about: either way it is not ours (this once failed the run while other clients churned).
_CLOSE_BY_NAME = """
Name = <<"{name}">>,
Ours = fun(P) ->
    try lists:keyfind(<<"connection_name">>, 1, proplists:get_value(client_properties,
            rabbit_networking:connection_info(P, [client_properties]), []))
          =:= {{<<"connection_name">>, longstr, Name}}
    catch _:_ -> false end end,
Mine = [P || P <- rabbit_networking:connections(), Ours(P)],
[rabbit_networking:close_connection(P, "test") || P <- Mine],
length(Mine).
"""


def kill_connections(name: str, *, expect: int = 1) -> None:
    """Close, broker-side, the ``expect`` connections named ``name``, as a broker restart or
    a network cut would."""
    out = subprocess.run(["rabbitmqctl", "eval", _CLOSE_BY_NAME.format(name=name)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == str(expect), f"closed {out.strip()} connections, expected {expect}"
