"""How publishes leave: marshalled in one piece, and sent one ``send()`` per wake-up.

**One buffer per publish** (``publisher``). pika's ``basic_publish`` builds a frame object for
each of a publish's three frames (method, content header, body), marshals each into a buffer
of its own, and hands them to its transport one by one, counting each. Profiled in a client,
that took about a third of its I/O thread. Here the same frames are packed straight into one
buffer: the header fields by ``struct``, the properties by pika's own
``BasicProperties.encode``, and the body split at the connection's frame size as pika splits
it. The bytes are the same (``tests/test_amqp_frames.py`` compares them with pika's). It
touches private names of pika 1.x (``_raise_if_not_open`` of the channel; ``_body_max_length``
and ``_adapter_emit_data`` of the connection); without them it is pika's ``basic_publish``.

**One send per wake-up** (``coalesce_writes``).

pika's transport sends each buffer it is given (a publish, an ack) in a system call of its
own. Every
``send()`` lets go of the GIL and takes it back; in a node, where consumer workers, cells and
the I/O thread share one interpreter, taking it back means waiting for whichever thread holds
it. So before pika sends, the waiting buffers are joined (up to ``JOIN_BYTES`` at a time): the
bytes on the wire are the same, in the same order, in fewer system calls.

Measured with ``cellframe.benchmarks.amqp.bench_transport`` (signed, 20,000 messages of 100
bytes, publisher and consumer in one process): 9.6k-11.5k messages/s per ``send()`` per frame,
13.1k-14.6k/s coalesced. Stock pika gains as much from it, so the raw-pika baselines in
``cellframe bench`` stay stock: they measure pika as it ships.

This touches two private names of pika 1.x (``_produce`` and ``_tx_buffers`` of
``_AsyncPlaintextTransport``); on any other transport class, or if they are missing, nothing
changes and pika sends as it always did.
"""

from __future__ import annotations

import functools
import logging
import struct
from collections.abc import Callable
from typing import Any, TypeAlias

from pika import spec

from ._amqp_wire import EncodedProperties

try:
    from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport
except ImportError:  # pragma: no cover - a pika laid out otherwise: send frame by frame
    _AsyncPlaintextTransport = None

__all__ = ["JOIN_BYTES", "coalesce_writes", "publisher"]

log = logging.getLogger("cellframe.transports.amqp")

#: Join at most this many waiting bytes into one send: a partial send copies what is left, so
#: an unbounded join could copy a large backlog many times over.
JOIN_BYTES = 4 * 1024 * 1024

#: Properties as a publish takes them: pika's, or already encoded.
Properties: TypeAlias = "spec.BasicProperties | EncodedProperties"
#: ``publish(exchange, routing_key, body, properties)``, always ``mandatory``.
Publish = Callable[[str, str, bytes, Properties], None]

_FRAME = struct.Struct(">BHL")  # type, channel, payload size
_PUBLISH = struct.Struct(">LH")  # method id, the reserved ticket
_CONTENT = struct.Struct(">HHQ")  # class, weight, body size
_END = bytes([spec.FRAME_END])
_MANDATORY = b"\x01"  # the bits of basic.publish: mandatory set, immediate not


def publisher(channel: Any) -> Publish:
    """Return how to publish on ``channel`` (``mandatory``): in one buffer, or, on a channel
    or connection of another shape, through pika's ``basic_publish``."""
    connection = getattr(channel, "connection", None)
    if not all(hasattr(channel, name) for name in ("_raise_if_not_open", "channel_number")) \
            or not isinstance(getattr(connection, "_body_max_length", None), int) \
            or not all(hasattr(connection, name) for name in (
                "_adapter_emit_data", "bytes_sent", "frames_sent")):
        log.debug("pika's channel has changed shape; publishing through basic_publish")
        return functools.partial(_basic_publish, channel)
    return functools.partial(_publish_in_one_buffer, channel, connection, channel.channel_number)


def _basic_publish(channel: Any, exchange: str, routing_key: str, body: bytes,
                   properties: Properties) -> None:
    if isinstance(properties, EncodedProperties):
        properties = properties.decoded()
    channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)


def _publish_in_one_buffer(channel: Any, connection: Any, number: int, exchange: str,
                           routing_key: str, body: bytes,
                           properties: Properties) -> None:
    channel._raise_if_not_open()
    names = exchange.encode(), routing_key.encode()
    for name in names:
        if len(name) > 255:
            raise ValueError(f"{name[:40]!r}... is longer than an AMQP short string")
    method = b"".join((_PUBLISH.pack(spec.Basic.Publish.INDEX, 0), bytes((len(names[0]),)),
                       names[0], bytes((len(names[1]),)), names[1], _MANDATORY))
    encoded = properties.data if isinstance(properties, EncodedProperties) \
        else b"".join(properties.encode())
    content = _CONTENT.pack(spec.BasicProperties.INDEX, 0, len(body)) + encoded
    frame = _FRAME.pack
    parts = [frame(spec.FRAME_METHOD, number, len(method)), method, _END,
             frame(spec.FRAME_HEADER, number, len(content)), content, _END]
    step = connection._body_max_length
    for start in range(0, len(body), step):
        chunk = body[start:start + step]
        parts += (frame(spec.FRAME_BODY, number, len(chunk)), chunk, _END)
    data = b"".join(parts)
    connection.bytes_sent += len(data)
    connection.frames_sent += len(parts) // 3
    connection._adapter_emit_data(data)


def coalesce_writes(connection: Any) -> bool:
    """Make ``connection``'s transport join its waiting frames before each send; return
    whether it could (a plaintext transport of the expected shape)."""
    transport: Any = getattr(connection, "_transport", None)
    if _AsyncPlaintextTransport is None or type(transport) is not _AsyncPlaintextTransport:
        return False
    buffers = getattr(transport, "_tx_buffers", None)
    produce = getattr(transport, "_produce", None)
    if buffers is None or produce is None:
        log.debug("pika's transport has changed shape; sending frame by frame")
        return False

    def produce_joined() -> None:
        if len(buffers) > 1:
            joined, size = [], 0
            while buffers and size < JOIN_BYTES:
                chunk = buffers.popleft()
                joined.append(chunk)
                size += len(chunk)
            buffers.appendleft(b"".join(joined))
        produce()

    transport._produce = produce_joined
    return True
