# The public API, read by type checkers and by lazy_loader (cellframe/__init__.py): each name is
# imported from its module on first use, so `import cellframe` alone loads none of them.
from .cell.cell import Cell as Cell
from .cell.outbox import RecordingOutbox as RecordingOutbox
from .cell.statemachine import on as on
from .cell.statemachine import transition as transition
from .client import Client as Client
from .config.resolvers import DnsServerResolver as DnsServerResolver
from .config.resolvers import ZoneFileResolver as ZoneFileResolver
from .errors import CellframeError as CellframeError
from .errors import ConfigError as ConfigError
from .errors import LanguageError as LanguageError
from .errors import TransportError as TransportError
from .language.printer import write as write
from .language.reader import read as read
from .language.symbols import Keyword as Keyword
from .language.symbols import Symbol as Symbol
from .node.cluster import LocalCluster as LocalCluster
from .node.cluster import wait_for as wait_for
from .node.node import Node as Node
from .node.process import run_node as run_node
from .roles import default_registry as default_registry
from .roles.registry import RoleRegistry as RoleRegistry
from .roles.shard import ShardCell as ShardCell
from .transports.amqp import AmqpTransport as AmqpTransport
from .transports.memory import MemoryBroker as MemoryBroker
from .transports.memory import MemoryTransport as MemoryTransport
from .wire.envelope import Envelope as Envelope
from .wire.envelope import Message as Message
from .wire.signing import Signer as Signer
from .wire.signing import load_secret as load_secret

__all__ = [
    "AmqpTransport",
    "Cell",
    "CellframeError",
    "Client",
    "ConfigError",
    "DnsServerResolver",
    "Envelope",
    "Keyword",
    "LanguageError",
    "LocalCluster",
    "MemoryBroker",
    "MemoryTransport",
    "Message",
    "Node",
    "RecordingOutbox",
    "RoleRegistry",
    "ShardCell",
    "Signer",
    "Symbol",
    "TransportError",
    "ZoneFileResolver",
    "default_registry",
    "load_secret",
    "on",
    "read",
    "run_node",
    "transition",
    "wait_for",
    "write",
]
