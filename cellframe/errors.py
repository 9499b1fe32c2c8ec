"""The one exception hierarchy of cellframe: every error it raises is a ``CellframeError``.

    CellframeError
    ├── LanguageError (ValueError)          text or data that is not valid cellframe language
    │   ├── ReadError                       the reader could not read the text (carries line, column)
    │   │   └── InputTooLargeError          too many bytes, or nested too deep, to read safely
    │   └── EvaluationError                 a well-formed expression that cannot be evaluated
    │       ├── UnknownVerbError            the head of a form names no special form, built-in or verb
    │       ├── ArityError (TypeError)      wrong number or kind of arguments for a verb
    │       └── LimitExceededError          too many evaluation steps, or too deep a recursion
    ├── StateMachineError (TypeError)       a Cell class declares an impossible state machine
    ├── TransportError                      a transport could not do what was asked
    │   ├── BufferFullError                 the unconfirmed-message buffer is full: back off and retry
    │   ├── ClosedTransportError            the transport was closed
    │   └── BrokerUnavailableError          no broker address could be reached
    ├── SecurityError                       a message failed its signature, or is too old to trust
    │   └── RefusedError                    a node or client refused a message (``reason`` says why)
    ├── ConfigError (ValueError)            configuration that is missing, malformed or contradictory
    │   └── DnsLookupError                  the DNS server or zone file could not answer
    ├── StoreError                          the append-only store could not do what was asked
    │   ├── CorruptSegmentError             a segment failed its checksum where no torn tail explains it
    │   └── GuidExhaustedError              a shard has issued all 2**48 of its ids
    ├── ClusterError                        membership, healing or ring operations that cannot proceed
    │   └── CellCrashedError                a cell crashed (an action raised a BaseException, or its actor died)
    ├── HaproxyError                        HAProxy's runtime API refused a command
    │   └── HaproxyUnreachableError (ConnectionError)  its admin socket could not be reached
    └── MissingExtraError (ImportError)     an optional part needs an extra that is not installed

Errors from pika and dnspython are translated at the transport and resolver boundaries with
``raise ... from exc``, so callers only ever catch ``CellframeError`` subclasses. Every class
here is raised somewhere: an unroutable message is reported to ``on_return``, never raised,
and a quorum that is not met is answered with an ``(error ...)`` call-back.
"""

from __future__ import annotations

__all__ = [
    "ArityError",
    "BrokerUnavailableError",
    "BufferFullError",
    "CellCrashedError",
    "CellframeError",
    "ClosedTransportError",
    "ClusterError",
    "ConfigError",
    "CorruptSegmentError",
    "DnsLookupError",
    "EvaluationError",
    "GuidExhaustedError",
    "HaproxyError",
    "HaproxyUnreachableError",
    "InputTooLargeError",
    "LanguageError",
    "LimitExceededError",
    "MissingExtraError",
    "ReadError",
    "RefusedError",
    "SecurityError",
    "StateMachineError",
    "StoreError",
    "TransportError",
    "UnknownVerbError",
]


class CellframeError(Exception):
    """Root of every error cellframe raises."""


class LanguageError(CellframeError, ValueError):
    """Text or data that is not valid cellframe language.

    ``line`` and ``column`` (1-based) say where in the source text the problem is, when known.
    """

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None):
        self.reason = message
        self.line = line
        self.column = column
        where = f" at line {line}, column {column}" if line is not None else ""
        super().__init__(f"{message}{where}")


class ReadError(LanguageError):
    """The reader could not turn the text into data."""


class InputTooLargeError(ReadError):
    """The input is too large or nested too deep to be read safely."""


class EvaluationError(LanguageError):
    """A well-formed expression that cannot be evaluated."""


class UnknownVerbError(EvaluationError):
    """The head of a form names no special form, built-in or verb of the receiving cell."""


class ArityError(EvaluationError, TypeError):
    """A verb or built-in was given the wrong number or kind of arguments."""


class LimitExceededError(EvaluationError):
    """Evaluation ran past its step or depth budget."""


class StateMachineError(CellframeError, TypeError):
    """A Cell class declares an impossible state machine (raised at class definition)."""


class TransportError(CellframeError):
    """A transport could not do what was asked."""


class BufferFullError(TransportError):
    """The buffer of messages awaiting broker confirmation is full."""


class ClosedTransportError(TransportError):
    """The transport has been closed."""


class BrokerUnavailableError(TransportError):
    """None of the configured broker addresses could be reached."""


class SecurityError(CellframeError):
    """A message was unsigned, forged, or too old to be trusted."""


class RefusedError(SecurityError):
    """A message a verifier refused; ``reason`` is one of ``wire.signing.REASONS``
    (``unsigned``, ``bad-signature``, ``wrong-target``, ``expired``, ``replayed``, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ConfigError(CellframeError, ValueError):
    """Configuration that is missing, malformed or contradictory."""


class DnsLookupError(ConfigError):
    """The DNS server or zone file could not answer."""


class StoreError(CellframeError):
    """The append-only store could not do what was asked."""


class CorruptSegmentError(StoreError):
    """A segment failed its checksum somewhere other than a torn tail."""


class GuidExhaustedError(StoreError):
    """A shard has issued every one of its 2**48 ids."""


class ClusterError(CellframeError):
    """Membership, healing or ring operations that cannot proceed."""


class HaproxyError(CellframeError):
    """HAProxy's runtime API refused a command, or answered what cannot be read."""


class HaproxyUnreachableError(HaproxyError, ConnectionError):
    """HAProxy's admin socket could not be reached: not running, restarting, or no such file."""


class MissingExtraError(CellframeError, ImportError):
    """An optional part of cellframe was imported without the extra it needs; the message names
    the extra to install (``pip install 'cellframe[postgres]'``)."""


class CellCrashedError(ClusterError):
    """A cell crashed: an action raised a ``BaseException`` that is not an ``Exception``, or
    the cell's actor died. Carries the cause as ``__cause__``; its supervisor restarts it."""
