"""pgbouncer in front of the masters, without a server: the layout read from DNS, the generated
configuration, and where the application helper sends each statement."""

from __future__ import annotations

import pytest

from cellframe.config.resolvers import ZoneFileResolver
from cellframe.errors import ConfigError
from cellframe.pgmulti import (
    BouncerSettings,
    Endpoint,
    Master,
    MasterEndpoint,
    PgLayout,
    Router,
    bouncer_ini,
    statement_kind,
)

ZONE = """$ORIGIN pg.test.
$TTL 5
@        IN SOA ns.pg.test. hostmaster.pg.test. ( 1 60 30 600 5 )
         IN NS  ns
ns       IN A   127.0.0.1
_cluster IN TXT "web=1" "pg.masters=pg-a pg-b,pg-c" "pg.read=pg-read"
pg-a     IN TXT "pg.master=a" "pg.id=1" "pg.host=10.0.0.11" "pg.dbname=app"
pg-b     IN TXT "pg.master=b" "pg.id=2" "pg.host=10.0.0.12" "pg.dbname=app" "pg.port=5432"
pg-c     IN TXT "pg.master=c" "pg.id=40000" "pg.host=10.0.0.13" "pg.dbname=app" "role=web"
pg-read  IN TXT "pg.host=10.0.0.20" "pg.port=6543" "pg.dbname=app_read" "pg.user=reader"
"""


def zone_layout(tmp_path, text: str = ZONE) -> PgLayout:
    path = tmp_path / "pg.zone"
    path.write_text(text)
    with ZoneFileResolver(path) as resolver:
        return PgLayout.from_dns(resolver)


def test_the_layout_comes_from_dns_masters_in_the_order_listed(tmp_path) -> None:
    layout = zone_layout(tmp_path)
    assert layout.names() == ["a", "b", "c"]
    assert layout.master("c").master == Master("c", 40000)
    assert layout.master("a").endpoint == Endpoint("10.0.0.11", "app", 5432, "postgres")
    assert layout.read == Endpoint("10.0.0.20", "app_read", 6543, "reader")
    assert layout.ttl == 5


@pytest.mark.parametrize(("record", "complaint"), [
    ('pg-b     IN TXT "pg.master=b" "pg.host=10.0.0.12" "pg.dbname=app"', "pg-b: no pg.id="),
    ('pg-b     IN TXT "pg.master=b" "pg.id=two" "pg.host=10.0.0.12" "pg.dbname=app"',
     "pg-b: pg.id='two' is not an integer"),
    ('pg-b     IN TXT "pg.master=B-2" "pg.id=2" "pg.host=10.0.0.12" "pg.dbname=app"',
     "pg-b: master name: 'B-2' is not a lowercase identifier"),
    ('pg-b     IN TXT "pg.master=b" "pg.id=2" "pg.host=10.0.0.12 port=1" "pg.dbname=app"',
     "pg-b: host '10.0.0.12 port=1' holds characters"),
    ('pg-b     IN TXT "pg.master=b" "pg.id=2" "pg.host=h" "pg.dbname=app\\010[pgbouncer]"',
     "pg-b: dbname"),
    ('pg-b     IN TXT "pg.master=b" "pg.id=1" "pg.host=10.0.0.12" "pg.dbname=app"',
     "master id 1 appears twice"),
])
def test_a_bad_master_record_is_refused_naming_the_record_and_key(tmp_path, record, complaint) -> None:
    lines = [record if line.startswith("pg-b ") else line for line in ZONE.splitlines()]
    with pytest.raises(ConfigError) as raised:
        zone_layout(tmp_path, "\n".join(lines) + "\n")
    assert complaint in str(raised.value)


def test_a_zone_without_a_multi_master_layout_says_what_is_missing(tmp_path) -> None:
    text = ZONE.replace('"pg.masters=pg-a pg-b,pg-c" ', "")
    with pytest.raises(ConfigError, match="needs pg.masters= and pg.read="):
        zone_layout(tmp_path, text)


def databases(ini: str) -> dict[str, str]:
    section = ini.split("[databases]", 1)[1].split("[pgbouncer]", 1)[0]
    return dict(line.split(" = ", 1) for line in section.splitlines() if " = " in line)


def test_the_configuration_has_a_database_per_master_a_round_robin_alias_and_the_read_side(tmp_path) -> None:
    ini = bouncer_ini(zone_layout(tmp_path), BouncerSettings(listen_port=7000))
    assert databases(ini) == {
        "write_a": "host=10.0.0.11 port=5432 dbname=app user=postgres",
        "write_b": "host=10.0.0.12 port=5432 dbname=app user=postgres",
        "write_c": "host=10.0.0.13 port=5432 dbname=app user=postgres",
        "write": "host=10.0.0.11,10.0.0.12,10.0.0.13 port=5432 dbname=app user=postgres",
        "read": "host=10.0.0.20 port=6543 dbname=app_read user=reader",
    }
    settings = dict(line.split(" = ", 1) for line in ini.split("[pgbouncer]")[1].splitlines() if " = " in line)
    assert settings["listen_port"] == "7000" and settings["server_round_robin"] == "1"
    assert settings["pool_mode"] == "transaction"


def test_a_lost_master_leaves_the_write_alias_but_keeps_its_own_entry(tmp_path) -> None:
    ini = bouncer_ini(zone_layout(tmp_path), BouncerSettings(), live={"a", "c"})
    found = databases(ini)
    assert found["write"] == "host=10.0.0.11,10.0.0.13 port=5432 dbname=app user=postgres"
    assert found["write_b"] == "host=10.0.0.12 port=5432 dbname=app user=postgres"
    assert "; master b (id 2): LOST: out of the write alias" in ini


def test_with_no_master_alive_there_is_no_write_alias(tmp_path) -> None:
    found = databases(bouncer_ini(zone_layout(tmp_path), BouncerSettings(), live=set()))
    assert "write" not in found and {"write_a", "write_b", "write_c", "read"} <= set(found)


def test_masters_that_differ_in_database_name_cannot_share_a_host_list() -> None:
    layout = PgLayout((MasterEndpoint(Master("a", 1), Endpoint("127.0.0.1", "cf_a")),
                       MasterEndpoint(Master("b", 2), Endpoint("127.0.0.1", "cf_b"))),
                      Endpoint("127.0.0.1", "cf_read"))
    with pytest.raises(ConfigError, match="pgbouncer's host list shares one of each"):
        bouncer_ini(layout, BouncerSettings())


def test_a_setting_cannot_smuggle_a_line_into_the_file(tmp_path) -> None:
    settings = BouncerSettings(extra=(("auth_type", "trust\nadmin_users = mallory"),))
    with pytest.raises(ConfigError, match="newline"):
        bouncer_ini(zone_layout(tmp_path), settings)


@pytest.mark.parametrize(("sql", "kind"), [
    ("INSERT INTO t (x) VALUES (1)", "insert"),
    ("  -- a note\n insert into t default values", "insert"),
    ("/* UPDATE */ SELECT 'DELETE FROM t' FROM t", "read"),
    ("values (1), (2)", "read"),
    ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "insert"),
    ("WITH gone AS (DELETE FROM t RETURNING *) INSERT INTO u SELECT * FROM gone", "other"),
    ("WITH x AS (SELECT 1) SELECT * FROM x", "read"),
    ("EXPLAIN ANALYZE DELETE FROM t", "other"),
    ("EXPLAIN SELECT 1", "read"),
    ("UPDATE t SET x = 2", "other"),
    ("delete from t", "other"),
    ("TRUNCATE t", "other"),
    ("CREATE TABLE u (x int)", "other"),
    ("SELECT $$ UPDATE $$", "read"),
])
def test_statements_are_told_apart_by_what_they_do(sql, kind) -> None:
    assert statement_kind(sql) == kind


def test_an_update_without_a_named_master_is_refused_with_the_reasons() -> None:
    router = Router(lambda dbname: "host=192.0.2.1 dbname=" + dbname)  # never connected to
    with pytest.raises(ConfigError, match="updates and deletes need consistent routing"):
        router.execute("UPDATE customers SET name = 'x' WHERE guid = 1")
    with pytest.raises(ConfigError, match="refused DELETE"):
        router.execute("DELETE FROM customers")
    with pytest.raises(ConfigError, match="select\\(\\) takes reads only"):
        router.select("INSERT INTO customers DEFAULT VALUES")


def test_the_docs_zone_gives_exactly_the_docs_configuration(tmp_path) -> None:
    from tests.pg_support import doc_blocks

    blocks = {b.options.get("role"): b for b in doc_blocks()}
    layout = zone_layout(tmp_path, blocks["zone"].text)
    assert bouncer_ini(layout, BouncerSettings()) == blocks["bouncer-ini"].text


def test_the_docs_pgbouncer_node_record_configures_the_cell_as_the_docs_say(tmp_path) -> None:
    import re
    from pathlib import Path

    from cellframe.cell.outbox import RecordingOutbox
    from cellframe.roles.pgbouncer import BouncerCell
    from tests.pg_support import doc_blocks

    blocks = {b.options.get("role"): b for b in doc_blocks()}
    path = tmp_path / "pg.zone"
    path.write_text(blocks["zone"].text + blocks["pgbouncer-node"].text)
    with ZoneFileResolver(path) as resolver:
        config = resolver.node_config("pgb-01")
    assert config.role == "pgbouncer"
    cell = BouncerCell("pgb-01-pgbouncer", outbox=RecordingOutbox(), settings=dict(config.settings))
    assert cell.config_path == Path("/etc/pgbouncer/pgbouncer.ini")
    assert cell.listen == ("127.0.0.1", 6432) and cell.admin_user == "postgres"
    assert (cell.interval, cell.probe_timeout) == (0.2, 1.0)
    page = Path(__file__).parent.parent.joinpath("docs", "postgres-multimaster.md").read_text()
    source = Path(BouncerCell.__module__.replace(".", "/") + ".py")
    read_keys = set(re.findall(r'"(pgbouncer\.[a-z-]+)"', (Path(__file__).parent.parent / source).read_text()))
    assert read_keys and all(f"`{key}`" in page for key in read_keys), "a setting the docs miss"


@pytest.mark.parametrize(("settings", "complaint"), [
    ({}, "needs the setting pgbouncer.config"),
    ({"pgbouncer.config": "/x.ini", "pgbouncer.listen": "6432"}, "is not HOST:PORT"),
    ({"pgbouncer.config": "/x.ini", "pgbouncer.interval-ms": "soon"}, "is not an integer"),
])
def test_a_pgbouncer_cell_with_bad_settings_is_refused_naming_the_setting(settings, complaint) -> None:
    from cellframe.cell.outbox import RecordingOutbox
    from cellframe.roles.pgbouncer import BouncerCell

    with pytest.raises(ConfigError, match=complaint):
        BouncerCell("pgb", outbox=RecordingOutbox(), settings=settings)


def test_query_timeout_is_written_only_when_set(tmp_path) -> None:
    layout = zone_layout(tmp_path)
    assert "query_timeout" not in bouncer_ini(layout, BouncerSettings())
    assert "\nquery_timeout = 2.5\n" in bouncer_ini(layout, BouncerSettings(query_timeout=2.5))


def test_a_pgbouncer_cell_takes_its_settings_from_the_cluster_and_its_node_record_wins(tmp_path) -> None:
    from cellframe.cell.host import StandaloneHost
    from cellframe.cell.outbox import RecordingOutbox
    from cellframe.roles.pgbouncer import BouncerCell

    path = tmp_path / "pg.zone"
    path.write_text(ZONE.replace('"web=1"', '"web=1" "pgbouncer.config=/etc/pgb.ini"'
                                            ' "pgbouncer.listen=127.0.0.1:6000"'))
    with ZoneFileResolver(path) as resolver:
        host = StandaloneHost("spare-01", RecordingOutbox())
        host.resolver = resolver
        cell = BouncerCell("spare-01-pgbouncer", host=host, settings={"pgbouncer.listen": "10.0.0.9:6432"})
    assert str(cell.config_path) == "/etc/pgb.ini" and cell.listen == ("10.0.0.9", 6432)


def test_a_pgbouncer_node_without_a_layout_in_dns_says_so_and_drives_once_dns_has_one(tmp_path) -> None:
    from cellframe.node.node import Node
    from cellframe.pgmulti.processes import free_port
    from cellframe.roles import builtin_registry
    from cellframe.roles.pgbouncer import BouncerCell
    from cellframe.testing import wait_for
    from cellframe.transports.memory import MemoryTransport

    port = free_port(("127.0.0.2", "127.0.0.3"))  # nothing listens: the probes are refused
    head = ("$ORIGIN pg.test.\n$TTL 1\n@ IN SOA ns.pg.test. h.pg.test. ( 1 60 30 600 1 )\n"
            "  IN NS ns\nns IN A 127.0.0.1\n"
            f'pgb-01 IN TXT "role=pgbouncer" "pgbouncer.config={tmp_path / "pgbouncer.ini"}"'
            f' "pgbouncer.listen=127.0.0.1:{free_port()}"\n')
    zone = tmp_path / "pg.zone"
    zone.write_text(head + '_cluster IN TXT "web=1"\n')
    events: list[tuple[str, dict[str, object]]] = []
    with ZoneFileResolver(zone) as resolver, MemoryTransport() as transport:
        node = Node("pgb-01", transport=transport, resolver=resolver, registry=builtin_registry(),
                    watch_config=False)
        node.listeners.append(lambda kind, fields: events.append((kind, fields)))
        with node:
            [cell] = [c for c in node.cells().values() if isinstance(c, BouncerCell)]
            wait_for(lambda: [f for k, f in events if k == "pgbouncer-not-driven"], 20,
                     what="the cell to say why it does not drive pgbouncer")
            assert "pg.masters" in str(next(f for k, f in events if k == "pgbouncer-not-driven")["error"])
            assert cell.actor_ref.is_alive() and cell.driver is None
            zone.write_text(head + '_cluster IN TXT "web=1" "pg.masters=pg-a pg-b" "pg.read=pg-read"\n'
                            + "".join(f'pg-{m} IN TXT "pg.master={m}" "pg.id={i}" "pg.host=127.0.0.{i + 1}"'
                                      f' "pg.port={port}" "pg.dbname=app"\n' for i, m in ((1, "a"), (2, "b")))
                            + 'pg-read IN TXT "pg.host=127.0.0.1" "pg.dbname=app_read"\n')
            wait_for(lambda: cell.driver is not None and cell.driver.failures >= 1, 30,
                     what="the cell to drive once DNS holds the layout")
            assert len([k for k, _ in events if k == "pgbouncer-not-driven"]) == 1  # said once
            # Neither master answers: the file says so; no pgbouncer listens: its RELOAD fails.
            assert (tmp_path / "pgbouncer.ini").read_text().count("LOST") == 2
            wait_for(lambda: cell.driver.failures >= 1, 20, what="the failed RELOAD counted")
