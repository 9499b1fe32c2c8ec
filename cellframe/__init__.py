"""cellframe: self-healing clusters built like stem cells.

Every node carries all the code, learns who it is from DNS, and differentiates into the cells
its role needs; cells are pykka actors driven by declarative state machines and programmed
with s-expressions. This module re-exports the public, stable API.
"""

from __future__ import annotations

from .cell import Cell, CellCounters
from .cells import KeepAliveCell, LogSumpCell, ProxyCell, WebCell, builtin_registry
from .client import Client, Reply, ReplyLog
from .cluster import LocalCluster
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
from .evaluator import Evaluator, read_eval
from .guid import Guid
from .healing import Reconciler
from .hylang import hy_to_text, read_hy
from .membership import HealingConfig, Membership
from .node import Node
from .outbox import Outbox, RecordingOutbox
from .printer import write
from .reader import read, read_all
from .registry import RoleRegistry, default_registry
from .resolvers import ConfigWatcher, DnsServerResolver, ZoneFileResolver
from .signing import Signer, load_secret
from .statemachine import on, transition
from .store import GuidAllocator, Record, Retention, Ring, Store, plan_transfer
from .symbols import Keyword, Symbol
from .transports.amqp import AmqpTransport
from .transports.base import Delivery, Transport
from .transports.memory import MemoryBroker, MemoryTransport
from .txtconfig import ClusterIntent, NodeConfig

__all__ = [
    "AmqpTransport",
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
    "Guid",
    "GuidAllocator",
    "GuidExhaustedError",
    "HealingConfig",
    "InputTooLargeError",
    "KeepAliveCell",
    "Keyword",
    "LanguageError",
    "LimitExceededError",
    "LocalCluster",
    "LogSumpCell",
    "Membership",
    "MemoryBroker",
    "MemoryTransport",
    "Message",
    "Node",
    "NodeConfig",
    "NotEnoughReplicasError",
    "Outbox",
    "ProxyCell",
    "ReadError",
    "Reconciler",
    "Record",
    "RecordingOutbox",
    "Reply",
    "ReplyLog",
    "Retention",
    "Ring",
    "RoleRegistry",
    "SecurityError",
    "Signer",
    "StateMachineError",
    "Store",
    "StoreError",
    "Symbol",
    "Transport",
    "TransportError",
    "UnknownVerbError",
    "UnroutableError",
    "WebCell",
    "ZoneFileResolver",
    "builtin_registry",
    "default_registry",
    "hy_to_text",
    "load_secret",
    "on",
    "plan_transfer",
    "read",
    "read_all",
    "read_eval",
    "read_hy",
    "transition",
    "write",
]
