"""Envelope and Message: what travels between cells, on the wire and once decoded.

An ``Envelope`` is the transport's unit: the canonical s-expression text as UTF-8 bytes plus
the metadata every transport carries (id, time, reply address, sender, free headers). A
``Message`` is what a cell's mailbox receives: the same metadata with the body already read
into data. ``envelope_for`` is the one place a node or a client turns an expression into the
envelope it publishes.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..language.printer import write
from . import tracing

__all__ = ["CONTENT_TYPE", "Envelope", "Message", "envelope_for", "is_cellframe_content",
           "new_message_id", "request_id"]

#: The media type of cellframe text (an s-expression in canonical UTF-8), set on every message
#: a cellframe transport publishes; a node refuses a delivery that names another one.
CONTENT_TYPE = "application/vnd.cellframe.sexp"


class _MessageIds:
    """96 random bits drawn once per process, then a counter: unique like a uuid4 (which
    costs a getrandom call per id, 3 us against 0.4 us here), and drawn again in a forked
    child so parent and child never share a prefix."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self.prefix = os.urandom(12).hex()
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):08x}"


_ids = _MessageIds()


def new_message_id() -> str:
    """A fresh, globally unique message id (the dedup key for at-least-once delivery)."""
    return _ids.next()


@dataclass(slots=True)
class Envelope:
    """A message as transports carry it: body bytes plus metadata."""

    body: bytes
    message_id: str = field(default_factory=new_message_id)
    timestamp: float = field(default_factory=time.time)
    reply_to: str | None = None
    sender: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    #: The id of the message this one answers (a call-back), else None.
    correlation_id: str | None = None
    #: The body's media type: ``CONTENT_TYPE``, or None from a sender that named none.
    content_type: str | None = CONTENT_TYPE


def is_cellframe_content(content_type: str | None) -> bool:
    """Whether a delivery's content type is cellframe text: none named (a raw tool), or
    ``CONTENT_TYPE`` with at most a ``charset=utf-8`` parameter, in any letter case."""
    if content_type is None or content_type == CONTENT_TYPE:  # what cellframe sends: every delivery
        return True
    kind, _, parameters = content_type.partition(";")
    if kind.strip().lower() != CONTENT_TYPE:
        return False
    for parameter in filter(None, (p.strip() for p in parameters.split(";"))):
        name, _, value = parameter.partition("=")
        if name.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            return False
    return True


@dataclass(slots=True, frozen=True)
class Message:
    """A message as a cell receives it: the expression already read into data."""

    expr: Any
    id: str = field(default_factory=new_message_id)
    reply_to: str | None = None
    sender: str | None = None
    sent_at: float = field(default_factory=time.time)
    #: A call-back: the id of the request it answers. A request: the id of the original
    #: request it forwards (see ``request_id``), else None.
    correlation_id: str | None = None
    #: The trace context it was delivered in (``cellframe.wire.tracing``); None with tracing off.
    trace: Any = None


def request_id(message: Message | Envelope) -> str:
    """The id a call-back to ``message`` names as its correlation id: the original request's,
    if ``message`` forwards one (it carries that id as its correlation id), else its own."""
    if isinstance(message, Envelope):
        return message.correlation_id or message.message_id
    return message.correlation_id or message.id


class _Signs(Protocol):
    """What ``envelope_for`` needs of a signer (``wire.signing.Signer``, which imports this
    module)."""

    def sign(self, envelope: Envelope, target: str | None = None) -> Envelope: ...


def envelope_for(expr: Any, *, sender: str | None, reply_to: str | None = None,
                 signer: _Signs | None = None, headers: dict[str, Any] | None = None,
                 target: str | None = None, correlation_id: str | None = None) -> Envelope:
    """``expr`` as a node or client publishes it: its canonical text (so every sender puts the
    same bytes on the wire for the same data), a fresh id and time, the reply address and the
    sender (and, for a call-back, the id of the request it answers), then signed by ``signer``
    if there is one. Given the ``target`` it goes to, and with tracing on, it is sent in a span
    whose context its headers carry; the signature binds it to that ``target``."""
    envelope = Envelope(write(expr).encode(), reply_to=reply_to, sender=sender,
                        headers={} if headers is None else headers,
                        correlation_id=correlation_id)
    if target is not None and tracing.active is not None:
        tracing.active.on_send(envelope, target)
    return envelope if signer is None else signer.sign(envelope, target)
