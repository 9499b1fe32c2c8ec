"""Envelope <-> AMQP message: how an Envelope's fields travel in pika properties and headers.

Mapping (round-trips exactly for str, bytes, int, float, bool and None header values):

===============  ==============================================================
``body``         the AMQP body, untouched
``message_id``   ``properties.message_id`` (a header if longer than 255 bytes)
``timestamp``    ``properties.timestamp`` (whole seconds, for tools) and the
                 ``x-cf-ts`` header holding ``repr(float)``: full precision
``reply_to``     ``properties.reply_to`` (a header if longer than 255 bytes)
``sender``       ``properties.app_id`` (a header if longer than 255 bytes)
``correlation_id`` ``properties.correlation_id`` (a header if longer than 255 bytes)
``content_type`` ``properties.content_type``
``headers``      ``properties.headers``
===============  ==============================================================

pika cannot send a Python float (its table encoder has no float case, and it decodes an AMQP
double into an int), so a float header value travels as the one-entry table
``{"x-cf-float": repr(value)}``; no other header value is a table, so the decoding is
unambiguous.

Properties come from whoever could publish, so they are decoded behind a guard
(``decode_properties``): pika raised ``OverflowError`` for a timestamp header of 2**64-1,
``ValueError`` for one past the year 9999, and ``RecursionError`` (with a 1.2 MB traceback)
for a table nested 3,000 deep, and any of these, raised on the I/O thread, dropped the whole
connection: a node lost its exclusive queue, and a durable queue's consumers reconnected 41
times in 5 s. The guard turns every failure into ``Undecodable`` properties that carry the
reason, and refuses what decodes but would trip cellframe later: tables nested deeper than
``MAX_HEADER_DEPTH``, a header name or a property that is not UTF-8 text (pika leaves it
bytes). ``from_amqp`` raises ``UndecodableError`` for them; the consumer dead-letters the
delivery with that reason and counts it.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import time
from typing import Any

import pika
import pika.data

from ..errors import TransportError
from ..wire.envelope import Envelope, new_message_id
from ._amqp_plain import decode_plain
from .base import DEAD_LETTER_REASON

__all__ = [
    "MAX_HEADER_DEPTH",
    "RESERVED_PREFIX",
    "Undecodable",
    "UndecodableError",
    "EncodedProperties",
    "dead_letter_properties",
    "decode_properties",
    "encode_properties",
    "from_amqp",
    "to_amqp",
    "with_reason",
]

#: Header names the transport uses for itself; a caller's header may not start with it.
RESERVED_PREFIX = "x-cf-"
_TS = "x-cf-ts"
_FLOAT = "x-cf-float"
_LONG_FIELDS = {"message_id": "x-cf-id", "reply_to": "x-cf-reply-to", "sender": "x-cf-sender",
                "correlation_id": "x-cf-correlation-id"}
_ID_HEADER, _REPLY_TO_HEADER, _SENDER_HEADER, _CORRELATION_HEADER = _LONG_FIELDS.values()
_OWN_HEADERS = (_TS, *_LONG_FIELDS.values())
_SHORTSTR = 255
_INT64 = range(-(2**63), 2**63)
#: Tables and arrays nested deeper than this in headers are refused (the broker's own
#: ``x-death`` nests 3 deep).
MAX_HEADER_DEPTH = 16
_TEXT_PROPERTIES = ("content_type", "content_encoding", "correlation_id", "reply_to",
                    "expiration", "message_id", "type", "user_id", "app_id", "cluster_id")
_REASON_CHARS = 200
#: Header names ``_check_key`` passed: a set lookup instead of three checks, for each of a
#: signed message's headers. Emptied past ``_GOOD_NAMES_KEPT``.
_GOOD_NAMES: set[str] = set()
_GOOD_NAMES_KEPT = 256


#: Header names ``_check_key`` passed, each with its encoding as an AMQP short string.
_NAME_BYTES: dict[str, bytes] = {}
_P = pika.BasicProperties
_LONG_STRING = struct.Struct(">cI")  # a table value's kind, then a long string's length
_TABLE_SIZE = struct.Struct(">I")
_FLAGS = struct.Struct(">H")
_TIMESTAMP = struct.Struct(">Q")


class UndecodableError(TransportError):
    """A delivery whose AMQP properties cannot be decoded into an Envelope."""


class Undecodable(pika.BasicProperties):  # type: ignore[misc]
    """Properties that could not be decoded: every field is None, ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


def decode_properties(data: bytes) -> pika.BasicProperties:
    """The properties encoded in ``data`` (a content header's property list), or
    ``Undecodable`` saying why not; never raises."""
    plain = decode_plain(data)
    if plain is not None:  # all text, tables one deep: nothing _problem refuses
        return plain
    properties = pika.BasicProperties()
    try:
        properties.decode(data)
        problem = _problem(properties)
    except Exception as exc:  # whatever pika raises, and RecursionError
        text = str(exc)[:_REASON_CHARS]
        problem = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return properties if problem is None else Undecodable(problem)


def _problem(properties: pika.BasicProperties) -> str | None:
    """What in decoded ``properties`` cellframe cannot take, or None."""
    for name in _TEXT_PROPERTIES:
        value = getattr(properties, name)
        if value is not None and type(value) is not str:
            return f"property {name} is not UTF-8 text"
    headers = properties.headers
    if headers is None:
        return None
    stack: list[tuple[Any, int]] = [(headers, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_HEADER_DEPTH:
            return f"headers nested deeper than {MAX_HEADER_DEPTH}"
        if isinstance(value, dict):
            for key, item in value.items():
                if type(key) is not str:
                    return f"header name {bytes(key)[:40]!r} is not UTF-8 text"
                if isinstance(item, dict | list):
                    stack.append((item, depth + 1))
        else:
            stack.extend((item, depth + 1) for item in value if isinstance(item, dict | list))
    return None


def to_amqp(envelope: Envelope, *, persistent: bool) -> pika.BasicProperties:
    """The pika properties that carry ``envelope``'s metadata; raises TransportError for a
    header AMQP cannot carry (naming the header)."""
    headers = {_check_key(key): _encode_value(key, value)
               for key, value in envelope.headers.items()}
    ts = envelope.timestamp
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        raise TransportError(f"envelope timestamp {ts!r} is not a number")
    headers[_TS] = repr(float(ts))
    short = {}
    for field, header in _LONG_FIELDS.items():
        value = getattr(envelope, field)
        short[field] = value
        if value is not None and len(value.encode("utf-8", "surrogatepass")) > _SHORTSTR:
            headers[header] = _encode_value(field, value)
            short[field] = None
    return pika.BasicProperties(
        message_id=short["message_id"],
        reply_to=short["reply_to"],
        app_id=short["sender"],
        correlation_id=short["correlation_id"],
        content_type=envelope.content_type,
        timestamp=int(ts) if math.isfinite(ts) and 0 <= ts < 2**63 else None,
        headers=headers,
        delivery_mode=2 if persistent else 1,
    )


class EncodedProperties:
    """An envelope's properties already encoded (``encode_properties``): what pika's
    ``BasicProperties.encode`` makes of ``to_amqp``'s properties, and the ``message_id``
    property (None for an id that travels as a header) a returned message is matched by."""

    __slots__ = ("data", "message_id")

    def __init__(self, data: bytes, message_id: str | None) -> None:
        self.data = data
        self.message_id = message_id

    def decoded(self) -> pika.BasicProperties:
        """The pika properties these bytes hold (for a publisher of another shape)."""
        return pika.BasicProperties().decode(self.data)


def encode_properties(envelope: Envelope, *,
                      persistent: bool) -> EncodedProperties | pika.BasicProperties:
    """``to_amqp(envelope)`` ready to send: encoded in one pass where every header is text
    or a float (what a signed message carries), else ``to_amqp``'s properties (raising what
    it raises). The bytes are pika's to the byte (``tests/test_amqp_encoding.py``).

    On a client sending signed messages, ``to_amqp`` and pika's ``encode`` took 4.4 and
    5.9 us a message (a quarter of the client's samples in the pipeline benchmark): the
    headers went through a dict of checked values, a ``BasicProperties`` of 14 fields, and
    pika's table encoder a value at a time.
    """
    encoded = _encode_plain(envelope, persistent)
    return encoded if encoded is not None else to_amqp(envelope, persistent=persistent)


def _encode_plain(envelope: Envelope, persistent: bool) -> EncodedProperties | None:
    """The properties in one pass, or None for anything but text and float headers, a time
    that is not a float in range, or text that is not strict UTF-8 (``to_amqp`` then judges,
    and pika encodes)."""
    ts = envelope.timestamp
    if type(ts) is not float or not 0 <= ts < 2**63:  # to_amqp raises, or sends no timestamp
        return None
    pieces: list[bytes] = []
    add = pieces.extend
    names, string = _NAME_BYTES, _LONG_STRING.pack
    try:
        for key, value in envelope.headers.items():
            name = names.get(key) if type(key) is str else None
            if name is None:
                name = _name_bytes(key)
                if name is None:
                    return None
            if type(value) is str:
                data = value.encode()
                add((name, string(b"S", len(data)), data))
            elif type(value) is float:  # {"x-cf-float": repr(value)}, as _encode_value makes it
                data = repr(value).encode()
                add((name, b"F", _TABLE_SIZE.pack(len(data) + _FLOAT_ENTRY_SIZE), _FLOAT_NAME,
                     string(b"S", len(data)), data))
            else:
                return None
        data = repr(ts).encode()
        add((_TS_NAME, string(b"S", len(data)), data))
        short: list[bytes | None] = []
        for value, header in ((envelope.message_id, _ID_NAME),
                              (envelope.reply_to, _REPLY_TO_NAME),
                              (envelope.sender, _SENDER_NAME),
                              (envelope.correlation_id, _CORRELATION_NAME)):
            if value is None:
                short.append(None)
                continue
            if type(value) is not str:
                return None
            data = value.encode()
            if len(data) > _SHORTSTR:
                add((header, string(b"S", len(data)), data))
                short.append(None)
            else:
                short.append(data)
        content_type = envelope.content_type
        content = None if content_type is None else content_type.encode()
    except (UnicodeEncodeError, AttributeError):  # AttributeError: a content type not text
        return None
    if content is not None and len(content) > _SHORTSTR:
        return None  # pika refuses it, as it always did
    table = b"".join(pieces)
    message_id, reply_to, sender, correlation_id = short
    flags = _P.FLAG_HEADERS | _P.FLAG_DELIVERY_MODE | _P.FLAG_TIMESTAMP
    out = [b"", b"" if content is None else bytes((len(content),)) + content,
           _TABLE_SIZE.pack(len(table)), table, b"\x02" if persistent else b"\x01"]
    if content is not None:
        flags |= _P.FLAG_CONTENT_TYPE
    for value, flag in ((correlation_id, _P.FLAG_CORRELATION_ID), (reply_to, _P.FLAG_REPLY_TO),
                        (message_id, _P.FLAG_MESSAGE_ID)):
        if value is not None:
            flags |= flag
            out.append(bytes((len(value),)) + value)
    out.append(_TIMESTAMP.pack(int(ts)))
    if sender is not None:
        flags |= _P.FLAG_APP_ID
        out.append(bytes((len(sender),)) + sender)
    out[0] = _FLAGS.pack(flags)
    return EncodedProperties(b"".join(out), None if message_id is None else envelope.message_id)


def _name_bytes(key: object) -> bytes | None:
    """A header name as an AMQP short string, remembered; None for one ``_check_key``
    refuses or that is not strict UTF-8."""
    try:
        name = _check_key(key).encode()
    except (TransportError, UnicodeEncodeError):
        return None
    if len(_NAME_BYTES) >= _GOOD_NAMES_KEPT:
        _NAME_BYTES.clear()
    if type(key) is str:
        _NAME_BYTES[key] = encoded = bytes((len(name),)) + name
        return encoded
    return bytes((len(name),)) + name


def _short(name: str) -> bytes:
    data = name.encode()
    return bytes((len(data),)) + data


_TS_NAME, _ID_NAME, _REPLY_TO_NAME, _SENDER_NAME, _CORRELATION_NAME = map(_short, _OWN_HEADERS)
_FLOAT_NAME = _short(_FLOAT)
_FLOAT_ENTRY_SIZE = len(_FLOAT_NAME) + _LONG_STRING.size  # the float's table but its text


def from_amqp(properties: pika.BasicProperties, body: bytes) -> Envelope:
    """Rebuild the Envelope a cellframe transport sent; a foreign message gets a fresh id.
    UndecodableError if the properties could not be decoded, or carry a field of the
    transport's own (``x-cf-...``) that is not text."""
    if isinstance(properties, Undecodable):
        raise UndecodableError(f"undecodable AMQP properties ({properties.reason})")
    # Text first, as on encoding: most headers are (a signed message's signature, key and
    # target). This one pass, the own-field names kept in a tuple, measured 1.6-2.3 us for a
    # signed message against 2.2-2.4 us (two interleaved runs on the loaded machine).
    raw = properties.headers
    headers: dict[str, Any] = {key: value if type(value) is str else _decode_value(value)
                               for key, value in raw.items()} if raw else {}
    for own in _OWN_HEADERS:
        if own in headers and type(headers[own]) is not str:
            raise UndecodableError(f"undecodable AMQP properties (header {own} is not text)")
    ts = _timestamp(headers.pop(_TS, None), properties.timestamp)
    pop = headers.pop
    message_id = pop(_ID_HEADER, None) or properties.message_id
    reply_to = pop(_REPLY_TO_HEADER, None) or properties.reply_to
    sender = pop(_SENDER_HEADER, None) or properties.app_id
    correlation_id = pop(_CORRELATION_HEADER, None) or properties.correlation_id
    # A message the broker dead-lettered (delivery limit, TTL) carries the why in its own header.
    if DEAD_LETTER_REASON not in headers and "x-first-death-reason" in headers:
        headers[DEAD_LETTER_REASON] = str(headers["x-first-death-reason"])
    return Envelope(body, message_id or new_message_id(), time.time() if ts is None else ts,
                    reply_to, sender, headers, correlation_id, properties.content_type)


def with_reason(envelope: Envelope, reason: str) -> Envelope:
    """A copy of ``envelope`` whose headers say why it was dead-lettered."""
    return dataclasses.replace(envelope, headers={**envelope.headers, DEAD_LETTER_REASON: reason})


def dead_letter_properties(envelope: Envelope, reason: str) -> tuple[Envelope,
                                                                   pika.BasicProperties]:
    """The copy of ``envelope`` that goes to the dead letters, with ``reason``, and its
    properties. Headers of a foreign message that ``to_amqp`` refuses (a timestamp, a decimal,
    a table) are kept when pika can encode them, else dropped and named in the reason: a dead
    letter must always be sendable."""
    copy = with_reason(envelope, reason)
    try:
        return copy, to_amqp(copy, persistent=True)
    except TransportError:
        pass
    kept, foreign, dropped = {}, {}, []
    for key, value in copy.headers.items():
        try:
            kept[_check_key(key)] = value
            _encode_value(key, value)
        except TransportError:
            kept.pop(key, None)
            if isinstance(key, str) and _pika_encodes(key, value):
                foreign[key] = value
            else:
                dropped.append(str(key)[:40])
    if dropped:
        kept[DEAD_LETTER_REASON] = f"{reason} (headers dropped: {', '.join(dropped)})"
    copy = dataclasses.replace(copy, headers=kept)
    properties = to_amqp(copy, persistent=True)
    properties.headers.update(foreign)
    return copy, properties


def _pika_encodes(key: str, value: Any) -> bool:
    try:
        pika.data.encode_table([], {key: value})
    except Exception:  # pika refuses it (or it nests too deep to encode)
        return False
    return not key.startswith(RESERVED_PREFIX)


def _check_key(key: object) -> str:
    if type(key) is str and key in _GOOD_NAMES:  # the same few names on every message
        return key
    if not isinstance(key, str):
        raise TransportError(f"header name {key!r} is not a str")
    if key.startswith(RESERVED_PREFIX):
        raise TransportError(f"header name {key!r} is reserved for the AMQP transport")
    if len(key.encode("utf-8", "surrogatepass")) > _SHORTSTR:
        raise TransportError(f"header name {key[:40]!r}... is longer than 255 bytes")
    if type(key) is str:
        if len(_GOOD_NAMES) >= _GOOD_NAMES_KEPT:
            _GOOD_NAMES.clear()
        _GOOD_NAMES.add(key)
    return key


def _encode_value(key: str, value: Any) -> Any:
    # Text first: most headers are (a signed message's signature, key and target), and with
    # the names' memo below, to_amqp went from 4.6 to 3.4 us for a signed message.
    if type(value) is str:
        return _checked_text(key, value)
    if isinstance(value, float):
        return {_FLOAT: repr(value)}
    if isinstance(value, bool) or value is None or isinstance(value, bytes):
        return value
    if isinstance(value, int):
        if value not in _INT64:
            raise TransportError(f"header {key!r}: int {value} does not fit in 64 bits")
        return int(value)
    if isinstance(value, str):
        return _checked_text(key, value)
    raise TransportError(
        f"header {key!r} has a {type(value).__name__} value: AMQP headers carry only "
        "str, bytes, int, float, bool and None"
    )


def _checked_text(key: str, value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TransportError(f"header {key!r}: str is not encodable as UTF-8") from exc
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1 and _FLOAT in value:
        try:
            return float(value[_FLOAT])
        except (TypeError, ValueError):
            return value
    if isinstance(value, int) and not isinstance(value, bool) and type(value) is not int:
        return int(value)  # pika decodes 64-bit ints into its own ``long`` subclass
    return value


def _timestamp(header: Any, whole_seconds: int | None) -> float | None:
    if isinstance(header, str):
        try:
            return float(header)
        except ValueError:
            pass
    return float(whole_seconds) if whole_seconds is not None else None
