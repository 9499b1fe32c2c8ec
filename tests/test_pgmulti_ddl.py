"""The multi-master DDL as text: layout arithmetic, idempotent forms, validation, the doc's DDL.

No database here; tests/test_pgmulti_postgres.py runs the same DDL on the real server.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe.errors import ConfigError
from cellframe.pgmulti import (
    READ_SIDE,
    Column,
    Description,
    Master,
    Table,
    generate_ddl,
    master_ddl,
    read_common_ddl,
    read_ddl,
    read_master_ddl,
)
from cellframe.store.guid import MAX_COUNTER, MAX_SHARD, decode, encode, to_signed
from tests.pg_support import doc_blocks

CUSTOMERS = Table("customers", (("name", "text"), ("order", "integer")))
FIVE = Description(
    tuple(Master(n, i) for n, i in [("a", 1), ("b", 2), ("c", 32767), ("d", 32768), ("e", 65535)]),
    (CUSTOMERS, Table("events", (Column("body", "jsonb"),))),
)


def test_generate_ddl_has_one_script_per_master_and_one_for_the_read_side():
    ddl = generate_ddl(FIVE)
    assert list(ddl) == ["a", "b", "c", "d", "e", READ_SIDE]
    assert ddl["a"] == master_ddl(FIVE, "a")
    assert ddl[READ_SIDE] == read_ddl(FIVE)


@pytest.mark.parametrize("master_id", [0, 1, 32767, 32768, 65535])
def test_guid_function_prefix_is_the_signed_python_layout(master_id):
    description = Description((Master("m", master_id),), (CUSTOMERS,))
    prefix = re.search(r"SELECT (-?\d+) \| nextval", master_ddl(description, "m")).group(1)
    assert int(prefix) == to_signed(encode(master_id, 0))
    assert -(1 << 63) <= int(prefix) < 1 << 63  # fits a bigint, unlike the seed's 1 << 63


@pytest.mark.parametrize("master_id", [0, 32767, 32768, 65535])
def test_guid_range_check_spans_exactly_the_masters_ids(master_id):
    description = Description((Master("m", master_id),), (CUSTOMERS,))
    for script in (master_ddl(description, "m"), read_master_ddl(description, "m")):
        low, high = map(int, re.search(r"BETWEEN (-?\d+) AND (-?\d+)", script).groups())
        assert decode(low) == (master_id, 0)
        assert decode(high) == (master_id, MAX_COUNTER)
        assert high - low == MAX_COUNTER  # one contiguous signed range, in counter order


@settings(deadline=None, max_examples=200)
@given(st.integers(0, MAX_SHARD))
def test_every_master_range_is_contiguous_increasing_and_decodes_to_its_master(master_id):
    master = Master("m", master_id)
    assert master.lowest_guid < master.first_guid < master.last_guid
    assert decode(master.first_guid) == (master_id, 1)
    assert decode(master.last_guid) == (master_id, MAX_COUNTER)
    assert (master.lowest_guid < 0) == (master_id >= 32768)


def test_sequence_stops_at_the_last_counter_instead_of_cycling_into_the_next_master():
    script = master_ddl(FIVE, "a")
    assert f"MINVALUE 1 MAXVALUE {MAX_COUNTER} START 1 NO CYCLE" in script


def test_adding_a_sixth_master_changes_no_existing_ddl_and_only_appends_to_the_read_side():
    six = FIVE.with_master(Master("f", 0))
    before, after = generate_ddl(FIVE), generate_ddl(six)
    for master in FIVE.masters:
        assert after[master.name] == before[master.name]
    assert after[READ_SIDE] == before[READ_SIDE] + "\n" + read_master_ddl(six, "f")
    assert read_common_ddl(six) == read_common_ddl(FIVE)


def test_ddl_is_deterministic():
    assert generate_ddl(FIVE) == generate_ddl(FIVE)


@pytest.mark.parametrize("key", ["a", "e", READ_SIDE])
def test_every_statement_has_an_idempotent_form(key):
    script = generate_ddl(FIVE)[key]
    creates = re.findall(r"^CREATE .*$", script, re.MULTILINE)
    assert creates
    idempotent = re.compile(r"CREATE (OR REPLACE |(SCHEMA|TABLE|INDEX|SEQUENCE) IF NOT EXISTS )")
    assert [line for line in creates if not idempotent.match(line)] == []
    inserts = re.findall(r"^INSERT .*?;$", script, re.MULTILINE | re.DOTALL)
    assert all(insert.endswith("ON CONFLICT DO NOTHING;") for insert in inserts)
    # The only ALTER is the guarded INHERIT inside a DO block.
    assert re.findall(r"^ALTER", script, re.MULTILINE) == []


def test_user_names_are_quoted_so_sql_keywords_work_as_names():
    script = master_ddl(FIVE, "a")
    assert '"order" integer' in script
    assert 'public."customers"' in script
    assert 'public."a_customers"' in read_master_ddl(FIVE, "a")


def test_masters_refuse_updates_and_the_read_side_refuses_writes():
    assert 'BEFORE UPDATE OR DELETE OR TRUNCATE ON public."customers"' in master_ddl(FIVE, "a")
    read = read_ddl(FIVE)
    for table in ("customers", "a_customers", "e_events"):
        assert f'BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON public."{table}"' in read


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Master("A", 1), "not a lowercase identifier"),
        (lambda: Master("a-b", 1), "not a lowercase identifier"),
        (lambda: Master("x" * 64, 1), "longer than 63"),
        (lambda: Master("pg_a", 1), "reserves"),
        (lambda: Master(READ_SIDE, 1), "key of the read side"),
        (lambda: Master("a", 65536), "outside 0..65535"),
        (lambda: Master("a", -1), "outside 0..65535"),
        (lambda: Master("a", True), "not an integer"),
        (lambda: Column("guid", "bigint"), "reserved"),
        (lambda: Column("x", "text); DROP TABLE t; --"), "not a plain SQL type"),
        (lambda: Column("x", "text default now()"), "not a plain SQL type"),
        (lambda: Column("x", "text'"), "not a plain SQL type"),
        (lambda: Table("t", (("a", "text"), ("a", "int"))), "appears twice"),
        (lambda: Table("t", ("a",)), "(name, type) pair"),
        (lambda: Table("t" * 50), "longer than 49"),
        (lambda: Description((Master("a", 1), Master("b", 1)), (CUSTOMERS,)), "master id 1"),
        (lambda: Description((Master("a", 1), Master("a", 2)), (CUSTOMERS,)), "master name a"),
        (lambda: Description((), (CUSTOMERS,)), "at least one master"),
        (
            lambda: Description((Master("a_b", 1), Master("a", 2)), (Table("c"), Table("b_c"))),
            "'a_b_c'",
        ),
        (lambda: Description((Master("a", 1),), (Table("x"), Table("a_x"))), "also the name"),
    ],
)
def test_bad_descriptions_are_refused_with_the_problem_named(build, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build()


def test_from_dict_reads_json_shaped_descriptions():
    data = {
        "masters": [{"name": "a", "id": 1}, {"name": "b", "id": 2}],
        "tables": [{"name": "customers", "columns": {"name": "text", "order": "integer"}}],
    }
    assert Description.from_dict(data) == Description(
        (Master("a", 1), Master("b", 2)), (CUSTOMERS,)
    )


ONE = {"name": "a", "id": 1}


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"masters": [ONE, {"name": "b", "id": "2"}], "tables": []}, "masters[1]"),
        ({"masters": [{"name": "a"}], "tables": []}, "masters[0]"),
        ({"masters": [ONE], "tables": [{"name": "t", "columns": 3}]}, "tables[0]"),
        ({"masters": [ONE], "tables": [{"name": "t", "columns": {"x": "a;b"}}]}, "tables[0]"),
        ({"masters": "a", "tables": []}, "masters"),
        ([], "mapping"),
    ],
)
def test_from_dict_names_the_position_of_a_problem(data, where):
    with pytest.raises(ConfigError, match=re.escape(where)):
        Description.from_dict(data)


def test_unknown_master_is_a_config_error():
    with pytest.raises(ConfigError, match="no master is named 'z'"):
        master_ddl(FIVE, "z")


def _doc_ddl_generators():
    """The description the doc uses, and the generator for each kind of ``ddl=`` block."""
    namespace: dict[str, object] = {}
    description_block = next(b for b in doc_blocks() if b.options.get("role") == "description")
    exec(description_block.text, namespace)  # our own doc's example, not received text
    description = namespace["description"]
    return description, {
        "master": lambda name: master_ddl(description, name),
        "read-common": lambda _: read_common_ddl(description),
        "read-master": lambda name: read_master_ddl(description, name),
    }


def test_every_code_block_of_the_doc_is_checked_or_run():
    blocks = doc_blocks()
    assert len(blocks) >= 10
    unchecked = [b.line for b in blocks if not ({"ddl", "run", "role"} & b.options.keys())]
    assert unchecked == []


def test_the_docs_ddl_blocks_are_exactly_what_cellframe_generates():
    _, generators = _doc_ddl_generators()
    blocks = [b for b in doc_blocks() if "ddl" in b.options]
    assert {b.options["ddl"] for b in blocks} == set(generators)
    for block in blocks:
        expected = generators[block.options["ddl"]](block.options.get("name"))
        assert block.text == expected, f"docs block at line {block.line} is stale"
