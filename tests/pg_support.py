"""Support for the PostgreSQL multi-master tests: throwaway databases, waits, catalog snapshots.

Every test run creates its own uniquely named databases (``cf_<uuid8>_<key>``) and drops them
afterwards with ``DROP DATABASE ... WITH (FORCE)``, which also ends connections left open.
The doc helpers read ``docs/postgres-multimaster.md``'s fenced blocks, so its examples are
checked by tests rather than trusted.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from cellframe.pgmulti import READ_SIDE, Description, apply_description
from cellframe.testing import missing
from cellframe.testing.services import port_open

__all__ = [
    "DOC_PATH",
    "Cluster",
    "DocBlock",
    "catalog_snapshot",
    "doc_blocks",
    "dsn_for",
    "open_cluster",
    "query",
    "require_postgres",
    "reset_cluster",
    "throwaway_databases",
]

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "postgres-multimaster.md"
POSTGRES_DSN = os.environ.get("CELLFRAME_TEST_POSTGRES",
                              "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432


def require_postgres() -> str:
    """The test server's connection string; skip the test (fail it under CI) if it is down."""
    if not port_open(POSTGRES_HOST, POSTGRES_PORT):
        missing(f"PostgreSQL on {POSTGRES_HOST}:{POSTGRES_PORT}")
    return POSTGRES_DSN


def dsn_for(dbname: str) -> str:
    """The test server's connection string, pointed at ``dbname``."""
    return make_conninfo(require_postgres(), dbname=dbname)


def query(dsn: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement in its own connection and return its rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


@contextmanager
def throwaway_databases(keys: Iterable[str]) -> Iterator[dict[str, str]]:
    """Create one fresh database per key; yield key -> connection string; drop them all after.

    Created and dropped in parallel: each DROP DATABASE waits for a checkpoint, and parallel
    drops share one (measured here under load: 7 drops took 9.7 s in turn, 0.35 s at once).
    """
    prefix = f"cf_{uuid.uuid4().hex[:8]}_"
    names = {key: prefix + key for key in keys}
    created: list[str] = []

    def create(name: str) -> None:
        _admin(f'CREATE DATABASE "{name}"')
        created.append(name)

    try:
        _in_parallel(create, names.values())
        yield {key: dsn_for(name) for key, name in names.items()}
    finally:
        _in_parallel(lambda name: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'), created)


def _admin(statement: str) -> None:
    with psycopg.connect(require_postgres(), autocommit=True) as conn:
        conn.execute(statement)


def _in_parallel(work: Callable[[str], None], names: Iterable[str]) -> None:
    names = list(names)
    if names:
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(work, names))  # list(): re-raise the first failure here


@dataclass
class Cluster:
    """A description applied to throwaway databases: its masters' and read side's DSNs."""

    description: Description
    dsns: dict[str, str]

    @property
    def read(self) -> str:
        return self.dsns[READ_SIDE]

    def masters(self) -> dict[str, str]:
        return {m.name: self.dsns[m.name] for m in self.description.masters}


@contextmanager
def open_cluster(description: Description, spare: Iterable[str] = ()) -> Iterator[Cluster]:
    """Databases for every master and the read side (plus ``spare`` ones), with the DDL applied."""
    keys = [m.name for m in description.masters] + [READ_SIDE, *spare]
    with throwaway_databases(keys) as dsns:
        apply_description(description, dsns)
        yield Cluster(description, dsns)


def reset_cluster(cluster: Cluster) -> None:
    """Empty every table, restart every counter and forget replication progress.

    Lets many tests share one set of databases (creating one took 0.3 to 1.6 s here under
    load). Runs as ``session_replication_role = replica``, which the generated triggers let
    through, as they do the replicator; DELETE rather than TRUNCATE, which costs new files
    and an fsync per table (0.7 s per reset here, against 0.1 s).
    """
    deletes = [f'DELETE FROM public."{t.name}"' for t in cluster.description.tables]
    work = {
        dsn: [*deletes, "ALTER SEQUENCE cellframe.guid_counter RESTART"]
        for dsn in cluster.masters().values()
    }
    work[cluster.read] = [
        *deletes,  # a DELETE on a parent reaches every <master>_<table> child
        "UPDATE cellframe.replication_state SET done = '1:1:', target = NULL,"
        " after_guid = NULL, rows_copied = 0, last_guid = NULL, updated_at = NULL",
    ]
    _in_parallel(lambda dsn: _as_replica(dsn, work[dsn]), work)


def _as_replica(dsn: str, statements: list[str]) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        for statement in statements:
            conn.execute(statement)


_SNAPSHOT_QUERIES = {
    "namespaces": "SELECT oid::text, nspname FROM pg_namespace",
    "relations": """SELECT c.oid::text, n.nspname, c.relname, c.relkind, c.relfilenode::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('public', 'cellframe')""",
    "columns": """SELECT a.attrelid::regclass::text, a.attnum, a.attname, a.atttypid::regtype::text,
            a.attnotnull, a.attinhcount, a.attislocal, pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname IN ('public', 'cellframe') AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": """SELECT oid::text, conrelid::regclass::text, conname,
            pg_get_constraintdef(oid), coninhcount, conislocal
        FROM pg_constraint WHERE connamespace::regnamespace::text IN ('public', 'cellframe')""",
    "indexes": """SELECT indexrelid::text, pg_get_indexdef(indexrelid) FROM pg_index
        WHERE indrelid::regclass::text NOT LIKE 'pg_%'""",
    "triggers": """SELECT oid::text, tgrelid::regclass::text, tgname, tgenabled,
            pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal""",
    "functions": """SELECT p.oid::text, p.proname, p.prosrc, p.provolatile, p.proisstrict
        FROM pg_proc p WHERE p.pronamespace = 'cellframe'::regnamespace""",
    "inherits": """SELECT inhrelid::regclass::text, inhparent::regclass::text, inhseqno
        FROM pg_inherits""",
    "sequences": """SELECT schemaname, sequencename, last_value::text, max_value::text
        FROM pg_sequences""",
}


def catalog_snapshot(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """What the DDL can change in one database: catalog entries (with oids) and its own rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        snapshot = {
            name: sorted(conn.execute(q).fetchall(), key=repr)
            for name, q in _SNAPSHOT_QUERIES.items()
        }
        for table in ("cellframe.master", "cellframe.replication_state"):
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() != (None,):
                rows = conn.execute(f"SELECT t::text FROM {table} t").fetchall()
                snapshot[table] = sorted(rows, key=repr)
    return snapshot


@dataclass(frozen=True)
class DocBlock:
    """A fenced code block of the doc: its language, its ``key=value`` options, its text."""

    language: str
    options: dict[str, str]
    text: str
    line: int


_FENCE = re.compile(r"^( *)```(\w*)(.*)$")


def doc_blocks(path: Path = DOC_PATH) -> list[DocBlock]:
    """Every fenced block of the doc, in order (blocks indented in list items included)."""
    blocks: list[DocBlock] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        index += 1
        if not match:
            continue
        indent, start, body = len(match.group(1)), index, []
        while not lines[index].strip().startswith("```"):
            body.append(lines[index][indent:])
            index += 1
        index += 1
        options = dict(item.split("=", 1) for item in match.group(3).split())
        blocks.append(DocBlock(match.group(2), options, "\n".join(body) + "\n", start))
    return blocks
