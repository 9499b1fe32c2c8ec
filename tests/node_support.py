"""Nodes on either transport: the same node tests run in-process and on the real RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from cellframe import Cell, Client, MemoryBroker, Node, RoleRegistry, Symbol, transition
from cellframe.testing import wait_for
from cellframe.transports.base import Transport

__all__ = ["Tally", "Wire", "registry", "wire"]


class Tally(Cell):
    """Adds numbers; answers (total) with (total N :cell NAME)."""

    states = ("empty", "counting")
    initial = "empty"
    role = "tally"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.total = 0

    @transition("add", target="counting")
    def add(self, n: int) -> None:
        self.total += n

    @transition("total")
    def report(self) -> None:
        self.cell_reply([Symbol("total"), self.total, self.cell_name])


def registry() -> RoleRegistry:
    return RoleRegistry({"tally": [Tally], "other": [Tally]})


@dataclass
class Wire:
    """Connects nodes and clients to one broker (in-process or RabbitMQ), cleaning up after."""

    kind: str
    connect_transport: Callable[[], Transport]
    prefix: str = ""
    nodes: list[Node] = field(default_factory=list)
    clients: list[Client] = field(default_factory=list)
    transports: list[Transport] = field(default_factory=list)

    def connect(self) -> Transport:
        transport = self.connect_transport()
        self.transports.append(transport)
        return transport

    def node(self, name: str, role: str | None = None, **kwargs: Any) -> Node:
        kwargs.setdefault("registry", registry())
        node = Node(name, transport=self.connect(), role=role, queue_prefix=self.prefix, **kwargs)
        self.nodes.append(node.start())
        return node

    def client(self, **kwargs: Any) -> Client:
        client = Client(self.connect(), queue_prefix=self.prefix, **kwargs)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        for client in self.clients:
            client.close()
        for transport in self.transports:
            transport.close()


def cell_total(node: Node, name: str) -> int:
    return node.cells()[name].total


@pytest.fixture(params=["memory", "amqp"])
def wire(request: pytest.FixtureRequest) -> Iterator[Wire]:
    if request.param == "memory":
        broker = MemoryBroker()
        w = Wire("memory", broker.connect)
        yield w
        w.close()
        return
    names = request.getfixturevalue("amqp_names")
    token = uuid.uuid4().hex[:8]
    w = Wire("amqp", names.connect, prefix=f"cf-test.{token}.")
    yield w
    w.close()
    from amqp_support import raw_channel

    with raw_channel(names.url) as channel:  # durable role queues outlive their nodes
        for role in ("tally", "other"):
            channel.queue_delete(f"{w.prefix}role.{role}")


def replies_matching(client: Client, head: str, count: int, timeout: float = 10.0) -> list[Any]:
    """Wait until ``count`` call-backs whose verb is ``head`` arrived; return their exprs."""
    def found() -> list[Any] | None:
        matching = [r.expr for r in client.replies if r.expr and r.expr[0] == Symbol(head)]
        return matching if len(matching) >= count else None

    return wait_for(found, timeout, what=f"{count} ({head} ...) call-backs")
