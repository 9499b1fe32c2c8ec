"""The multi-master scheme on the real PostgreSQL at 127.0.0.1:5432.

Each test gets its own throwaway databases (one per master, one for the read side); nothing
here copies rows to the read side except cellframe's replicator.
"""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from cellframe.errors import ConfigError, GuidExhaustedError, StoreError
from cellframe.pgmulti import (
    READ_SIDE,
    Description,
    Master,
    ReplicationLoop,
    Replicator,
    Table,
    apply_ddl,
    apply_description,
    insert_rows,
    master_ddl,
)
from cellframe.store.guid import MAX_COUNTER, decode, encode, to_signed
from cellframe.testing import wait_for
from tests.pg_support import (
    Cluster,
    catalog_snapshot,
    doc_blocks,
    open_cluster,
    query,
    require_postgres,
    reset_cluster,
    throwaway_databases,
)

pytestmark = pytest.mark.postgres

CUSTOMERS = Table(
    "customers",
    (
        ("name", "text"),
        ("amount", "numeric(12,2)"),
        ("tags", "text[]"),
        ("doc", "jsonb"),
        ("at", "timestamp with time zone"),
    ),
)
EVENTS = Table("events", (("body", "text"),))
TICKS = Table("ticks")  # no user columns: a row is just its guid
# The largest master id, both sides of the sign boundary, and two small ones.
FIVE = Description(
    tuple(Master(n, i) for n, i in [("a", 1), ("b", 2), ("c", 32767), ("d", 32768), ("e", 65535)]),
    (CUSTOMERS, EVENTS, TICKS),
)


@pytest.fixture(scope="module")
def shared_cluster():
    require_postgres()
    with open_cluster(FIVE) as opened:
        yield opened


@pytest.fixture
def cluster(shared_cluster):
    """The module's five masters and read side, emptied for this test."""
    reset_cluster(shared_cluster)
    return shared_cluster


@pytest.fixture
def replicator(cluster):
    with Replicator(cluster.description, cluster.read, cluster.masters()) as opened:
        yield opened


def read_rows(cluster: Cluster, table: str = "customers") -> list[tuple[int, str, str]]:
    """Every row of the read side's parent ``table``: guid, first column, child it sits in."""
    column = "name" if table == "customers" else "body"
    return query(cluster.read, f"SELECT guid, {column}, tableoid::regclass::text FROM {table}")


def insert_names(cluster: Cluster, master: str, names: list[str]) -> dict[int, tuple[str, str]]:
    """Insert one customer per name on ``master``; return guid -> (master, name)."""
    with psycopg.connect(cluster.dsns[master], autocommit=True) as conn:
        guids = insert_rows(conn, CUSTOMERS, [{"name": n} for n in names])
    return {guid: (master, name) for guid, name in zip(guids, names, strict=True)}


def assert_exactly_once(cluster: Cluster, inserted: dict[int, tuple[str, str]]) -> None:
    """The read side holds each inserted row once, in its master's child, decoding to it."""
    rows = read_rows(cluster)
    assert len(rows) == len(inserted)
    assert {guid: name for guid, name, _ in rows} == {g: name for g, (_, name) in inserted.items()}
    for guid, _, child in rows:
        master = cluster.description.master(inserted[guid][0])
        assert decode(guid).shard == master.id
        assert child == f"{master.name}_customers"


def test_concurrent_inserts_on_five_masters_reach_the_read_side_exactly_once(cluster, replicator):
    inserted: dict[int, tuple[str, str]] = {}
    events: set[int] = set()
    lock = threading.Lock()

    def write(master: Master, worker: int) -> None:
        with psycopg.connect(cluster.dsns[master.name], autocommit=True) as conn:
            for i in range(39):
                names = [f"{master.name}-{worker}-{i}-{k}" for k in range(1 + i % 3)]
                with conn.transaction():
                    guids = insert_rows(conn, CUSTOMERS, [{"name": n} for n in names])
                    event = insert_rows(conn, EVENTS, [{"body": names[0]}])
                with lock:
                    inserted.update(zip(guids, ((master.name, n) for n in names), strict=True))
                    events.update(event)

    threads = [
        threading.Thread(target=write, args=(master, worker))
        for master in FIVE.masters
        for worker in range(3)
    ]
    with ReplicationLoop(replicator, interval=0.01) as loop:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wait_for(lambda: len(read_rows(cluster)) >= len(inserted), 20, what="every row copied",
                 interval=0.02)
        wait_for(lambda: len(read_rows(cluster, "events")) >= len(events), 20,
                 what="every event copied", interval=0.02)
    assert len(inserted) == 5 * 3 * 78  # 39 transactions of 1, 2 or 3 rows per worker
    assert loop.failures == 0
    assert_exactly_once(cluster, inserted)
    assert {guid for guid, _, _ in read_rows(cluster, "events")} == events
    # guids of both tables come from one counter per master: unique across tables too
    assert not events & set(inserted)
    decoded = query(cluster.read, "SELECT count(DISTINCT guid), count(*) FROM customers")
    assert decoded == [(len(inserted), len(inserted))]


def test_a_smaller_guid_that_commits_after_a_larger_one_is_still_replicated(cluster, replicator):
    dsn = cluster.dsns["a"]
    slow, fast = psycopg.connect(dsn, autocommit=True), psycopg.connect(dsn, autocommit=True)
    with slow, fast:
        with slow.transaction():
            [smaller] = insert_rows(slow, CUSTOMERS, [{"name": "slow"}])
            with fast.transaction():
                [larger] = insert_rows(fast, CUSTOMERS, [{"name": "fast"}])
            assert smaller < larger
            assert replicator.sync_master("a") == 1
            assert {g for g, _, _ in read_rows(cluster)} == {larger}
        # "everything after the last guid seen" (larger) would now miss the slow row for good
        assert query(dsn, "SELECT count(*) FROM customers WHERE guid > %s", (larger,)) == [(0,)]
        assert replicator.sync_master("a") == 1
    assert sorted(g for g, _, _ in read_rows(cluster)) == [smaller, larger]


def test_a_link_that_was_down_catches_up_with_nothing_missing_or_doubled(cluster):
    app = f"cf-test-{uuid.uuid4().hex[:8]}"
    replicator = Replicator(
        FIVE, cluster.read, cluster.masters(), batch_rows=7, application_name=app
    )
    inserted: dict[int, tuple[str, str]] = {}
    loop = ReplicationLoop(replicator, interval=0.01)
    with replicator, loop:
        for master in FIVE.masters:
            names = [f"{master.name}-early-{i}" for i in range(10)]
            inserted.update(insert_names(cluster, master.name, names))
        wait_for(lambda: len(read_rows(cluster)) == len(inserted), 30, what="every row copied",
                 interval=0.02)
        loop.stop()  # the link goes down

        for master in FIVE.masters:
            for batch in range(3):
                names = [f"{master.name}-late-{batch}-{i}" for i in range(10)]
                inserted.update(insert_names(cluster, master.name, names))
        assert len(read_rows(cluster)) == 50  # nobody copies while the link is down
        # Cut the replicator's connections too: the next round must fail, then reconnect.
        query(
            require_postgres(),
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app,),
        )

        loop.start()
        wait_for(lambda: len(read_rows(cluster)) >= len(inserted), 20,
                 what="the replicator to catch up", interval=0.02)
    assert loop.failures >= 1
    assert_exactly_once(cluster, inserted)
    copied = query(cluster.read, "SELECT sum(rows_copied) FROM cellframe.replication_state")
    assert copied == [(len(inserted),)]


def test_applying_the_ddl_twice_changes_nothing(cluster, replicator):
    insert_names(cluster, "a", ["x", "y"])
    insert_names(cluster, "e", ["z"])
    replicator.sync_all()
    before = {key: catalog_snapshot(dsn) for key, dsn in cluster.dsns.items()}
    apply_description(FIVE, cluster.dsns)
    after = {key: catalog_snapshot(dsn) for key, dsn in cluster.dsns.items()}
    assert after == before
    assert before["a"]["sequences"] == [("cellframe", "guid_counter", "2", str(MAX_COUNTER))]
    assert len(before[READ_SIDE]["inherits"]) == 15  # five masters x three tables


def test_a_sixth_master_extends_the_read_side_without_touching_the_other_five(cluster):
    with throwaway_databases(["f", READ_SIDE]) as extra:
        five = Cluster(FIVE, {**cluster.masters(), READ_SIDE: extra[READ_SIDE]})
        apply_description(FIVE, five.dsns)
        inserted = insert_names(five, "a", ["from a"])
        with Replicator(FIVE, five.read, five.masters()) as replicator:
            replicator.sync_all()
        before = {key: catalog_snapshot(dsn) for key, dsn in five.dsns.items()}

        six = Cluster(FIVE.with_master(Master("f", 0)), {**five.dsns, "f": extra["f"]})
        apply_description(six.description, six.dsns)

        for master in FIVE.masters:
            assert catalog_snapshot(six.dsns[master.name]) == before[master.name]
        read_after = catalog_snapshot(six.read)
        for kind, entries in before[READ_SIDE].items():
            assert set(entries) <= set(read_after[kind]), kind  # same oids, files, definitions
        assert len(read_after["inherits"]) == len(before[READ_SIDE]["inherits"]) + 3 == 18

        for master in six.description.masters[1:]:
            inserted.update(insert_names(six, master.name, [master.name]))
        with Replicator(six.description, six.read, six.masters()) as replicator:
            assert replicator.sync_all().rows == 5
        assert_exactly_once(six, inserted)
        assert [g for g, (m, _) in inserted.items() if m == "f"] == [to_signed(encode(0, 1))]
        spanned = query(six.read, "SELECT DISTINCT cellframe.guid_master(guid) FROM customers")
        assert sorted(m for (m,) in spanned) == [0, 1, 2, 32767, 32768, 65535]


@pytest.mark.parametrize("name", ["a", "c", "d", "e"])
def test_first_and_last_guid_of_a_master_and_exhaustion_is_a_clear_error(cluster, name):
    """Masters 1, 32767 (last positive), 32768 (first negative) and 65535 (the largest)."""
    master = FIVE.master(name)
    with psycopg.connect(cluster.dsns[name], autocommit=True) as conn:
        [first] = insert_rows(conn, CUSTOMERS, [{"name": "first"}])
        conn.execute("SELECT setval('cellframe.guid_counter', %s)", (MAX_COUNTER - 1,))
        [last] = insert_rows(conn, CUSTOMERS, [{"name": "last"}])
        with pytest.raises(GuidExhaustedError, match="reached maximum value"):
            insert_rows(conn, CUSTOMERS, [{"name": "beyond"}])
        decoded = conn.execute(
            "SELECT cellframe.guid_master(guid), cellframe.guid_counter(guid) FROM customers"
            " ORDER BY guid"
        ).fetchall()
    assert first == master.first_guid == to_signed(encode(master.id, 1))
    assert last == master.last_guid == to_signed(encode(master.id, MAX_COUNTER))
    assert decode(first) == (master.id, 1)
    assert decode(last) == (master.id, MAX_COUNTER)
    assert decoded == [(master.id, 1), (master.id, MAX_COUNTER)]  # nothing spilled over
    with Replicator(FIVE, cluster.read, cluster.masters()) as replicator:
        assert replicator.sync_master(name) == 2
    rows = query(cluster.read, "SELECT guid, tableoid::regclass::text FROM customers")
    assert sorted(rows) == sorted([(first, f"{name}_customers"), (last, f"{name}_customers")])


def test_a_master_refuses_a_guid_from_another_masters_range(cluster):
    other = FIVE.master("d").first_guid
    with psycopg.connect(cluster.dsns["a"], autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="guid_range"):
            conn.execute("INSERT INTO customers (guid, name) VALUES (%s, 'x')", (other,))


@pytest.mark.parametrize(
    "statement",
    ["UPDATE customers SET name = 'changed'", "DELETE FROM customers", "TRUNCATE customers"],
)
def test_masters_are_insert_only(cluster, statement):
    insert_names(cluster, "b", ["kept"])
    with psycopg.connect(cluster.dsns["b"], autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(statement)
        assert raised.value.sqlstate == "CF002"
        assert "masters are insert-only" in raised.value.diag.message_primary
        assert conn.execute("SELECT name FROM customers").fetchall() == [("kept",)]


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO customers (guid, name) VALUES (1, 'x')",
        "INSERT INTO a_customers (guid, name) VALUES (281474976710657, 'x')",
        "UPDATE customers SET name = 'changed'",
        "DELETE FROM a_customers",
        "TRUNCATE customers",
    ],
)
def test_the_read_side_refuses_writes_except_from_the_replicator(cluster, replicator, statement):
    insert_names(cluster, "a", ["replicated"])
    assert replicator.sync_master("a") == 1  # the replicator may write
    with psycopg.connect(cluster.read, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(statement)
        assert raised.value.sqlstate == "CF002"
        assert "the read side is for selects" in raised.value.diag.message_primary
    assert [name for _, name, _ in read_rows(cluster)] == ["replicated"]


def test_a_database_of_one_master_refuses_the_ddl_of_another(cluster):
    before = catalog_snapshot(cluster.dsns["a"])
    with pytest.raises(ConfigError, match=r"this database is master a \(id 1\), not b \(id 2\)"):
        apply_ddl(cluster.dsns["a"], master_ddl(FIVE, "b"))
    assert catalog_snapshot(cluster.dsns["a"]) == before  # one transaction: nothing applied


def test_applying_to_a_missing_database_is_a_store_error_naming_it(cluster):
    missing = make_conninfo(cluster.read, dbname="cf_no_such_db")
    with pytest.raises(StoreError, match="database cf_no_such_db on 127.0.0.1:5432"):
        apply_ddl(missing, master_ddl(FIVE, "a"))


def test_the_replicator_refuses_a_master_database_with_another_identity(cluster):
    insert_names(cluster, "b", ["b's row"])
    swapped = {**cluster.masters(), "a": cluster.dsns["b"]}
    with Replicator(FIVE, cluster.read, swapped) as replicator:
        report = replicator.sync_all()
    assert isinstance(report.errors["a"], ConfigError)
    assert "not a (id 1)" in str(report.errors["a"])
    assert report.copied["b"] == 1
    assert [name for _, name, _ in read_rows(cluster)] == ["b's row"]


def test_an_unreachable_master_is_a_store_error_and_stops_no_other(cluster):
    insert_names(cluster, "c", ["c's row"])
    broken = {**cluster.masters(), "a": make_conninfo(cluster.read, dbname="cf_no_such_db")}
    with Replicator(FIVE, cluster.read, broken) as replicator:
        report = replicator.sync_all()
    assert isinstance(report.errors["a"], StoreError)
    assert report.copied["c"] == 1


def test_column_values_arrive_exactly_as_the_master_stored_them(cluster, replicator):
    awkward = [
        {
            "name": "tab\tnewline\nbackslash\\ quote' \"",
            "amount": "12345.67",
            "tags": ["a", "b c", None, "{d}"],
            "doc": '{"k": [1, 2.5, null]}',
            "at": "2024-02-29 23:59:59.123456+05:30",
        },
        {"name": None, "amount": None, "tags": None, "doc": None, "at": None},
        {"name": "", "amount": "-0.01", "tags": [], "doc": '"just a string"', "at": "infinity"},
    ]
    with psycopg.connect(cluster.dsns["d"], autocommit=True) as conn:
        insert_rows(conn, CUSTOMERS, awkward)
    replicator.sync_all()
    columns = "guid, name, amount::text, tags::text, doc::text, at::text"
    on_master = query(cluster.dsns["d"], f"SELECT {columns} FROM customers ORDER BY guid")
    on_read = query(cluster.read, f"SELECT {columns} FROM customers ORDER BY guid")
    assert len(on_master) == 3
    assert on_read == on_master


def test_a_table_without_user_columns_replicates_its_guids(cluster, replicator):
    with psycopg.connect(cluster.dsns["e"], autocommit=True) as conn:
        guids = insert_rows(conn, TICKS, [{}, {}, {}])
    assert [decode(g) for g in guids] == [(65535, 1), (65535, 2), (65535, 3)]
    replicator.sync_all()
    assert query(cluster.read, "SELECT guid FROM ticks ORDER BY guid") == [(g,) for g in guids]


def test_the_docs_walkthrough_runs_as_written():
    require_postgres()
    blocks = doc_blocks()
    namespace: dict[str, object] = {}
    [described] = [b for b in blocks if b.options.get("role") == "description"]
    exec(described.text, namespace)  # our own doc's example, not received text
    description = namespace["description"]
    keys = [m.name for m in description.masters] + ["f", READ_SIDE]
    runs = [b for b in blocks if "run" in b.options or b.options.get("role") == "run"]
    with throwaway_databases(keys) as dsns:
        namespace["dsns"] = dsns
        for block in runs:
            try:
                _run_doc_block(block, namespace, dsns)
            except Exception as exc:
                raise AssertionError(f"docs block at line {block.line} failed: {exc}") from exc


def _run_doc_block(block, namespace, dsns):
    if block.language == "python":
        exec(block.text, namespace)
        return
    expected = block.options.get("expect")
    with psycopg.connect(dsns[block.options["run"]], autocommit=True) as conn:
        if expected is None:
            conn.execute(block.text)
            return
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(block.text)
        assert raised.value.sqlstate == expected
