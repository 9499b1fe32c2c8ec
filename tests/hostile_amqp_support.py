"""Hand-encoded AMQP properties an attacker can publish, and a way to publish them with pika.

pika's encoder refuses or cannot produce most of these (it writes a timestamp from a
``datetime``, and never nests 3,000 deep), so each is written here byte by byte, in the
layout of AMQP 0-9-1's content header property list: a 16-bit flag word, then the present
fields in order. RabbitMQ 3.10 accepted every one of them (it refused an unknown field type,
a truncated table and a NaN or infinite float with a connection error to the publisher, so
those are only fed to the reader directly, in ``FRAME_ONLY``).
"""

from __future__ import annotations

import struct
from typing import Any

from pika import spec

__all__ = ["BROKER_ACCEPTS", "FRAME_ONLY", "RawProperties", "header_frames", "nested_table"]


def _short(text: bytes) -> bytes:
    return bytes([len(text)]) + text


def _table(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack(">I", len(body)) + body


def _headers(*entries: bytes) -> bytes:
    return struct.pack(">H", spec.BasicProperties.FLAG_HEADERS) + _table(*entries)


def nested_table(depth: int) -> bytes:
    """A headers table holding a table holding a table... ``depth`` deep."""
    table = _table()
    for _ in range(depth - 1):
        table = _table(_short(b"a") + b"F" + table)
    return struct.pack(">H", spec.BasicProperties.FLAG_HEADERS) + table


def _nested_array(depth: int) -> bytes:
    value = b"A" + struct.pack(">I", 0)
    for _ in range(depth):
        value = b"A" + struct.pack(">I", len(value)) + value
    return _headers(_short(b"a") + value)


def _flag(name: str) -> bytes:
    return struct.pack(">H", getattr(spec.BasicProperties, f"FLAG_{name}"))


#: name -> property bytes RabbitMQ passes on to consumers, each of which pika cannot decode
#: or cellframe cannot take.
BROKER_ACCEPTS: dict[str, bytes] = {
    "timestamp header past time_t": _headers(_short(b"t") + b"T" + struct.pack(">Q", 2**64 - 1)),
    "timestamp header past year 9999": _headers(_short(b"t") + b"T" + struct.pack(">Q", 2**40)),
    "table nested 3,000 deep": nested_table(3000),
    "array nested 3,000 deep": _nested_array(3000),
    "table nested 40 deep": nested_table(40),
    "header name not UTF-8": _headers(_short(b"\xff\xfe") + b"V"),
    "message id not UTF-8": _flag("MESSAGE_ID") + _short(b"\xc3\x28"),
    "reply-to not UTF-8": _flag("REPLY_TO") + _short(b"\xff"),
    "app id not UTF-8": _flag("APP_ID") + _short(b"\xed\xa0\x80"),
    "transport timestamp header as bytes": _headers(_short(b"x-cf-ts") + b"x"
                                                    + struct.pack(">I", 3) + b"1.5"),
}

#: name -> property bytes the broker refuses, but a reader must survive anyway.
FRAME_ONLY: dict[str, bytes] = {
    "unknown field type": _headers(_short(b"k") + b"Z\x00"),
    "truncated table": _flag("HEADERS") + struct.pack(">I", 100) + _short(b"k") + b"V",
    "NaN double": _headers(_short(b"d") + b"d" + struct.pack(">d", float("nan"))),
    "infinite float": _headers(_short(b"f") + b"f" + struct.pack(">f", float("inf"))),
    "flags with nothing after them": struct.pack(">H", 0xFFFC),
    "a continued flag word cut short": struct.pack(">H", 1),
}


class RawProperties(spec.BasicProperties):  # type: ignore[misc]
    """Properties that pika writes as the given bytes, whatever they say."""

    def __init__(self, raw: bytes) -> None:
        super().__init__()
        self.raw = raw

    def encode(self) -> list[bytes]:
        return [self.raw]


def header_frames(channel: int, raw: bytes, body: bytes, frame_max: int) -> bytes:
    """A content header frame carrying property bytes ``raw``, then the body frames."""
    payload = struct.pack(">HHQ", spec.BasicProperties.INDEX, 0, len(body)) + raw
    frames = [struct.pack(">BHL", spec.FRAME_HEADER, channel, len(payload)) + payload
              + bytes([spec.FRAME_END])]
    for start in range(0, len(body), frame_max - 8):
        chunk = body[start:start + frame_max - 8]
        frames.append(struct.pack(">BHL", spec.FRAME_BODY, channel, len(chunk)) + chunk
                      + bytes([spec.FRAME_END]))
    return b"".join(frames)


def describe(properties: Any) -> str:
    """Short text of whatever a consumer was given, for assertion messages."""
    return repr(vars(properties))[:200]
