"""Where the masters and the read side live, read from DNS like the rest of the cluster's shape.

The pgbouncer configuration, its RELOAD driver and the application helper all start from one
``PgLayout``: every master (its ``Master`` name and id, and the server that holds it) and the
read side's server. In DNS (docs/postgres-multimaster.md, "pgbouncer in front")::

    _cluster  IN TXT "pg.masters=pg-a pg-b" "pg.read=pg-read"
    pg-a      IN TXT "pg.master=a" "pg.id=1" "pg.host=10.0.0.11" "pg.dbname=app"
    pg-b      IN TXT "pg.master=b" "pg.id=2" "pg.host=10.0.0.12" "pg.dbname=app"
    pg-read   IN TXT "pg.host=10.0.0.20" "pg.dbname=app_read"

``pg.port`` defaults to 5432 and ``pg.user`` to ``postgres``. The keys carry the ``pg.``
prefix so that a name may be a cellframe node and a database server at once. Every value that
reaches pgbouncer's configuration is checked here against a narrow pattern (no blanks, quotes
or ``=``), so nothing in DNS can inject a setting into the generated file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config.txtconfig import parse_names
from ..errors import ConfigError
from .schema import Description, Master, Table

__all__ = ["Endpoint", "MasterEndpoint", "PgLayout"]

_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]*\Z")  # a name or an IPv4/IPv6 address
_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")  # a database or user name
_DEFAULT_PORT = 5432
_DEFAULT_USER = "postgres"


@dataclass(frozen=True)
class Endpoint:
    """One PostgreSQL database: host, port, database name and user (no password: use a
    ``.pgpass`` file or pgbouncer's ``auth_file``, never DNS)."""

    host: str
    dbname: str
    port: int = _DEFAULT_PORT
    user: str = _DEFAULT_USER

    def __post_init__(self) -> None:
        _check(_HOST, self.host, "host")
        _check(_WORD, self.dbname, "dbname")
        _check(_WORD, self.user, "user")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port!r} is not a number from 1 to 65535")

    def conninfo(self, **extra: Any) -> str:
        """A libpq connection string for this database (``extra``: more parameters)."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=self.host, port=self.port, dbname=self.dbname, user=self.user,
                             **extra)

    def describe(self) -> str:
        return f"{self.dbname} on {self.host}:{self.port}"


@dataclass(frozen=True)
class MasterEndpoint:
    """A write master and the database that holds it."""

    master: Master
    endpoint: Endpoint

    @property
    def name(self) -> str:
        return self.master.name


@dataclass(frozen=True)
class PgLayout:
    """Every write master with its database, and the read side's database."""

    masters: tuple[MasterEndpoint, ...]
    read: Endpoint
    ttl: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if not self.masters:
            raise ConfigError("a layout needs at least one master")
        # Description checks names and ids for clashes; one table stands in for the real ones.
        Description(tuple(m.master for m in self.masters), (Table("t"),))

    def master(self, name: str) -> MasterEndpoint:
        """The master called ``name``."""
        for each in self.masters:
            if each.name == name:
                return each
        raise ConfigError(f"no master is named {name!r}")

    def names(self) -> list[str]:
        return [m.name for m in self.masters]

    def description(self, tables: Iterable[Table]) -> Description:
        """The multi-master description of these masters holding ``tables``."""
        return Description(tuple(m.master for m in self.masters), tuple(tables))

    def conninfos(self) -> dict[str, str]:
        """Connection strings keyed as ``generate_ddl`` keys its scripts (masters, ``read``)."""
        from .schema import READ_SIDE

        found = {m.name: m.endpoint.conninfo() for m in self.masters}
        found[READ_SIDE] = self.read.conninfo()
        return found

    @classmethod
    def from_dns(cls, resolver: Any) -> PgLayout:
        """Read the layout from a resolver (``cellframe.config``): ``pg.masters`` and
        ``pg.read`` at ``_cluster``, then each name's ``pg.*`` keys. Raises ConfigError naming
        the record and key of any problem."""
        intent = resolver.cluster_intent()
        masters_text = intent.settings.get("pg.masters")
        read_name = intent.settings.get("pg.read", "").strip()
        if not masters_text or not read_name:
            raise ConfigError("_cluster: a multi-master layout needs pg.masters= and pg.read=")
        names, problems = parse_names(masters_text)
        if problems or not names:
            raise ConfigError(f"_cluster: pg.masters={masters_text!r}: " + "; ".join(problems))
        masters, ttls = [], [intent.ttl]
        for name in names:
            config = resolver.node_config(name)
            ttls.append(config.ttl)
            masters.append(_master_from(name, config.settings))
        read = resolver.node_config(read_name)
        ttls.append(read.ttl)
        return cls(tuple(masters), _endpoint_from(read_name, read.settings), min(ttls))


def _master_from(name: str, settings: Mapping[str, str]) -> MasterEndpoint:
    where = f"{name}: "
    id_text = _required(settings, "pg.id", where).strip()
    if not id_text.isdigit():
        raise ConfigError(f"{where}pg.id={id_text!r} is not an integer")
    master_id = int(id_text)
    try:
        master = Master(_required(settings, "pg.master", where).strip(), master_id)
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None
    return MasterEndpoint(master, _endpoint_from(name, settings))


def _endpoint_from(name: str, settings: Mapping[str, str]) -> Endpoint:
    where = f"{name}: "
    port_text = settings.get("pg.port", str(_DEFAULT_PORT)).strip()
    if not port_text.isdigit():
        raise ConfigError(f"{where}pg.port={port_text!r} is not a port number")
    try:
        return Endpoint(
            host=_required(settings, "pg.host", where).strip(),
            dbname=_required(settings, "pg.dbname", where).strip(),
            port=int(port_text),
            user=settings.get("pg.user", _DEFAULT_USER).strip(),
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None


def _required(settings: Mapping[str, str], key: str, where: str) -> str:
    value = settings.get(key)
    if value is None or not value.strip():
        raise ConfigError(f"{where}no {key}= in its TXT records")
    return value


def _check(pattern: re.Pattern[str], value: object, what: str) -> None:
    if not isinstance(value, str) or not pattern.match(value):
        raise ConfigError(f"{what} {value!r} holds characters a connection string may not")
