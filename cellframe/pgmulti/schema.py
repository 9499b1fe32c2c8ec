"""The one description of a PostgreSQL multi-master layout: its masters and its tables.

Everything else (the DDL of every database, the replicator) is derived from a ``Description``,
so it is validated here, once, with errors that name the offending field.

Names are restricted to lowercase SQL identifiers (``[a-z_][a-z0-9_]*``, at most 63 bytes) so
that the generated DDL never needs case folding rules, and column types to a type name with
optional modifiers (``numeric(12, 2)``, ``timestamp(3) with time zone``, ``text[]``): no quotes,
semicolons or expressions can reach the DDL through the description.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..store.guid import MAX_COUNTER, MAX_SHARD, encode, to_signed

__all__ = [
    "FIRST_COUNTER",
    "READ_SIDE",
    "RESERVED_COLUMNS",
    "Column",
    "Description",
    "Master",
    "Table",
    "child_name",
]

#: The key of the read side in ``generate_ddl``'s result; no master may be named so.
READ_SIDE = "read"
#: Columns cellframe adds to every table: the guid, and (on masters) the inserting transaction.
RESERVED_COLUMNS = frozenset({"guid", "cellframe_xid"})
#: Counters start at 1, PostgreSQL's sequence default, so counter 0 is never issued and
#: guid 0 (master 0, counter 0) can never be mistaken for a real row.
FIRST_COUNTER = 1

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*\Z")
_MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer names silently
# A master table also gets the index "<table>_cellframe_xid", which must fit in 63 bytes too.
_MAX_TABLE_BYTES = _MAX_IDENTIFIER_BYTES - len("_cellframe_xid")
_TYPE = re.compile(
    r"(?:double precision|character varying|bit varying|[a-z_][a-z0-9_]*)"
    r"(?:\(\d+(?:, ?\d+)?\))?(?: with(?:out)? time zone)?(?:\[\])*\Z"
)


def _check_identifier(value: object, where: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise ConfigError(f"{where}: {value!r} is not a lowercase identifier ([a-z_][a-z0-9_]*)")
    if len(value) > _MAX_IDENTIFIER_BYTES:
        raise ConfigError(f"{where}: {value!r} is longer than {_MAX_IDENTIFIER_BYTES} characters")
    if value.startswith("pg_"):
        raise ConfigError(f"{where}: {value!r} starts with pg_, which PostgreSQL reserves")
    return value


@dataclass(frozen=True)
class Column:
    """One user column of a table: its name and its SQL type."""

    name: str
    type: str

    def __post_init__(self) -> None:
        _check_identifier(self.name, "column name")
        if self.name in RESERVED_COLUMNS:
            raise ConfigError(f"column name {self.name!r} is reserved for cellframe")
        if not isinstance(self.type, str) or not _TYPE.match(self.type):
            raise ConfigError(f"column {self.name!r}: {self.type!r} is not a plain SQL type name")


@dataclass(frozen=True)
class Table:
    """An append-only table that every master holds and the read side unites."""

    name: str
    columns: tuple[Column, ...] = ()

    def __post_init__(self) -> None:
        _check_identifier(self.name, "table name")
        if len(self.name) > _MAX_TABLE_BYTES:
            raise ConfigError(f"table name {self.name!r} is longer than {_MAX_TABLE_BYTES} bytes")
        columns = tuple(_column(c, f"table {self.name!r}") for c in self.columns)
        names = [c.name for c in columns]
        for name in names:
            if names.count(name) > 1:
                raise ConfigError(f"table {self.name!r}: column {name!r} appears twice")
        object.__setattr__(self, "columns", columns)


def _column(value: Column | Sequence[str], where: str) -> Column:
    if isinstance(value, Column):
        return value
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        return Column(value[0], value[1])
    raise ConfigError(f"{where}: a column is a Column or a (name, type) pair, got {value!r}")


@dataclass(frozen=True)
class Master:
    """A write master: its name (used in read-side table names) and its 16-bit id."""

    name: str
    id: int

    def __post_init__(self) -> None:
        _check_identifier(self.name, "master name")
        if self.name == READ_SIDE:
            raise ConfigError(f"master name {READ_SIDE!r} is the key of the read side")
        if isinstance(self.id, bool) or not isinstance(self.id, int):
            raise ConfigError(f"master {self.name!r}: id {self.id!r} is not an integer")
        if not 0 <= self.id <= MAX_SHARD:
            raise ConfigError(f"master {self.name!r}: id {self.id} is outside 0..{MAX_SHARD}")

    @property
    def lowest_guid(self) -> int:
        """The smallest value (signed, as ``bigint`` stores it) in this master's range."""
        return to_signed(encode(self.id, 0))

    @property
    def first_guid(self) -> int:
        """The first guid this master issues (signed)."""
        return to_signed(encode(self.id, FIRST_COUNTER))

    @property
    def last_guid(self) -> int:
        """The last guid this master can issue before its counter is exhausted (signed)."""
        return to_signed(encode(self.id, MAX_COUNTER))


@dataclass(frozen=True)
class Description:
    """Masters and tables: the single source the DDL and the replicator are derived from."""

    masters: tuple[Master, ...]
    tables: tuple[Table, ...]
    _by_name: dict[str, Master] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        masters, tables = tuple(self.masters), tuple(self.tables)
        if not masters or not tables:
            raise ConfigError("a description needs at least one master and one table")
        _unique((m.name for m in masters), "master name")
        _unique((str(m.id) for m in masters), "master id")
        _unique((t.name for t in tables), "table name")
        _check_read_side_names(masters, tables)
        object.__setattr__(self, "masters", masters)
        object.__setattr__(self, "tables", tables)
        object.__setattr__(self, "_by_name", {m.name: m for m in masters})

    def master(self, name: str) -> Master:
        """The master called ``name``."""
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(f"no master is named {name!r}") from None

    def with_master(self, master: Master) -> Description:
        """This description with ``master`` added after the existing ones."""
        return Description((*self.masters, master), self.tables)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Description:
        """Read a description from JSON-shaped data, naming the position of any problem.

        ``{"masters": [{"name": "a", "id": 1}], "tables": [{"name": "customers",
        "columns": {"name": "text"}}]}``; ``columns`` may also be a list of [name, type] pairs.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a description is a mapping, got {type(data).__name__}")
        masters = [_master_from(m, f"masters[{i}]") for i, m in enumerate(_list(data, "masters"))]
        tables = [_table_from(t, f"tables[{i}]") for i, t in enumerate(_list(data, "tables"))]
        return cls(tuple(masters), tuple(tables))


def child_name(master: Master, table: Table) -> str:
    """The read-side table that holds ``master``'s rows of ``table``: ``<master>_<table>``."""
    return f"{master.name}_{table.name}"


def _unique(names: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{what} {name} appears twice")
        seen.add(name)


def _check_read_side_names(masters: Sequence[Master], tables: Sequence[Table]) -> None:
    """Every ``<master>_<table>`` must be a distinct identifier that is no parent's name."""
    taken = {t.name: f"table {t.name!r}" for t in tables}
    for master in masters:
        for table in tables:
            name = child_name(master, table)
            where = f"read-side table of master {master.name!r}, table {table.name!r}"
            _check_identifier(name, where)
            if name in taken:
                raise ConfigError(f"{where}: {name!r} is also the name of {taken[name]}")
            taken[name] = where


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
    return value


def _master_from(data: Any, where: str) -> Master:
    if not isinstance(data, Mapping) or set(data) != {"name", "id"}:
        raise ConfigError(f"{where}: a master is {{'name': ..., 'id': ...}}, got {data!r}")
    try:
        return Master(data["name"], data["id"])
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _table_from(data: Any, where: str) -> Table:
    if not isinstance(data, Mapping) or not set(data) <= {"name", "columns"}:
        raise ConfigError(f"{where}: a table is {{'name': ..., 'columns': ...}}, got {data!r}")
    columns = data.get("columns", [])
    if isinstance(columns, Mapping):
        columns = list(columns.items())
    if not isinstance(columns, list):
        raise ConfigError(f"{where}.columns: expected a mapping or a list of [name, type] pairs")
    try:
        return Table(data.get("name"), tuple(columns))  # type: ignore[arg-type]
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
