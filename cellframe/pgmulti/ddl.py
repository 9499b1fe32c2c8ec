"""The DDL of every database in a multi-master layout, as pure functions returning SQL text.

Each master gets a ``cellframe.guid()`` function (its id in the top 16 bits, a sequence in the
low 48) and insert-only tables; the read side gets one parent table per table and one child
``<master>_<table>`` per master that inherits from it, so ``SELECT ... FROM <table>`` spans
every master. Every statement is idempotent (``IF NOT EXISTS``, ``CREATE OR REPLACE``, guarded
``DO`` blocks), and a master's text depends only on that master and the tables, so adding a
master adds text without changing any other.

Ids are stored as ``bigint``: the signed view of ``cellframe.store.guid``'s unsigned layout, so
masters 32768..65535 issue negative ids (see ``cellframe.store.guid``). A master's ids are one
contiguous, increasing signed range, which is what the ``guid_range`` checks state.
"""

from __future__ import annotations

from ..store.guid import COUNTER_BITS, MAX_COUNTER, MAX_SHARD
from .schema import FIRST_COUNTER, READ_SIDE, Description, Master, Table, child_name

__all__ = [
    "MASTER_REFUSAL",
    "READ_REFUSAL",
    "generate_ddl",
    "master_ddl",
    "read_common_ddl",
    "read_ddl",
    "read_master_ddl",
]

#: Why a master refuses UPDATE, DELETE and TRUNCATE: the append-only design.
MASTER_REFUSAL = "masters are insert-only: supersede a row by inserting a newer one"
#: Why the read side refuses writes: only the replicator (as session_replication_role=replica)
#: may write there, or the read side would diverge from the masters.
READ_REFUSAL = "the read side is for selects; only the cellframe replicator writes to it"


def generate_ddl(description: Description) -> dict[str, str]:
    """The DDL of every database: one entry per master name, and one for ``READ_SIDE``."""
    ddl = {m.name: master_ddl(description, m.name) for m in description.masters}
    ddl[READ_SIDE] = read_ddl(description)
    return ddl


def master_ddl(description: Description, name: str) -> str:
    """The DDL of the write master called ``name``."""
    master = description.master(name)
    parts = [
        _master_header(master),
        "CREATE SCHEMA IF NOT EXISTS cellframe;",
        _identity(master),
        _guid_function(master),
        _decode_functions(),
        _refusal_function(),
        *(_master_table(master, table) for table in description.tables),
    ]
    return "\n\n".join(parts) + "\n"


def read_ddl(description: Description) -> str:
    """The whole read side: the common part, then one block per master."""
    blocks = [read_master_ddl(description, m.name) for m in description.masters]
    return "\n".join([read_common_ddl(description), *blocks])


def read_common_ddl(description: Description) -> str:
    """The read side's part that depends on the tables only: schema, functions, parents."""
    parts = [
        "-- cellframe multi-master: the read side, common part (one parent per table).",
        "CREATE SCHEMA IF NOT EXISTS cellframe;",
        _decode_functions(),
        _refusal_function(),
        _replication_state(),
        *(_parent_table(table) for table in description.tables),
    ]
    return "\n\n".join(parts) + "\n"


def read_master_ddl(description: Description, name: str) -> str:
    """The read side's block for one master: its children, attached to the parents."""
    master = description.master(name)
    parts = [
        f"-- master {master.name} (id {master.id}): its rows of every table.",
        *(_child_table(master, table) for table in description.tables),
    ]
    return "\n\n".join(parts) + "\n"


def _master_header(master: Master) -> str:
    return (
        f"-- cellframe multi-master: write master {master.name} (id {master.id}).\n"
        f"-- Its guids run from {master.first_guid} to {master.last_guid}:\n"
        f"-- id {master.id} in the top {64 - COUNTER_BITS} bits,"
        f" a counter {FIRST_COUNTER}..{MAX_COUNTER} in the low {COUNTER_BITS}."
    )


def _identity(master: Master) -> str:
    """Record which master this database is, and refuse to become another one."""
    name = _literal(master.name)
    return f"""CREATE TABLE IF NOT EXISTS cellframe.master (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    name text NOT NULL,
    id integer NOT NULL
);
INSERT INTO cellframe.master (name, id) VALUES ({name}, {master.id}) ON CONFLICT DO NOTHING;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM cellframe.master WHERE name = {name} AND id = {master.id}) THEN
        RAISE EXCEPTION 'this database is master %, not {master.name} (id {master.id})',
            (SELECT format('%s (id %s)', name, id) FROM cellframe.master)
            USING ERRCODE = 'CF001';
    END IF;
END
$$;"""


def _guid_function(master: Master) -> str:
    """The sequence counts; ``guid()`` puts the master's id above it.

    NO CYCLE and MAXVALUE 2**48-1 make exhaustion an error in ``nextval`` instead of a carry
    into the next master's range; the prefix is computed in Python by ``cellframe.store.guid`` so the
    SQL and Python layouts cannot disagree.
    """
    return f"""CREATE SEQUENCE IF NOT EXISTS cellframe.guid_counter
    AS bigint MINVALUE {FIRST_COUNTER} MAXVALUE {MAX_COUNTER} START {FIRST_COUNTER} NO CYCLE;

CREATE OR REPLACE FUNCTION cellframe.guid() RETURNS bigint
    LANGUAGE sql VOLATILE
    AS $$ SELECT {master.lowest_guid} | nextval('cellframe.guid_counter') $$;"""


def _decode_functions() -> str:
    """SQL twins of ``cellframe.store.guid.decode``; ``&`` undoes the sign of negative ids."""
    return f"""CREATE OR REPLACE FUNCTION cellframe.guid_master(guid bigint) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT ((guid >> {COUNTER_BITS}) & {MAX_SHARD})::integer $$;

CREATE OR REPLACE FUNCTION cellframe.guid_counter(guid bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT guid & {MAX_COUNTER} $$;"""


def _refusal_function() -> str:
    return """CREATE OR REPLACE FUNCTION cellframe.refuse_change() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION '% on %.% refused: %', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0]
        USING ERRCODE = 'CF002';
END
$$;"""


def _master_table(master: Master, table: Table) -> str:
    """An insert-only table whose guids come from ``guid()`` and stay in this master's range.

    ``cellframe_xid`` records the inserting transaction, which is what lets the replicator
    take commit-ordered deltas (see ``replicate``); the index keeps each delta a range scan.
    """
    name = _table(table.name)
    create = _create_table(
        name,
        [
            "guid bigint NOT NULL DEFAULT cellframe.guid() PRIMARY KEY",
            *_columns(table),
            "cellframe_xid xid8 NOT NULL DEFAULT pg_current_xact_id()",
            _guid_range(master),
        ],
    )
    return f"""{create}
CREATE INDEX IF NOT EXISTS {_ident(table.name + "_cellframe_xid")} ON {name} (cellframe_xid);
{_trigger("insert_only", "UPDATE OR DELETE OR TRUNCATE", name, MASTER_REFUSAL)}"""


def _replication_state() -> str:
    """Where the replicator records, per master and table, how far the read side has got."""
    return """CREATE TABLE IF NOT EXISTS cellframe.replication_state (
    master text NOT NULL,
    table_name text NOT NULL,
    done pg_snapshot NOT NULL DEFAULT '1:1:',
    target pg_snapshot,
    after_guid bigint,
    rows_copied bigint NOT NULL DEFAULT 0,
    last_guid bigint,
    updated_at timestamptz,
    PRIMARY KEY (master, table_name)
);"""


def _parent_table(table: Table) -> str:
    name = _table(table.name)
    create = _create_table(name, ["guid bigint NOT NULL", *_columns(table)])
    return f"""{create}
{_trigger("read_only", "INSERT OR UPDATE OR DELETE OR TRUNCATE", name, READ_REFUSAL)}"""


def _child_table(master: Master, table: Table) -> str:
    """``<master>_<table>``, inheriting from the parent; guarded so re-applying changes nothing."""
    child, parent = _table(child_name(master, table)), _table(table.name)
    create = _create_table(
        child, ["guid bigint NOT NULL PRIMARY KEY", *_columns(table), _guid_range(master)]
    )
    return f"""{create}
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_inherits
                   WHERE inhrelid = {_literal(child)}::regclass
                     AND inhparent = {_literal(parent)}::regclass) THEN
        ALTER TABLE {child} INHERIT {parent};
    END IF;
END
$$;
{_trigger("read_only", "INSERT OR UPDATE OR DELETE OR TRUNCATE", child, READ_REFUSAL)}
INSERT INTO cellframe.replication_state (master, table_name)
    VALUES ({_literal(master.name)}, {_literal(table.name)}) ON CONFLICT DO NOTHING;"""


def _trigger(name: str, events: str, table: str, reason: str) -> str:
    return (
        f"CREATE OR REPLACE TRIGGER {name}\n"
        f"    BEFORE {events} ON {table}\n"
        f"    FOR EACH STATEMENT EXECUTE FUNCTION cellframe.refuse_change({_literal(reason)});"
    )


def _guid_range(master: Master) -> str:
    return f"CONSTRAINT guid_range CHECK (guid BETWEEN {master.lowest_guid} AND {master.last_guid})"


def _create_table(name: str, lines: list[str]) -> str:
    body = ",\n    ".join(lines)
    return f"CREATE TABLE IF NOT EXISTS {name} (\n    {body}\n);"


def _columns(table: Table) -> list[str]:
    return [f"{_ident(c.name)} {c.type}" for c in table.columns]


def _table(name: str) -> str:
    return f"public.{_ident(name)}"


def _ident(name: str) -> str:
    """Quote a user-chosen name, so SQL keywords (``order``, ``user``) are usable as names."""
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
