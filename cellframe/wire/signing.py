"""Message signing: an HMAC-SHA256 over an envelope, with a cluster-wide shared secret.

Every node of a cluster holds the same secret (from the environment or a file, never from
DNS, which anyone on the path can read or spoof). ``Signer.sign`` puts the signature in the
``x-cellframe-signature`` header; ``Signer.verify`` refuses a message that is unsigned,
forged, tampered with, too old (``max_age``: a replay outside the window the dedup memory
covers) or stamped too far in the future.

What the signature covers, as one canonical byte string::

    b"cellframe-sig-v1"
    then for message_id, timestamp, reply_to, sender, body, in that order:
        1 byte   0 = absent (None), 1 = present
        8 bytes  length, big-endian
        n bytes  the value (UTF-8 for text, IEEE-754 big-endian double for the timestamp)

The length prefixes mean no bytes can move from one field to the next (``reply_to="ab",
sender="c"`` and ``reply_to="a", sender="bc"`` sign differently), and an absent field differs
from an empty one. Headers are not covered: they carry transport notes such as a dead-letter
reason, which are added after signing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import os
import struct
import time
from pathlib import Path

from ..errors import ConfigError, InputTooLargeError, SecurityError
from .envelope import Envelope

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_SKEW",
    "MIN_SECRET_BYTES",
    "SIGNATURE_HEADER",
    "Signer",
    "check_size",
    "load_secret",
]

SIGNATURE_HEADER = "x-cellframe-signature"
#: Seconds a signed message stays acceptable; older ones are refused as possible replays.
DEFAULT_MAX_AGE = 300.0
#: Seconds a timestamp may lie in the future (clock skew between nodes).
DEFAULT_MAX_SKEW = 30.0
#: Shortest secret accepted: 128 bits.
MIN_SECRET_BYTES = 16
_VERSION = b"cellframe-sig-v1"
_DIGEST_HEX_LEN = 64
_PRESENT = struct.Struct(">BQ")
_ABSENT = _PRESENT.pack(0, 0)
_DOUBLE = struct.Struct(">d")


class Signer:
    """Signs and verifies envelopes with one shared secret."""

    def __init__(self, secret: bytes, *, max_age: float = DEFAULT_MAX_AGE,
                 max_skew: float = DEFAULT_MAX_SKEW, max_bytes: int | None = None) -> None:
        if not isinstance(secret, bytes):
            raise ConfigError(f"the cluster secret must be bytes, not {type(secret).__name__}")
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"the cluster secret is {len(secret)} bytes; at least {MIN_SECRET_BYTES} needed")
        # Keyed once; each signature copies this state (about 30% faster than hmac.new here).
        self._mac = hmac.new(secret, digestmod=hashlib.sha256)
        self.max_age = max_age
        self.max_skew = max_skew
        self.max_bytes = max_bytes

    def signature(self, envelope: Envelope) -> str:
        """The hex HMAC-SHA256 of ``envelope``'s canonical bytes."""
        mac = self._mac.copy()
        mac.update(canonical_bytes(envelope))
        return mac.hexdigest()

    def sign(self, envelope: Envelope) -> Envelope:
        """A copy of ``envelope`` carrying its signature header (the original is unchanged)."""
        headers = dict(envelope.headers)
        headers[SIGNATURE_HEADER] = self.signature(envelope)
        return dataclasses.replace(envelope, headers=headers)

    def verify(self, envelope: Envelope, *, max_age: float | None = None,
               now: float | None = None, max_bytes: int | None = None) -> None:
        """Raise SecurityError unless ``envelope`` is signed with this secret and fresh.

        ``max_bytes`` (or the signer's default) rejects an oversized body with
        InputTooLargeError before anything else is looked at.
        """
        limit = max_bytes if max_bytes is not None else self.max_bytes
        if limit is not None:
            check_size(envelope, limit)
        given = envelope.headers.get(SIGNATURE_HEADER)
        if given is None:
            raise SecurityError(f"message {_id(envelope)} is not signed")
        if not _looks_like_digest(given):
            raise SecurityError(f"message {_id(envelope)} has a malformed signature")
        try:
            expected = self.signature(envelope)
        except (TypeError, ValueError, AttributeError, struct.error) as exc:
            raise SecurityError(f"message {_id(envelope)} has unsignable fields: {exc}") from exc
        if not hmac.compare_digest(expected, given):
            raise SecurityError(f"message {_id(envelope)} has a forged or altered signature")
        self._check_time(envelope, max_age if max_age is not None else self.max_age, now)

    def _check_time(self, envelope: Envelope, max_age: float, now: float | None) -> None:
        ts = envelope.timestamp
        if not math.isfinite(ts):
            raise SecurityError(f"message {_id(envelope)} has no usable timestamp ({ts!r})")
        now = time.time() if now is None else now
        age = now - ts
        if age > max_age:
            raise SecurityError(
                f"message {_id(envelope)} is {age:.1f} s old, older than max_age {max_age:g} s")
        if -age > self.max_skew:
            raise SecurityError(f"message {_id(envelope)} is stamped {-age:.1f} s in the future "
                                f"(more than the {self.max_skew:g} s allowed for clock skew)")

    def __repr__(self) -> str:
        return f"<Signer max_age={self.max_age:g} max_skew={self.max_skew:g}>"  # never the key


def canonical_bytes(envelope: Envelope) -> bytes:
    """The byte string the signature covers (see the module doc for its layout)."""
    parts = [_VERSION]
    for value in (_text(envelope.message_id), _DOUBLE.pack(envelope.timestamp),
                  _text(envelope.reply_to), _text(envelope.sender), envelope.body):
        if value is None:
            parts.append(_ABSENT)
        else:
            if not isinstance(value, bytes):
                raise TypeError(f"body must be bytes, not {type(value).__name__}")
            parts.append(_PRESENT.pack(1, len(value)))
            parts.append(value)
    return b"".join(parts)


def check_size(envelope: Envelope, max_bytes: int) -> None:
    """Refuse a body over ``max_bytes`` before anything parses it."""
    size = len(envelope.body)
    if size > max_bytes:
        raise InputTooLargeError(
            f"message {_id(envelope)} body is {size} bytes, over the {max_bytes}-byte limit")


def load_secret(env: str = "CELLFRAME_SECRET", file: str | os.PathLike[str] | None = None) -> bytes:
    """The cluster secret: from ``file`` if given, else from environment variable ``env``.

    Surrounding whitespace (a trailing newline) is stripped. Raises ConfigError if there is
    none, it cannot be read, or it is shorter than ``MIN_SECRET_BYTES``.
    """
    if file is not None:
        try:
            secret = Path(file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the cluster secret from {os.fspath(file)!r}: "
                              f"{exc.strerror or exc}") from exc
        where = f"file {os.fspath(file)!r}"
    else:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"no cluster secret: set ${env} or give a secret file")
        secret = os.fsencode(value).strip()
        where = f"${env}"
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"the cluster secret in {where} is {len(secret)} bytes; "
                          f"at least {MIN_SECRET_BYTES} needed")
    return secret


def _text(value: str | None) -> bytes | None:
    return None if value is None else value.encode("utf-8", "surrogatepass")


def _looks_like_digest(value: object) -> bool:
    # compare_digest needs ASCII str; any other 64 ASCII characters simply fail to match.
    return isinstance(value, str) and len(value) == _DIGEST_HEX_LEN and value.isascii()


def _id(envelope: Envelope) -> str:
    return repr(envelope.message_id)[:80]
