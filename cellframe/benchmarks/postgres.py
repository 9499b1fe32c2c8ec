"""Inserts through pgbouncer's write alias against the same inserts straight to one master.

``bench_pgbouncer_inserts`` starts five private PostgreSQL servers on loopback addresses
(``cellframe.pgmulti.processes``) with the masters' DDL and pgbouncer in front of them, then
runs, back to back, ``rounds`` times each and interleaved:

* ``direct``: ``writers`` threads, one psycopg connection each, straight to master ``a``;
* ``pgbouncer``: ``writers`` threads, one ``Router`` each, through the ``write`` alias, which
  spreads the transactions over the five masters.

Both insert the same rows, one per transaction, with ``insert_rows`` (fsync and
synchronous_commit on: an insert counts once it is durable). The ratio is pgbouncer's rate
over the direct rate, each the median of its rounds. Without PostgreSQL's server programs or
pgbouncer, it returns ``{"skipped": reason}``.
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .store import _run_threads

__all__ = ["bench_pgbouncer_inserts", "missing_programs"]


def missing_programs() -> str | None:
    """Why the benchmark cannot run here, or None."""
    try:
        import psycopg  # noqa: F401
    except ModuleNotFoundError:
        return "psycopg is not installed (pip install 'cellframe[postgres]')"
    if shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists():
        return "pgbouncer is not installed (apt-get install pgbouncer)"
    if shutil.which("pg_config") is None and not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return "PostgreSQL's server programs (initdb, pg_ctl) are not installed"
    return None


def _timed(writers: int, work: Callable[[int], None]) -> float:
    """``work(w)`` on ``writers`` threads started together (``store._run_threads``); the wall
    time, or the first worker's error raised here."""
    errors: list[BaseException] = []

    def guarded(w: int) -> None:
        try:
            work(w)
        except BaseException as error:
            errors.append(error)

    elapsed = _run_threads(guarded, writers)
    if errors:
        raise errors[0]
    return elapsed


def bench_pgbouncer_inserts(n: int = 4_000, *, writers: int = 8, rounds: int = 3) -> dict[str, Any]:
    """Rows per second through pgbouncer and straight to one master (see the module doc)."""
    reason = missing_programs()
    if reason is not None:
        return {"skipped": reason}
    import psycopg

    from ..pgmulti import Column, Master, MasterEndpoint, PgLayout, Router, Table, master_ddl
    from ..pgmulti.apply import apply_ddl
    from ..pgmulti.processes import local_servers, run_bouncer
    from ..pgmulti.write import insert_rows

    table = Table("events", (Column("writer", "integer"), Column("seq", "integer"), Column("body", "text")))
    per_writer = max(1, n // writers)
    with local_servers(5) as servers:
        masters = tuple(MasterEndpoint(Master(name, i), server.endpoint)
                        for i, (name, server) in enumerate(zip("abcde", servers, strict=True), 1))
        layout = PgLayout(masters, servers[0].endpoint)
        description = layout.description([table])
        for master in masters:
            apply_ddl(master.endpoint.conninfo(), master_ddl(description, master.name))
        with run_bouncer(layout) as bouncer:
            def row(w: int, i: int) -> list[dict[str, Any]]:
                return [{"writer": w, "seq": i, "body": "x" * 100}]

            def direct(w: int) -> None:
                with psycopg.connect(masters[0].endpoint.conninfo(), autocommit=True) as conn:
                    for i in range(per_writer):  # autocommit: each insert its transaction
                        insert_rows(conn, table, row(w, i))

            def bounced(w: int) -> None:
                with Router(bouncer.conninfo) as helper:
                    for i in range(per_writer):
                        helper.insert(table, row(w, i))

            direct_s, bounced_s = [], []
            for _ in range(rounds):
                direct_s.append(_timed(writers, direct))
                bounced_s.append(_timed(writers, bounced))
    total = per_writer * writers
    direct_rate = total / statistics.median(direct_s)
    bounced_rate = total / statistics.median(bounced_s)
    return {
        "ratio": round(bounced_rate / direct_rate, 2),
        "pgbouncer_per_s": round(bounced_rate),
        "direct_one_master_per_s": round(direct_rate),
        "pgbouncer_runs_per_s": [round(total / s) for s in bounced_s],
        "direct_runs_per_s": [round(total / s) for s in direct_s],
        "writers": writers,
        "rows_per_run": total,
        "masters": 5,
    }
