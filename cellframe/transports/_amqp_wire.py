"""Envelope <-> AMQP message: how an Envelope's fields travel in pika properties and headers.

Mapping (round-trips exactly for str, bytes, int, float, bool and None header values):

===============  ==============================================================
``body``         the AMQP body, untouched
``message_id``   ``properties.message_id`` (a header if longer than 255 bytes)
``timestamp``    ``properties.timestamp`` (whole seconds, for tools) and the
                 ``x-cf-ts`` header holding ``repr(float)``: full precision
``reply_to``     ``properties.reply_to`` (a header if longer than 255 bytes)
``sender``       ``properties.app_id`` (a header if longer than 255 bytes)
``headers``      ``properties.headers``
===============  ==============================================================

pika cannot send a Python float (its table encoder has no float case, and it decodes an AMQP
double into an int), so a float header value travels as the one-entry table
``{"x-cf-float": repr(value)}``; no other header value is a table, so the decoding is
unambiguous.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pika

from ..errors import TransportError
from ..wire.envelope import Envelope, new_message_id
from .base import DEAD_LETTER_REASON

__all__ = ["RESERVED_PREFIX", "from_amqp", "to_amqp", "with_reason"]

#: Header names the transport uses for itself; a caller's header may not start with it.
RESERVED_PREFIX = "x-cf-"
_TS = "x-cf-ts"
_FLOAT = "x-cf-float"
_LONG_FIELDS = {"message_id": "x-cf-id", "reply_to": "x-cf-reply-to", "sender": "x-cf-sender"}
_SHORTSTR = 255
_INT64 = range(-(2**63), 2**63)


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
        timestamp=int(ts) if math.isfinite(ts) and 0 <= ts < 2**63 else None,
        headers=headers,
        delivery_mode=2 if persistent else 1,
    )


def from_amqp(properties: pika.BasicProperties, body: bytes) -> Envelope:
    """Rebuild the Envelope a cellframe transport sent; a foreign message gets a fresh id."""
    headers: dict[str, Any] = {}
    for key, value in (properties.headers or {}).items():
        headers[key] = _decode_value(value)
    ts = _timestamp(headers.pop(_TS, None), properties.timestamp)
    fields = {
        "message_id": headers.pop(_LONG_FIELDS["message_id"], None) or properties.message_id,
        "reply_to": headers.pop(_LONG_FIELDS["reply_to"], None) or properties.reply_to,
        "sender": headers.pop(_LONG_FIELDS["sender"], None) or properties.app_id,
    }
    # A message the broker dead-lettered (delivery limit, TTL) carries the why in its own header.
    if DEAD_LETTER_REASON not in headers and "x-first-death-reason" in headers:
        headers[DEAD_LETTER_REASON] = str(headers["x-first-death-reason"])
    return Envelope(body, fields["message_id"] or new_message_id(),
                    time.time() if ts is None else ts, fields["reply_to"], fields["sender"],
                    headers)


def with_reason(envelope: Envelope, reason: str) -> Envelope:
    """A copy of ``envelope`` whose headers say why it was dead-lettered."""
    headers = dict(envelope.headers)
    headers[DEAD_LETTER_REASON] = reason
    return Envelope(body=envelope.body, message_id=envelope.message_id,
                    timestamp=envelope.timestamp, reply_to=envelope.reply_to,
                    sender=envelope.sender, headers=headers)


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TransportError(f"header name {key!r} is not a str")
    if key.startswith(RESERVED_PREFIX):
        raise TransportError(f"header name {key!r} is reserved for the AMQP transport")
    if len(key.encode("utf-8", "surrogatepass")) > _SHORTSTR:
        raise TransportError(f"header name {key[:40]!r}... is longer than 255 bytes")
    return key


def _encode_value(key: str, value: Any) -> Any:
    if isinstance(value, float):
        return {_FLOAT: repr(value)}
    if isinstance(value, bool) or value is None or isinstance(value, bytes):
        return value
    if isinstance(value, int):
        if value not in _INT64:
            raise TransportError(f"header {key!r}: int {value} does not fit in 64 bits")
        return int(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise TransportError(f"header {key!r}: str is not encodable as UTF-8") from exc
        return value
    raise TransportError(
        f"header {key!r} has a {type(value).__name__} value: AMQP headers carry only "
        "str, bytes, int, float, bool and None"
    )


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
