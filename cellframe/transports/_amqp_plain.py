"""A fast reader for the AMQP properties cellframe itself sends, with pika's reader the judge.

A signed message carries four more headers than an unsigned one (signature, key id, target,
and the expiry, a float that travels as a nested table), and pika's pure-Python table decoder
made them the dearest part of a delivery's decoding: ``decode_properties`` took 8.9 us for a
signed message's properties against 4.1 us unsigned, more than the HMAC check itself.
``decode_plain`` reads only what a cellframe sender writes (headers of long strings, booleans
and voids, and tables of those one level down) and returns None for anything else (another
value kind, deeper tables, text that is not UTF-8, a second flag word, a value past the end),
which then goes to pika and its guard as before: 3.9 us signed, 2.1 us unsigned. Where it
returns properties they equal pika's, field by field and type by type, and hold nothing the
guard refuses (tests/test_amqp_plain.py checks it on generated, altered and random bytes).
"""

from __future__ import annotations

import struct
from typing import Any

import pika

__all__ = ["decode_plain"]

_LENGTH = struct.Struct(">I")
_TIMESTAMP = struct.Struct(">Q")
_STRING, _TABLE, _BOOLEAN, _VOID = b"SFtV"
_P = pika.BasicProperties
#: Short-string properties before the headers, and after them, in the order of the encoding.
_BEFORE = ((_P.FLAG_CONTENT_TYPE, "content_type"), (_P.FLAG_CONTENT_ENCODING, "content_encoding"))
_MIDDLE = ((_P.FLAG_CORRELATION_ID, "correlation_id"), (_P.FLAG_REPLY_TO, "reply_to"),
           (_P.FLAG_EXPIRATION, "expiration"), (_P.FLAG_MESSAGE_ID, "message_id"))
_AFTER = ((_P.FLAG_TYPE, "type"), (_P.FLAG_USER_ID, "user_id"), (_P.FLAG_APP_ID, "app_id"),
          (_P.FLAG_CLUSTER_ID, "cluster_id"))


class _NotPlain(Exception):
    """What ``decode_plain`` leaves to pika."""


def decode_plain(data: bytes) -> pika.BasicProperties | None:
    """The properties in ``data`` if they are plain (see the module doc), else None."""
    try:
        return _decode(data)
    except (_NotPlain, IndexError, struct.error, UnicodeDecodeError):
        return None


# Written flat, one field after another as pika's own decoder reads them (a string past the
# end of the data comes out cut, as there): each helper call here cost about 0.1 us.
def _decode(data: bytes) -> pika.BasicProperties:
    flags = data[0] << 8 | data[1]
    if flags & 1:  # a second flag word: no property of 0-9-1 needs one
        raise _NotPlain
    properties = _P()
    at = 2
    for flag, name in _BEFORE:
        if flags & flag:
            n = data[at]
            at += 1 + n
            setattr(properties, name, data[at - n:at].decode())
    if flags & _P.FLAG_HEADERS:
        properties.headers, at = _table(data, at, nested=False)
    if flags & _P.FLAG_DELIVERY_MODE:
        properties.delivery_mode = data[at]
        at += 1
    if flags & _P.FLAG_PRIORITY:
        properties.priority = data[at]
        at += 1
    for flag, name in _MIDDLE:
        if flags & flag:
            n = data[at]
            at += 1 + n
            setattr(properties, name, data[at - n:at].decode())
    if flags & _P.FLAG_TIMESTAMP:
        (properties.timestamp,) = _TIMESTAMP.unpack_from(data, at)
        at += 8
    for flag, name in _AFTER:
        if flags & flag:
            n = data[at]
            at += 1 + n
            setattr(properties, name, data[at - n:at].decode())
    return properties


def _table(data: bytes, at: int, *, nested: bool) -> tuple[dict[str, Any], int]:
    (size,) = _LENGTH.unpack_from(data, at)
    at += 4
    limit = at + size
    table: dict[str, Any] = {}
    while at < limit:
        n = data[at]
        at += 1 + n
        key = data[at - n:at].decode()
        kind = data[at]
        at += 1
        if kind == _STRING:
            (n,) = _LENGTH.unpack_from(data, at)
            at += 4 + n
            table[key] = data[at - n:at].decode()
        elif kind == _TABLE and not nested:
            table[key], at = _table(data, at, nested=True)
        elif kind == _BOOLEAN:
            table[key] = bool(data[at])
            at += 1
        elif kind == _VOID:
            table[key] = None
        else:
            raise _NotPlain
    if at != limit or at > len(data):
        raise _NotPlain  # a value ran past the table's end, or the data's
    return table, at
