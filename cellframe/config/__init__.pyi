# The names this package re-exports, read by type checkers and by lazy_loader (see __init__.py).
from .resolvers import DnsServerResolver as DnsServerResolver
from .resolvers import ZoneFileResolver as ZoneFileResolver
from .txtconfig import ClusterIntent as ClusterIntent
from .txtconfig import NodeConfig as NodeConfig
from .watchers import ConfigWatcher as ConfigWatcher

__all__ = [
    "ClusterIntent",
    "ConfigWatcher",
    "DnsServerResolver",
    "NodeConfig",
    "ZoneFileResolver",
]
