"""Nodes on either transport (the same node tests run in-process and on the real RabbitMQ),
and waiting for their call-backs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cellframe import Cell, Client, MemoryBroker, Node, RoleRegistry, Symbol, transition
from cellframe.cell import nodeverbs
from cellframe.language.reader import read
from cellframe.node.gate import NODE_ONLY, head_verb
from cellframe.testing import AmqpNames, Collector, wait_for
from cellframe.transports.base import Transport

__all__ = ["Tally", "VerbTap", "Wire", "cell_total", "registry", "replies_matching"]


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

    @classmethod
    def in_process(cls) -> Wire:
        return cls("memory", MemoryBroker().connect)

    @classmethod
    def on_rabbitmq(cls, names: AmqpNames) -> Wire:
        """On this test's topology: the queues its nodes declare go with it."""
        return cls("amqp", names.connect, prefix=names.queue_prefix)

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


class VerbTap:
    """Every message a cluster's broker carries, from when the tap is made, by verb: what a
    test checks against the declared node verbs (``cellframe.cell.nodeverbs``)."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.transport = broker.connect(name="tap")
        self.transport.declare_queue("tap", exclusive=True)
        self.transport.bind("tap", "#")
        self.seen = Collector()
        self.transport.consume("tap", self.seen)

    def verbs(self) -> set[str | None]:
        """The verbs sent on keys where the gate refuses an operator by verb alone (the
        ``NODE_ONLY`` keys it refuses whatever the verb)."""
        return {head_verb(read(d.envelope.body)) for d in list(self.seen.deliveries)
                if not d.routing_key.startswith(NODE_ONLY)}

    def undeclared(self) -> set[str | None]:
        """Those verbs no cell declared node-only: an operator key allowed ``all *`` sends them."""
        return self.verbs() - set(nodeverbs.DECLARED)


def cell_total(node: Node, name: str) -> int:
    return node.cells()[name].total


def replies_matching(client: Client, head: str, count: int, timeout: float = 30.0, *,
                     since: int = 0) -> list[Any]:
    """Wait for ``count`` call-backs ``(head ...)`` after reply number ``since``; return their
    expressions."""
    def found() -> list[Any] | None:
        matching = [r.expr for r in client.replies[since:]
                    if isinstance(r.expr, list) and r.expr and r.expr[0] == Symbol(head)]
        return matching if len(matching) >= count else None

    return wait_for(found, timeout, what=f"{count} ({head} ...) call-backs",
                    show=lambda: [r.expr for r in client.replies[since:]])
