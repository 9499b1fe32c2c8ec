"""Roles: the library cells (the service examples of the seed) and the registry that says which
cells a node starts when it differentiates into a role.

=============== ===================== ==================================================
role            class                 what it does
=============== ===================== ==================================================
``proxy``       ``ProxyCell``         weighted pool of backends, routes requests
``web``         ``WebCell``           serves, measures load, asks for a weight
``keepalive``   ``KeepAliveCell``     only sends keep-alive pings
``logsump``     ``LogSumpCell``       only receives: events and logs to a file
``pgbouncer``   ``BouncerCell``       keeps pgbouncer's write alias on the live masters
``shard``       ``ShardCell``         replicates and heals the append-only store
=============== ===================== ==================================================
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
