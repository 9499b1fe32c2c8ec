"""The application's side of the scheme: inserts to the write alias, selects to the read alias.

``Router`` is what a Python program uses in front of pgbouncer (``bouncer``); programs in
other languages do the same by database name (docs/postgres-multimaster.md):

- ``insert`` sends rows to the round-robin ``write`` alias in one transaction and returns
  their guids, which carry the id of the master that took them (``master_of``). If the
  connection is lost (a master died under it), it reconnects and sends the rows again, to
  whichever master the alias gives next, until ``retry_for`` seconds have passed. An insert
  is *acknowledged* when ``insert`` returns: that row is committed on a master.
- ``select`` (and ``execute`` of a read) goes to the ``read`` alias, where one select spans
  every master.
- ``execute`` of an UPDATE, DELETE, MERGE, TRUNCATE or anything else that is not an insert or
  a read is refused with the seed's reasons, unless the caller names the master: each master
  holds only its own share of the rows, so such a statement sent round-robin would find the
  row on one master in five, and the read side is a copy that the next replication round
  overwrites. Named (``master="b"``), it goes to ``write_b``, and PostgreSQL decides: the
  tables cellframe generates are insert-only there and refuse it too (SQLSTATE CF002), other
  tables take it.

One ``Router`` holds one connection per alias it used and is for one thread at a time.

Retrying after a lost connection is at least once: when the connection dies after COMMIT was
sent and before its answer came back, the first master may have committed the rows, and the
retry commits them again elsewhere, with other guids. A row that must be written once needs a
key of its own that readers deduplicate on.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import psycopg

from ..errors import ConfigError, StoreError
from ..store.guid import decode
from .apply import translate_error
from .bouncer import READ_ALIAS, WRITE_ALIAS, master_alias
from .schema import Description, Table
from .write import insert_rows

__all__ = ["REFUSAL", "Router", "statement_kind"]

log = logging.getLogger(__name__)

#: Why a statement that changes rows needs a named master (the seed's caveat).
REFUSAL = (
    "updates and deletes need consistent routing: each master holds only its own rows, so "
    "one sent to the round-robin write alias reaches the row's master one time in N, and the "
    "read side is a copy that replication overwrites; name the master that holds the row "
    "(master_of(guid)), and remember that cellframe's own tables are insert-only: supersede "
    "a row by inserting a newer one"
)

_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_STRINGS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\$(\w*)\$.*?\$\1\$", re.S)
_WORD = re.compile(r"[A-Za-z_]+")
_READS = frozenset({"select", "values", "table", "show", "explain"})
_CHANGES = frozenset({"update", "delete", "merge", "truncate"})


def statement_kind(sql: str) -> str:
    """``"insert"``, ``"read"`` or ``"other"``: where a statement may go.

    Comments and quoted text are set aside first, so a word inside a string decides nothing. A
    ``WITH`` query is an insert if its only data-changing word is INSERT, a read if it has none;
    an EXPLAIN ANALYZE runs its statement and counts as that statement."""
    text = _STRINGS.sub(" ", _COMMENTS.sub(" ", sql))
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        raise ConfigError("an empty statement")
    head = words[0]
    if head == "explain" and "analyze" in words[1:3]:
        return statement_kind(" ".join(words[words.index("analyze") + 1:]))
    if head == "with":
        if _CHANGES & set(words):
            return "other"
        return "insert" if "insert" in words else "read"
    if head == "insert":
        return "insert"
    return "read" if head in _READS else "other"


class Router:
    """Inserts through pgbouncer's write alias, selects through its read alias."""

    def __init__(
        self,
        connect: Callable[[str], str],
        *,
        description: Description | None = None,
        retry_for: float = 15.0,
        write: str = WRITE_ALIAS,
        read: str = READ_ALIAS,
    ) -> None:
        """``connect(dbname)`` gives the connection string of pgbouncer's database ``dbname``
        (``BouncerProcess.conninfo``, or ``lambda db: f"host=pgb port=6432 dbname={db}"``);
        ``description`` lets ``master_of`` name a guid's master."""
        self._connect = connect
        self.description = description
        self.retry_for = retry_for
        self.write_alias, self.read_alias = write, read
        self.retries = 0
        self._conns: dict[str, psycopg.Connection[Any]] = {}

    # -- writing ------------------------------------------------------------------------

    def insert(self, table: Table, rows: Iterable[Mapping[str, Any]]) -> list[int]:
        """Insert ``rows`` on whichever master the write alias gives, in one transaction;
        their guids once committed. Retried on a lost connection (see the module doc)."""
        rows = list(rows)
        # One INSERT ... VALUES statement in autocommit is its own transaction: all its rows
        # or none, in one round trip instead of three (BEGIN, INSERT, COMMIT), which measured
        # 1,448 rows/s through pgbouncer against 1,851/s direct (0.78x) with BEGIN/COMMIT.
        return self._with_retry(self.write_alias, lambda conn: insert_rows(conn, table, rows))

    def execute(self, sql: str, params: Any = None, *, master: str | None = None) -> list[tuple[Any, ...]]:
        """Run one statement where it belongs: an insert on the write alias, a read on the read
        alias, anything else only on the named ``master`` (else ConfigError with the reasons)."""
        kind = statement_kind(sql)
        if master is not None:
            dbname = master_alias(self._known_master(master))
        elif kind == "insert":
            dbname = self.write_alias
        elif kind == "read":
            dbname = self.read_alias
        else:
            raise ConfigError(f"refused {sql.split(None, 1)[0].upper()}: {REFUSAL}")

        def attempt(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            with conn.transaction():
                cur = conn.execute(sql.encode() if params is None else sql, params)
                return cur.fetchall() if cur.description else []

        if kind == "insert" and master is None:
            return self._with_retry(dbname, attempt)
        return self._once(dbname, attempt)

    def select(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """A read on the read side; any other statement is refused here."""
        if statement_kind(sql) != "read":
            raise ConfigError("select() takes reads only; use insert() or execute()")
        return self.execute(sql, params)

    def master_of(self, guid: int) -> str:
        """The name of the master that issued ``guid`` (needs the description)."""
        if self.description is None:
            raise ConfigError("master_of needs the Router's description")
        shard = decode(guid).shard
        for master in self.description.masters:
            if master.id == shard:
                return master.name
        raise ConfigError(f"guid {guid} was issued by master id {shard}, which is not described")

    def _known_master(self, name: str) -> str:
        if self.description is not None:
            self.description.master(name)  # ConfigError for a name it does not know
        return name

    # -- connections ----------------------------------------------------------------------

    def _conn(self, dbname: str) -> psycopg.Connection[Any]:
        conn = self._conns.get(dbname)
        if conn is None or conn.closed:
            # No server-side prepared statements: pgbouncer 1.18 in transaction mode cannot
            # route them to the server connection that prepared them.
            conn = psycopg.connect(self._connect(dbname), autocommit=True, prepare_threshold=None,
                                   connect_timeout=5)
            self._conns[dbname] = conn
        return conn

    def _drop(self, dbname: str) -> None:
        conn = self._conns.pop(dbname, None)
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def _once(self, dbname: str, work: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        try:
            return work(self._conn(dbname))
        except psycopg.OperationalError as exc:
            self._drop(dbname)
            raise translate_error(exc, f"on {dbname}") from exc
        except psycopg.Error as exc:
            raise translate_error(exc, f"on {dbname}") from exc

    def _with_retry(self, dbname: str, work: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        deadline = time.monotonic() + self.retry_for
        pause = 0.01
        while True:
            try:
                return work(self._conn(dbname))
            except (psycopg.Error, StoreError) as exc:
                lost = _connection_lost(exc)
                if lost is None:
                    if isinstance(exc, StoreError):
                        raise
                    raise translate_error(exc, f"on {dbname}") from exc
                self._drop(dbname)
                if time.monotonic() + pause > deadline:
                    raise StoreError(f"on {dbname}: no master took it within {self.retry_for:g} s:"
                                     f" {lost}") from exc
                self.retries += 1
                log.info("on %s: connection lost (%s); sending again", dbname, lost)
                time.sleep(pause)
                pause = min(pause * 2, 0.2)

    def close(self) -> None:
        for dbname in list(self._conns):
            self._drop(dbname)

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _connection_lost(exc: BaseException) -> psycopg.OperationalError | None:
    """The lost connection behind ``exc`` (``insert_rows`` translates psycopg's errors, keeping
    them as the cause), or None if the statement itself failed."""
    for each in (exc, exc.__cause__):
        if isinstance(each, psycopg.OperationalError):
            return each
    return None
