"""A multi-master layout behind a real pgbouncer, for the tests that claim its behaviour.

Five private PostgreSQL servers (``cellframe.pgmulti.processes.local_servers``) on
127.0.0.2..6, one shared port and one database name, which is what pgbouncer's round-robin
host list needs; the read side is a throwaway database on the test server (127.0.0.1:5432);
a zone file describes them all as DNS would, and pgbouncer runs on a free loopback port with
the configuration cellframe generates from that zone.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from cellframe.config.resolvers import ZoneFileResolver
from cellframe.errors import ConfigError
from cellframe.node.node import Node
from cellframe.pgmulti import Description, PgLayout, Table, apply_description
from cellframe.pgmulti.processes import BouncerProcess, LocalServer, local_servers, run_bouncer
from cellframe.roles import builtin_registry
from cellframe.testing import missing
from cellframe.transports.memory import MemoryTransport
from tests.pg_support import require_postgres, throwaway_databases

__all__ = ["EVENTS", "BouncedLayout", "bounced_layout", "bouncer_node", "layout_zone"]

MASTERS = "abcde"
EVENTS = Table("events", (("writer", "integer"), ("seq", "integer"), ("body", "text")))


def layout_zone(servers: list[LocalServer], read_dsn: str) -> str:
    """The zone that describes ``servers`` as masters a..e and ``read_dsn`` as the read side."""
    read = conninfo_to_dict(read_dsn)
    lines = [
        "$ORIGIN pg.test.", "$TTL 5",
        "@ IN SOA ns.pg.test. hostmaster.pg.test. ( 1 60 30 600 5 )", "  IN NS ns",
        "ns IN A 127.0.0.1",
        f'_cluster IN TXT "pg.masters={" ".join(f"pg-{m}" for m in MASTERS[:len(servers)])}"'
        ' "pg.read=pg-read"',
    ]
    for index, (name, server) in enumerate(zip(MASTERS, servers, strict=False), start=1):
        endpoint = server.endpoint
        lines.append(f'pg-{name} IN TXT "pg.master={name}" "pg.id={index}" "pg.host={endpoint.host}"'
                     f' "pg.port={endpoint.port}" "pg.dbname={endpoint.dbname}"')
    lines.append(f'pg-read IN TXT "pg.host={read["host"]}" "pg.port={read.get("port", 5432)}"'
                 f' "pg.dbname={read["dbname"]}"')
    return "\n".join(lines) + "\n"


@dataclass
class BouncedLayout:
    """The servers, the layout read back from DNS, the description, and pgbouncer."""

    servers: dict[str, LocalServer]
    zone: Path
    layout: PgLayout
    description: Description
    bouncer: BouncerProcess

    def resolver(self) -> ZoneFileResolver:
        return ZoneFileResolver(self.zone)

    def read_dsn(self) -> str:
        return self.layout.read.conninfo()


def _require_programs() -> None:
    if shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists():
        missing("pgbouncer (apt-get install pgbouncer)")


@contextmanager
def bounced_layout(tmp: Path, count: int = 5) -> Iterator[BouncedLayout]:
    """``count`` masters and a read side, the DDL applied, pgbouncer in front of them."""
    require_postgres()
    _require_programs()
    try:
        servers_context = local_servers(count)
        servers = servers_context.__enter__()
    except ConfigError as error:
        missing(f"private PostgreSQL servers: {error}")
    try:
        with throwaway_databases(["read"]) as dsns:
            zone = tmp / "pg.zone"
            zone.write_text(layout_zone(servers, dsns["read"]))
            with ZoneFileResolver(zone) as resolver:
                layout = PgLayout.from_dns(resolver)
            description = layout.description([EVENTS])
            apply_description(description, layout.conninfos())
            with run_bouncer(layout) as bouncer:
                yield BouncedLayout(dict(zip(MASTERS, servers, strict=False)), zone, layout,
                                    description, bouncer)
    finally:
        servers_context.__exit__(None, None, None)


@contextmanager
def bouncer_node(bounced: BouncedLayout, tmp: Path, name: str = "pgb-01",
                 **settings: str) -> Iterator[tuple[Node, MemoryTransport]]:
    """A node in role ``pgbouncer`` driving the layout's pgbouncer, configured by DNS alone:
    the layout's zone plus its own record (``settings`` add ``pgbouncer.*`` keys)."""
    bouncer = bounced.bouncer
    record = {"role": "pgbouncer", "pgbouncer.config": str(bouncer.config_path),
              "pgbouncer.listen": f"{bouncer.settings.listen_addr}:{bouncer.settings.listen_port}",
              "pgbouncer.auth-file": bouncer.settings.auth_file, **settings}
    zone = tmp / f"{name}.zone"
    zone.write_text(bounced.zone.read_text()
                    + f"{name} IN TXT " + " ".join(f'"{k}={v}"' for k, v in record.items()) + "\n")
    with ZoneFileResolver(zone) as resolver, MemoryTransport() as transport, \
            Node(name, transport=transport, resolver=resolver, registry=builtin_registry(),
                 watch_config=False) as node:
        yield node, transport


class Acked:
    """Every insert a writer got back guids for: (writer, seq) -> guid, across threads."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()

    def add(self, writer: int, seq: int, guid: int) -> None:
        with self._lock:
            self.rows[(writer, seq)] = guid

    def __len__(self) -> int:
        with self._lock:
            return len(self.rows)

    def snapshot(self) -> dict[tuple[int, int], int]:
        with self._lock:
            return dict(self.rows)
