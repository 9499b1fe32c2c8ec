"""The library cells by the role each plays, and the registries made of them."""

from __future__ import annotations

from .keepalive import KeepAliveCell
from .logsump import LogSumpCell
from .pgbouncer import BouncerCell
from .proxy import ProxyCell
from .registry import RoleRegistry
from .shard import ShardCell
from .web import WebCell

__all__ = ["BUILTIN_CELLS", "BUILTIN_ROLES", "builtin_registry", "default_registry"]

#: Every library cell by the role it plays.
BUILTIN_CELLS: dict[str, type] = {
    "keepalive": KeepAliveCell,
    "logsump": LogSumpCell,
    "pgbouncer": BouncerCell,
    "proxy": ProxyCell,
    "shard": ShardCell,
    "web": WebCell,
}

#: The same, in the shape ``RoleRegistry`` takes: role -> the classes to start.
BUILTIN_ROLES: dict[str, tuple[type, ...]] = {role: (cls,) for role, cls in BUILTIN_CELLS.items()}


def builtin_registry(**replace: type) -> RoleRegistry:
    """A RoleRegistry with every library cell; ``replace`` swaps a role's class
    (``builtin_registry(logsump=LogSumpCell.writing_to(path))``)."""
    roles = {**BUILTIN_CELLS, **replace}
    return RoleRegistry({role: [cls] for role, cls in roles.items()})


def default_registry() -> RoleRegistry:
    """The built-in roles (proxy, web, keepalive, logsump, pgbouncer, shard) plus installed plug-ins."""
    return RoleRegistry(BUILTIN_ROLES).load_entry_points()
