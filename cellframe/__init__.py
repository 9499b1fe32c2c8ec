"""cellframe: self-healing clusters built like stem cells.

Every node carries all the code, learns who it is from DNS, and differentiates into the cells
its role needs; cells are pykka actors driven by declarative state machines and programmed
with s-expressions. This module re-exports the public, stable API.
"""

from __future__ import annotations

from .cell.cell import Cell, CellCounters
from .cell.outbox import Outbox, RecordingOutbox
from .cell.statemachine import on, transition
from .client import Client, Reply, ReplyLog
from .config.resolvers import ConfigWatcher, DnsServerResolver, ZoneFileResolver
from .config.txtconfig import ClusterIntent, NodeConfig
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
    ReadError,
    SecurityError,
    StateMachineError,
    StoreError,
    TransportError,
    UnknownVerbError,
)
from .healing.membership import HealingConfig, Membership
from .healing.reconciler import Reconciler
from .language.evaluator import Evaluator, read_eval
from .language.hylang import hy_to_text, read_hy
from .language.printer import write
from .language.reader import read, read_all
from .language.symbols import Keyword, Symbol
from .node.cluster import LocalCluster
from .node.node import Node
from .roles import KeepAliveCell, LogSumpCell, ProxyCell, RoleRegistry, WebCell, builtin_registry, default_registry
from .store import GuidAllocator, Record, Retention, Ring, Store, plan_transfer
from .store.guid import Guid
from .transports.amqp import AmqpTransport
from .transports.base import Delivery, Transport
from .transports.memory import MemoryBroker, MemoryTransport
from .wire.envelope import Envelope, Message
from .wire.signing import Signer, load_secret

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
