"""cellframe's in-order replicator: each master's new rows into its ``<master>_<table>``.

Why not simply "every row after the last guid seen": a row takes its guid from a sequence when
it is inserted, but becomes visible when its transaction commits. With concurrent writers,
guid 6 can commit while guid 5's transaction is still open; a replicator that copied 6 and
moved its watermark past it would never copy 5. Deltas are therefore cut by *commit*, the way
Skytools' PgQ cut its batches: every master row carries the id of the transaction that
inserted it (``cellframe_xid``), and the read side remembers, per master and table, a master
snapshot ``done`` such that every row visible in ``done`` has been copied. One step:

1. lock the link's state row on the read side;
2. if no catch-up is under way, take the master's current snapshot as ``target``;
3. read the rows visible in ``target`` but not in ``done`` (a fixed set: the tables are
   append-only and every transaction visible in ``target`` has finished), in guid order,
   after ``after_guid``, at most ``batch_rows`` of them;
4. copy them into the child table (as ``session_replication_role = replica``, which is what
   lets the replicator past the read side's ``read_only`` triggers);
5. a short batch completes the catch-up (``done := target``); a full one records its last
   guid in ``after_guid``, so within one target "after the last guid seen" *is* a complete
   delta, and a large backlog is copied in bounded batches;
6. commit rows and state together: a crash or a dropped connection at any point neither
   loses nor doubles a row, and the next step resumes where the last commit left off.

A ``Replicator`` is used by one thread at a time; ``ReplicationLoop`` runs one in the
background. The role it writes the read side as must be allowed to set
``session_replication_role`` (a superuser, or ``GRANT SET ON PARAMETER`` in PostgreSQL 15).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from ..errors import CellframeError, ConfigError
from ..failures import log_failure
from .apply import describe_conninfo, translate_error
from .schema import Description, Master, Table, child_name

__all__ = ["ReplicationLoop", "Replicator", "SyncReport"]

log = logging.getLogger(__name__)

_LOCK_STATE = """SELECT done::text, target::text, after_guid FROM cellframe.replication_state
WHERE master = %s AND table_name = %s FOR UPDATE"""

_DELTA = """SELECT guid{columns} FROM public.{table}
WHERE cellframe_xid >= pg_snapshot_xmin(%(done)s::pg_snapshot)
  AND pg_visible_in_snapshot(cellframe_xid, %(target)s::pg_snapshot)
  AND NOT pg_visible_in_snapshot(cellframe_xid, %(done)s::pg_snapshot)
  AND (%(after)s::bigint IS NULL OR guid > %(after)s::bigint)
ORDER BY guid LIMIT %(limit)s"""

_SAVE_STATE = """UPDATE cellframe.replication_state
SET done = coalesce(%(done)s::pg_snapshot, done), target = %(target)s::pg_snapshot,
    after_guid = %(after)s, rows_copied = rows_copied + %(rows)s,
    last_guid = coalesce(%(last)s, last_guid), updated_at = now()
WHERE master = %(master)s AND table_name = %(table)s"""


@dataclass
class SyncReport:
    """What one round over every master did: rows copied per master, and masters that failed."""

    copied: dict[str, int] = field(default_factory=dict)
    errors: dict[str, CellframeError] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Rows copied in this round, over all masters."""
        return sum(self.copied.values())


class Replicator:
    """Copy each master's committed rows to the read side, in commit order, exactly once."""

    def __init__(
        self,
        description: Description,
        read_conninfo: str,
        master_conninfos: Mapping[str, str],
        *,
        batch_rows: int = 5000,
        application_name: str = "cellframe-replicator",
    ) -> None:
        missing = sorted({m.name for m in description.masters} - master_conninfos.keys())
        if missing:
            raise ConfigError(f"no connection string for master {', '.join(missing)}")
        if batch_rows < 1:
            raise ConfigError(f"batch_rows must be at least 1, got {batch_rows}")
        self.description = description
        self._read_conninfo = read_conninfo
        self._master_conninfos = dict(master_conninfos)
        self._batch_rows = batch_rows
        self._application_name = application_name
        self._read: psycopg.Connection[Any] | None = None
        self._masters: dict[str, psycopg.Connection[Any]] = {}

    def sync_all(self) -> SyncReport:
        """Bring the read side up to date with every master; one failing master stops no other."""
        report = SyncReport()
        for master in self.description.masters:
            try:
                report.copied[master.name] = self.sync_master(master.name)
            except CellframeError as exc:
                report.errors[master.name] = exc
        return report

    def sync_master(self, name: str) -> int:
        """Copy everything ``name`` had committed when this call began; return the row count."""
        master = self.description.master(name)
        copied = 0
        try:
            for table in self.description.tables:
                finished = False
                while not finished:
                    rows, finished = self._step(master, table)
                    copied += rows
        except psycopg.Error as exc:
            self._drop_broken(name)
            doing = f"replicating master {name} to the read side"
            raise translate_error(exc, doing) from exc
        return copied

    def close(self) -> None:
        """Close every connection; a later sync opens them again."""
        for conn in [self._read, *self._masters.values()]:
            if conn is not None:
                conn.close()
        self._read, self._masters = None, {}

    def __enter__(self) -> Replicator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _step(self, master: Master, table: Table) -> tuple[int, bool]:
        """One batch of one link, committed with its state; True once the target is reached."""
        read, source = self._read_conn(), self._master_conn(master)
        with read.transaction():
            read.execute("SET LOCAL session_replication_role = replica")
            done, target, after = self._lock_state(read, master, table)
            if target is None:
                target = _current_snapshot(source)
            params = {"done": done, "target": target, "after": after, "limit": self._batch_rows}
            rows = source.execute(_delta_query(table), params).fetchall()
            _copy_rows(read, master, table, rows)
            finished = len(rows) < self._batch_rows
            last = rows[-1][0] if rows else None
            read.execute(
                _SAVE_STATE,
                {
                    "done": target if finished else None,
                    "target": None if finished else target,
                    "after": None if finished else last,
                    "rows": len(rows),
                    "last": last,
                    "master": master.name,
                    "table": table.name,
                },
            )
        return len(rows), finished

    def _lock_state(
        self, read: psycopg.Connection[Any], master: Master, table: Table
    ) -> tuple[str, str | None, int | None]:
        state = read.execute(_LOCK_STATE, (master.name, table.name)).fetchone()
        if state is None:
            raise ConfigError(
                f"the read side has no link for master {master.name}, table {table.name}:"
                " apply the read side's DDL for this description first"
            )
        return state

    def _read_conn(self) -> psycopg.Connection[Any]:
        if self._read is None or self._read.closed:
            self._read = self._connect(self._read_conninfo)
        return self._read

    def _master_conn(self, master: Master) -> psycopg.Connection[Any]:
        conn = self._masters.get(master.name)
        if conn is None or conn.closed:
            conninfo = self._master_conninfos[master.name]
            conn = self._connect(conninfo)
            try:
                _check_identity(conn, master, conninfo)
            except BaseException:
                conn.close()
                raise
            self._masters[master.name] = conn
        return conn

    def _connect(self, conninfo: str) -> psycopg.Connection[Any]:
        return psycopg.connect(conninfo, autocommit=True, application_name=self._application_name)

    def _drop_broken(self, name: str) -> None:
        """Forget connections that failed, so the next sync reconnects instead of failing again."""
        for key, conn in [("", self._read), (name, self._masters.get(name))]:
            if conn is not None and (conn.broken or conn.closed):
                conn.close()
                if key:
                    self._masters.pop(key, None)
                else:
                    self._read = None


def _current_snapshot(conn: psycopg.Connection[Any]) -> str:
    """The master's current snapshot (``xmin:xmax:xip``): which transactions have finished."""
    row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
    assert row is not None  # a SELECT of one value always returns one row
    return str(row[0])


def _check_identity(conn: psycopg.Connection[Any], master: Master, conninfo: str) -> None:
    """Refuse to copy another master's rows under this master's name."""
    found = conn.execute("SELECT name, id FROM cellframe.master").fetchone()
    if found != (master.name, master.id):
        where = describe_conninfo(conninfo)
        raise ConfigError(f"{where} is master {found}, not {master.name} (id {master.id})")


def _delta_query(table: Table) -> sql.Composed:
    # Every user column travels as text and is parsed back by the read side's COPY: exact for
    # every type with a text form, with no Python adaptation in between.
    columns = sql.SQL("").join(
        sql.SQL(", {}::text").format(sql.Identifier(c.name)) for c in table.columns
    )
    return sql.SQL(_DELTA).format(columns=columns, table=sql.Identifier(table.name))


def _copy_rows(
    read: psycopg.Connection[Any], master: Master, table: Table, rows: list[tuple[Any, ...]]
) -> None:
    if not rows:
        return
    columns = [sql.Identifier("guid"), *(sql.Identifier(c.name) for c in table.columns)]
    statement = sql.SQL("COPY public.{} ({}) FROM STDIN").format(
        sql.Identifier(child_name(master, table)), sql.SQL(", ").join(columns)
    )
    with read.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


class ReplicationLoop:
    """Run a ``Replicator`` every ``interval`` seconds in a background thread until stopped.

    A master that fails (down, a connection cut) is logged, counted in ``failures`` and retried
    on the next round: links heal by themselves once the master answers again.
    """

    def __init__(self, replicator: Replicator, *, interval: float = 0.1) -> None:
        self.replicator = replicator
        self.interval = interval
        self.rounds = 0
        self.rows_copied = 0
        self.failures = 0
        self.last_report: SyncReport | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> ReplicationLoop:
        """Start the background thread (again, after ``stop``)."""
        if self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="cellframe-replicator", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current round; the replicator's connections stay open for reuse."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> ReplicationLoop:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                report = self.replicator.sync_all()
            except Exception as failure:  # a bug must not kill the link silently: log it, retry
                log_failure(log, failure, "replication round failed")
                self.failures += 1
            else:
                self.last_report = report
                self.rows_copied += report.rows
                self.failures += len(report.errors)
                for name, error in report.errors.items():
                    log.warning("replicating master %s failed, will retry: %s", name, error)
            self.rounds += 1
            self._stop.wait(self.interval)
