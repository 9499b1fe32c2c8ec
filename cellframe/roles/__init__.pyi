# The names this package re-exports, read by type checkers and by lazy_loader (see __init__.py).
from .builtin import (
    BUILTIN_CELLS as BUILTIN_CELLS,
)
from .builtin import (
    BUILTIN_ROLES as BUILTIN_ROLES,
)
from .builtin import (
    builtin_registry as builtin_registry,
)
from .builtin import (
    default_registry as default_registry,
)
from .keepalive import KeepAliveCell as KeepAliveCell
from .logsump import LogSumpCell as LogSumpCell
from .pgbouncer import BouncerCell as BouncerCell
from .proxy import ProxyCell as ProxyCell
from .proxy import WeightedPool as WeightedPool
from .registry import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
from .registry import RoleRegistry as RoleRegistry
from .shard import ShardCell as ShardCell
from .web import WebCell as WebCell

__all__ = [
    "BUILTIN_CELLS",
    "BUILTIN_ROLES",
    "BouncerCell",
    "ENTRY_POINT_GROUP",
    "KeepAliveCell",
    "LogSumpCell",
    "ProxyCell",
    "RoleRegistry",
    "ShardCell",
    "WeightedPool",
    "WebCell",
    "builtin_registry",
    "default_registry",
]
