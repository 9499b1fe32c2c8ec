"""cellframe: self-healing clusters built like stem cells.

Every node carries all the code, learns who it is from DNS, and differentiates into the cells
its role needs; cells are pykka actors driven by declarative state machines and programmed
with s-expressions. This module re-exports the public, stable API.
"""

from __future__ import annotations

from .cell import Cell, CellCounters
from .client import Client, Reply
from .envelope import Envelope, Message
from .errors import (
    ArityError,
    BrokerUnavailableError,
    BufferFullError,
    CellframeError,
    ClosedTransportError,
    ClusterError,
    ConfigError,
    CorruptSegmentError,
    DnsLookupError,
    EvaluationError,
    GuidExhaustedError,
    InputTooLargeError,
    LanguageError,
    LimitExceededError,
    NotEnoughReplicasError,
    ReadError,
    SecurityError,
    StateMachineError,
    StoreError,
    TransportError,
    UnknownVerbError,
    UnroutableError,
)
from .evaluator import Evaluator
from .node import Node
from .outbox import Outbox, RecordingOutbox
from .printer import write
from .reader import read, read_all
from .registry import RoleRegistry
from .resolvers import ConfigWatcher, DnsServerResolver, ZoneFileResolver
from .statemachine import on, transition
from .symbols import Keyword, Symbol
from .transports.base import Delivery, Transport
from .transports.memory import MemoryBroker, MemoryTransport
from .txtconfig import ClusterIntent, NodeConfig

__all__ = [
    "ArityError",
    "BrokerUnavailableError",
    "BufferFullError",
    "Cell",
    "CellCounters",
    "CellframeError",
    "Client",
    "ClosedTransportError",
    "ClusterError",
    "ClusterIntent",
    "ConfigError",
    "ConfigWatcher",
    "CorruptSegmentError",
    "Delivery",
    "DnsLookupError",
    "DnsServerResolver",
    "Envelope",
    "EvaluationError",
    "Evaluator",
    "GuidExhaustedError",
    "InputTooLargeError",
    "Keyword",
    "LanguageError",
    "LimitExceededError",
    "MemoryBroker",
    "MemoryTransport",
    "Message",
    "Node",
    "NodeConfig",
    "NotEnoughReplicasError",
    "Outbox",
    "ReadError",
    "RecordingOutbox",
    "Reply",
    "RoleRegistry",
    "SecurityError",
    "StateMachineError",
    "StoreError",
    "Symbol",
    "Transport",
    "TransportError",
    "UnknownVerbError",
    "UnroutableError",
    "ZoneFileResolver",
    "on",
    "read",
    "read_all",
    "transition",
    "write",
]
