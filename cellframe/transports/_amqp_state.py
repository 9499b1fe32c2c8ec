"""What the AMQP I/O thread keeps: publishes awaiting confirms, control-channel operations,
and the topology it re-declares on every new connection."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pika

from ..wire.envelope import Envelope
from ._amqp_consumer import ConsumerState
from ._amqp_wire import EncodedProperties, encode_properties
from .base import RESENT_HEADER

__all__ = ["ControlOp", "Outgoing", "Topology"]

log = logging.getLogger("cellframe.transports.amqp")


class Outgoing:
    """One publish waiting to be sent, then to be confirmed."""

    __slots__ = ("exchange", "routing_key", "envelope", "properties", "on_return",
                 "on_settled", "after_confirm", "counted", "returned", "settled", "persistent")

    def __init__(self, exchange: str, routing_key: str, envelope: Envelope,
                 properties: pika.BasicProperties | EncodedProperties, on_return: Callable[..., None] | None,
                 *, after_confirm: tuple[Any, ...] | None = None, counted: bool = True,
                 on_settled: Callable[[], None] | None = None, persistent: bool = False) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.envelope = envelope
        self.properties = properties
        self.persistent = persistent
        self.on_return = on_return
        self.on_settled = on_settled  # run on the notifier thread once confirmed or refused
        self.after_confirm = after_confirm  # (consumer, channel, tag) to ack once confirmed
        self.counted = counted  # occupies a slot of the caller-visible buffer
        self.returned = False
        self.settled = False  # confirmed, refused or given up: set on the I/O thread

    def mark_resent(self) -> None:
        """About to go again after a lost connection: the broker may hold the first copy,
        so this one says so (``RESENT_HEADER``). Once; on the I/O thread."""
        if RESENT_HEADER in self.envelope.headers:
            return
        self.envelope = dataclasses.replace(
            self.envelope, headers={**self.envelope.headers, RESENT_HEADER: "1"})
        self.properties = encode_properties(self.envelope, persistent=self.persistent)


@dataclass(eq=False)
class ControlOp:
    """One call on the control channel; ``future`` is None for re-declarations."""

    method: str
    kwargs: dict[str, Any]
    what: str
    on_ok: Callable[[], None] | None = None
    future: Future[None] | None = None
    started: bool = False

    def start(self) -> bool:
        """False if the caller gave up (cancelled the future) before it ran."""
        if self.future is None or self.started:
            return True
        self.started = True
        return self.future.set_running_or_notify_cancel()

    def done(self) -> None:
        if self.on_ok is not None:
            self.on_ok()
        if self.future is not None and not self.future.done():
            self.future.set_result(None)

    def fail(self, error: BaseException) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_exception(error)
        else:
            log.error("declaring the topology: %s", error)


@dataclass(eq=False)
class Topology:
    """Everything the transport declared, to declare again on a new connection."""

    exchange: str
    dead_letter_exchange: str
    dead_letter_queue: dict[str, Any]
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    bindings: dict[tuple[str, str], None] = field(default_factory=dict)
    consumers: dict[str, ConsumerState] = field(default_factory=dict)

    def restore_ops(self) -> list[ControlOp]:
        dlq = self.dead_letter_queue["queue"]
        ops = [
            ControlOp("exchange_declare", {"exchange": self.exchange, "exchange_type": "topic",
                                           "durable": True}, f"exchange {self.exchange!r}"),
            ControlOp("exchange_declare", {"exchange": self.dead_letter_exchange,
                                           "exchange_type": "fanout", "durable": True},
                      f"exchange {self.dead_letter_exchange!r}"),
            ControlOp("queue_declare", self.dead_letter_queue, f"queue {dlq!r}"),
            ControlOp("queue_bind", {"queue": dlq, "exchange": self.dead_letter_exchange,
                                     "routing_key": "#"}, f"dead-letter binding of {dlq!r}"),
        ]
        ops += [ControlOp("queue_declare", kw, f"queue {name!r}")
                for name, kw in self.queues.items()]
        ops += [ControlOp("queue_bind", {"queue": q, "exchange": self.exchange, "routing_key": p},
                          f"binding {q!r} <- {p!r}") for q, p in self.bindings]
        return ops

    def redeclare_ops(self, queue: str) -> list[ControlOp]:
        """Declare ``queue`` and its bindings again, as declared before (none: not ours)."""
        kwargs = self.queues.get(queue)
        if kwargs is None:
            return []
        return [ControlOp("queue_declare", kwargs, f"queue {queue!r} again"),
                *(ControlOp("queue_bind", {"queue": q, "exchange": self.exchange,
                                           "routing_key": p}, f"binding {q!r} <- {p!r} again")
                  for q, p in self.bindings if q == queue)]

    def forget_queue(self, name: str) -> None:
        self.queues.pop(name, None)
        for binding in [b for b in self.bindings if b[0] == name]:
            del self.bindings[binding]
