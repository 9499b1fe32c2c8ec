"""A delivery read in one step instead of frame by frame, on pika's connection.

A delivery is three AMQP frames: ``basic.deliver``, a content header and the body. pika reads
them one at a time: each is decoded into a frame object, checked against the connection's
pending RPC callbacks, handed to its channel, and assembled there, and each trims the read
buffer (a copy of what is left). Profiled in a node, that machinery took about a third of the
I/O thread. Here, when the whole delivery has arrived, its three frames are recognised in the
read buffer by their headers and the consumer is called at once: pika still decodes the
method's fields and the properties (``Basic.Deliver.decode``, ``BasicProperties.decode``),
and the consumer gets the same objects pika would give it.

Everything else goes to pika, frame by frame, as before: other methods, heartbeats, returns,
a body larger than one frame, a delivery for a consumer pika would not call (cancelled,
unknown) or on a channel that is not open or is part-way through assembling content, and a
delivery whose frames do not follow one another on its channel. A delivery whose method frame
has arrived but not the rest is left in the buffer until the rest comes, where pika would have
held its first frame in the channel's assembler: nothing a consumer sees differs.

Both paths decode a content header's properties behind the guard of ``_amqp_wire``
(``decode_properties``): properties pika cannot decode (a timestamp past the platform's
range, tables nested past the recursion limit) become ``Undecodable`` properties that the
consumer dead-letters, instead of an exception on the I/O thread that drops the connection.
Where this path gives a frame to pika, a content header is decoded here (``_decode_frame``)
and pika gets the frame object it would have made.

This touches private names of pika 1.x (``_on_data_available``, ``_frame_buffer``,
``_process_frame``, ``_channels`` of the connection; ``_consumers``, ``_cancelled`` and
``_content_assembler`` of a channel). If any is missing, nothing changes and pika reads as it
always did.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

from pika import frame, spec

from ._amqp_wire import decode_properties

__all__ = ["read_deliveries"]

log = logging.getLogger("cellframe.transports.amqp")

_FRAME_HEADER = struct.Struct(">BHL")  # type, channel, payload size
_METHOD_ID = struct.Struct(">L")
_CONTENT_HEADER = struct.Struct(">HHQ")  # class, weight, body size
_HEADER_SIZE = _FRAME_HEADER.size
_OVERHEAD = _HEADER_SIZE + 1  # the header and the frame-end octet
_FRAME_END = spec.FRAME_END
_DELIVER = spec.Basic.Deliver.INDEX
_BASIC = spec.BasicProperties.INDEX
_METHOD, _CONTENT, _BODY = spec.FRAME_METHOD, spec.FRAME_HEADER, spec.FRAME_BODY
_CONNECTION_NAMES = ("_on_data_available", "_frame_buffer", "_process_frame", "_channels",
                     "bytes_received", "frames_received")
_WAIT = -1  # the delivery has begun to arrive, but not all of it


def read_deliveries(connection: Any) -> bool:
    """Make ``connection`` hand out each complete delivery in one step; return whether it
    could (a connection of the expected shape)."""
    if not all(hasattr(connection, name) for name in _CONNECTION_NAMES):
        log.warning("pika's connection has changed shape; reading frame by frame, and a "
                    "delivery whose properties pika cannot decode will drop the connection")
        return False
    connection._on_data_available = _Reader(connection)
    return True


class _Reader:
    """The connection's ``_on_data_available``: what pika's does, with deliveries in one
    step. The unread bytes live in the connection's ``_frame_buffer`` as pika expects."""

    __slots__ = ("connection",)

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def __call__(self, data_in: bytes) -> None:
        connection = self.connection
        buffer = connection._frame_buffer + data_in if connection._frame_buffer else data_in
        offset, end = 0, len(buffer)
        while offset < end:
            taken = _delivery_at(connection, buffer, offset, end)
            if taken == _WAIT:
                break
            if taken:
                offset += taken
                if connection._frame_buffer is not buffer:
                    return  # the consumer closed the connection: pika reset the buffer
                continue
            # Anything else: one frame, pika's way.
            connection._frame_buffer = buffer[offset:] if offset else buffer
            consumed, value = _decode_frame(connection._frame_buffer)
            if not value:
                return
            connection._trim_frame_buffer(consumed)
            connection._process_frame(value)
            buffer, offset = connection._frame_buffer, 0
            end = len(buffer)
        connection._frame_buffer = buffer[offset:] if offset else buffer


def _delivery_at(connection: Any, buffer: bytes, offset: int, end: int) -> int:
    """Hand out the delivery that starts at ``offset`` and return the bytes it took; 0 if
    what starts there is not a delivery this path takes; ``_WAIT`` if it is one that has not
    all arrived."""
    if end - offset < _HEADER_SIZE + 4:
        return 0
    kind, channel_number, size = _FRAME_HEADER.unpack_from(buffer, offset)
    if kind != _METHOD or _METHOD_ID.unpack_from(buffer, offset + _HEADER_SIZE)[0] != _DELIVER:
        return 0
    header_at = offset + _OVERHEAD + size
    if header_at + _HEADER_SIZE + _CONTENT_HEADER.size > end:
        return _WAIT
    kind, header_channel, header_size = _FRAME_HEADER.unpack_from(buffer, header_at)
    if kind != _CONTENT or header_channel != channel_number:
        return 0
    class_id, _weight, body_size = _CONTENT_HEADER.unpack_from(buffer, header_at + _HEADER_SIZE)
    body_at = header_at + _OVERHEAD + header_size
    if class_id != _BASIC:
        return 0
    if body_size:
        if body_at + _HEADER_SIZE > end:
            return _WAIT
        kind, body_channel, body_frame_size = _FRAME_HEADER.unpack_from(buffer, body_at)
        if kind != _BODY or body_channel != channel_number or body_frame_size != body_size:
            return 0  # another channel's frame between, or a body in several frames
        stop = body_at + _OVERHEAD + body_size
    else:
        stop = body_at
    if stop > end:
        return _WAIT
    if buffer[header_at - 1] != _FRAME_END or buffer[body_at - 1] != _FRAME_END \
            or buffer[stop - 1] != _FRAME_END:
        return 0  # pika raises its InvalidFrameError on the bad frame
    consumer = _consumer(connection, channel_number, buffer, offset + _HEADER_SIZE + 4)
    if consumer is None:
        return 0
    call, channel, method = consumer
    properties = decode_properties(buffer[header_at + _HEADER_SIZE + _CONTENT_HEADER.size:
                                          body_at - 1])
    body = buffer[body_at + _HEADER_SIZE:stop - 1] if body_size else b""
    connection.frames_received += 3 if body_size else 2
    connection.bytes_received += stop - offset
    connection._frame_buffer = buffer  # read by the check after the call: was it reset?
    try:
        call(channel, method, properties, body)
    except BaseException:
        if connection._frame_buffer is buffer:  # never hand this delivery out twice
            connection._frame_buffer = buffer[stop:]
        raise
    return stop - offset


def _decode_frame(data: bytes) -> tuple[int, Any]:
    """``frame.decode_frame``, but a complete content header of class Basic has its
    properties decoded behind the guard: the same ``frame.Header`` either way."""
    if len(data) < _HEADER_SIZE + _CONTENT_HEADER.size or data[0] != _CONTENT:
        return frame.decode_frame(data)
    _kind, channel_number, size = _FRAME_HEADER.unpack_from(data, 0)
    end = _OVERHEAD + size
    if end > len(data) or data[end - 1] != _FRAME_END:
        return frame.decode_frame(data)  # not all here yet, or pika's InvalidFrameError
    class_id, _weight, body_size = _CONTENT_HEADER.unpack_from(data, _HEADER_SIZE)
    if class_id != _BASIC:
        return frame.decode_frame(data)
    properties = decode_properties(data[_HEADER_SIZE + _CONTENT_HEADER.size:end - 1])
    return end, frame.Header(channel_number, body_size, properties)


def _consumer(connection: Any, channel_number: int, buffer: bytes,
              method_at: int) -> tuple[Callable[..., None], Any, Any] | None:
    """The consumer pika would call for the ``basic.deliver`` whose fields start at
    ``method_at``, its channel and the decoded method; None where pika would do anything
    but call a consumer."""
    channel = connection._channels.get(channel_number)
    if channel is None or not channel.is_open:
        return None
    try:
        if channel._content_assembler._method_frame is not None:
            return None
        consumers, cancelled = channel._consumers, channel._cancelled
    except AttributeError:  # a channel of another shape
        return None
    method = spec.Basic.Deliver()
    method.decode(buffer, method_at)
    call = consumers.get(method.consumer_tag)
    if call is None or method.consumer_tag in cancelled:
        return None
    return call, channel, method
