# The names this package re-exports, read by type checkers and by lazy_loader (see __init__.py).
from .amqp import AmqpTransport as AmqpTransport
from .base import Delivery as Delivery
from .base import Transport as Transport
from .memory import MemoryBroker as MemoryBroker
from .memory import MemoryTransport as MemoryTransport
from .tls import TlsOptions as TlsOptions
from .topology import amqp_topology as amqp_topology

__all__ = [
    "AmqpTransport",
    "Delivery",
    "MemoryBroker",
    "MemoryTransport",
    "TlsOptions",
    "Transport",
    "amqp_topology",
]
