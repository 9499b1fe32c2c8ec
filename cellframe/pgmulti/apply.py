"""Apply the generated DDL to real databases with psycopg 3, speaking only cellframe errors.

This module is the psycopg boundary for the DDL: every ``psycopg.Error`` leaves it translated
by ``translate_error`` (``raise ... from exc``), so callers catch ``CellframeError`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ..errors import CellframeError, ConfigError, GuidExhaustedError, StoreError
from .ddl import generate_ddl
from .schema import Description

__all__ = [
    "DDL_LOCK",
    "SQLSTATE_WRITE_REFUSED",
    "SQLSTATE_WRONG_MASTER",
    "apply_ddl",
    "apply_description",
    "describe_conninfo",
    "translate_error",
]

#: Raised by the generated DDL when a database already belongs to another master.
SQLSTATE_WRONG_MASTER = "CF001"
#: Raised by the generated triggers: an UPDATE/DELETE on a master, any write on the read side.
SQLSTATE_WRITE_REFUSED = "CF002"
#: PostgreSQL's sequence_generator_limit_exceeded: a master's counter reached 2**48 - 1.
_SQLSTATE_SEQUENCE_EXHAUSTED = "2200H"
#: Advisory lock key ("cell" in ASCII) that serialises concurrent applies to one database:
#: two ``CREATE TABLE IF NOT EXISTS`` racing can both pass the check and one then fails.
DDL_LOCK = 0x63656C6C


def translate_error(exc: psycopg.Error, doing: str) -> CellframeError:
    """The cellframe error for a psycopg error raised while ``doing`` something."""
    sqlstate = getattr(exc, "sqlstate", None)
    detail = exc.diag.message_primary if getattr(exc, "diag", None) else None
    message = f"{doing}: {detail or exc}"
    if sqlstate == _SQLSTATE_SEQUENCE_EXHAUSTED:
        return GuidExhaustedError(f"{message} (this master has issued all of its guids)")
    if sqlstate == SQLSTATE_WRONG_MASTER:
        return ConfigError(message)
    return StoreError(message)


def describe_conninfo(conninfo: str) -> str:
    """A connection string reduced to what an error message may show: no password."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "an unparseable connection string"
    host = params.get("host", "localhost")
    return f"database {params.get('dbname', '?')} on {host}:{params.get('port', 5432)}"


def apply_ddl(conninfo: str, ddl: str) -> None:
    """Apply ``ddl`` to one database in one transaction: all of it, or none of it."""
    try:
        with psycopg.connect(conninfo) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
            # No parameters: psycopg sends the script with the simple protocol, which accepts
            # many statements; autocommit is off, so they share the transaction opened above.
            conn.execute(cast(Any, ddl))
    except psycopg.Error as exc:
        raise translate_error(exc, f"applying DDL to {describe_conninfo(conninfo)}") from exc


def apply_description(description: Description, conninfos: Mapping[str, str]) -> None:
    """Apply every database's DDL; ``conninfos`` maps each ``generate_ddl`` key to a database."""
    ddl = generate_ddl(description)
    missing = sorted(ddl.keys() - conninfos.keys())
    if missing:
        raise ConfigError(f"no connection string for {', '.join(missing)}")
    for key, script in ddl.items():
        apply_ddl(conninfos[key], script)
