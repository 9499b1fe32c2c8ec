"""PostgreSQL write masters united on a read side: the seed's multi-master scheme, generated.

``Description`` (masters and tables) -> ``generate_ddl`` (SQL per database) ->
``apply_description`` (psycopg) -> ``insert_rows`` on masters -> ``Replicator`` /
``ReplicationLoop`` copy every master's rows into ``<master>_<table>`` on the read side, where
``SELECT ... FROM <table>`` spans them all. In front of them, pgbouncer: ``PgLayout.from_dns``
-> ``bouncer_ini`` (a write database per master, a round-robin write alias, a read database),
kept on the live masters by ``BouncerDriver`` (rewrite and RELOAD), used by ``Router``
(inserts to the write alias, selects to the read one). Walk-through:
``docs/postgres-multimaster.md``.
"""

from __future__ import annotations

from ..errors import MissingExtraError

try:
    import psycopg  # noqa: F401  (applying, writing and replicating all talk to PostgreSQL)
except ModuleNotFoundError as exc:
    if exc.name != "psycopg":
        raise
    raise MissingExtraError(
        "cellframe.pgmulti needs psycopg, which comes with an extra: pip install 'cellframe[postgres]'"
    ) from exc

from .apply import apply_ddl, apply_description, translate_error
from .bouncer import READ_ALIAS, WRITE_ALIAS, BouncerSettings, bouncer_ini, master_alias
from .ddl import generate_ddl, master_ddl, read_common_ddl, read_ddl, read_master_ddl
from .driver import BouncerDriver, admin_command
from .layout import Endpoint, MasterEndpoint, PgLayout
from .replicate import ReplicationLoop, Replicator, SyncReport
from .router import Router, statement_kind
from .schema import READ_SIDE, Column, Description, Master, Table, child_name
from .write import insert_rows

__all__ = [
    "BouncerDriver",
    "BouncerSettings",
    "Column",
    "Description",
    "Endpoint",
    "Master",
    "MasterEndpoint",
    "PgLayout",
    "READ_ALIAS",
    "READ_SIDE",
    "ReplicationLoop",
    "Replicator",
    "Router",
    "SyncReport",
    "Table",
    "WRITE_ALIAS",
    "admin_command",
    "apply_ddl",
    "apply_description",
    "bouncer_ini",
    "child_name",
    "generate_ddl",
    "insert_rows",
    "master_alias",
    "master_ddl",
    "read_common_ddl",
    "read_ddl",
    "read_master_ddl",
    "statement_kind",
    "translate_error",
]
