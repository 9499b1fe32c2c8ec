"""PostgreSQL write masters united on a read side: the seed's multi-master scheme, generated.

``Description`` (masters and tables) -> ``generate_ddl`` (SQL per database) ->
``apply_description`` (psycopg) -> ``insert_rows`` on masters -> ``Replicator`` /
``ReplicationLoop`` copy every master's rows into ``<master>_<table>`` on the read side, where
``SELECT ... FROM <table>`` spans them all. Walk-through: ``docs/postgres-multimaster.md``.
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
from .ddl import generate_ddl, master_ddl, read_common_ddl, read_ddl, read_master_ddl
from .replicate import ReplicationLoop, Replicator, SyncReport
from .schema import READ_SIDE, Column, Description, Master, Table, child_name
from .write import insert_rows

__all__ = [
    "Column",
    "Description",
    "Master",
    "READ_SIDE",
    "ReplicationLoop",
    "Replicator",
    "SyncReport",
    "Table",
    "apply_ddl",
    "apply_description",
    "child_name",
    "generate_ddl",
    "insert_rows",
    "master_ddl",
    "read_common_ddl",
    "read_ddl",
    "read_master_ddl",
    "translate_error",
]
