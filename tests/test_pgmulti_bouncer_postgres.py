"""The multi-master scheme behind a real pgbouncer, on real PostgreSQL servers.

Five masters (private servers on 127.0.0.2..6), the read side on the test server, pgbouncer
on a loopback port with the configuration cellframe generates from the zone, and writers that
use the application helper (``Router``) only.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cellframe.errors import ConfigError, StoreError
from cellframe.language.reader import read
from cellframe.node.node import Node
from cellframe.pgmulti import BouncerDriver, ReplicationLoop, Replicator, Router, admin_command
from cellframe.pgmulti.bouncer import bouncer_ini, write_file_atomically
from cellframe.pgmulti.processes import LocalServer
from cellframe.roles.pgbouncer import BouncerCell
from cellframe.store.guid import decode
from cellframe.testing import wait_for
from cellframe.wire.envelope import envelope_for
from tests.pg_support import query
from tests.pgbouncer_support import EVENTS, Acked, BouncedLayout, bounced_layout, bouncer_node

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WRITERS = 8


@pytest.fixture(scope="module")
def bounced(tmp_path_factory) -> BouncedLayout:
    with bounced_layout(tmp_path_factory.mktemp("pgbouncer")) as layout:
        yield layout


@pytest.fixture
def fresh(bounced: BouncedLayout) -> BouncedLayout:
    """The module's layout with every table emptied and replication forgotten."""
    for server in bounced.servers.values():
        query(server.endpoint.conninfo(), "SET session_replication_role = replica; DELETE FROM events")
    query(bounced.read_dsn(), "SET session_replication_role = replica; DELETE FROM events;"
          " UPDATE cellframe.replication_state SET done = '1:1:', target = NULL, after_guid = NULL")
    return bounced


def router(bounced: BouncedLayout) -> Router:
    return Router(lambda dbname: bounced.bouncer.conninfo(dbname), description=bounced.description)


def writer(bounced: BouncedLayout, number: int, acked: Acked, stop: threading.Event,
           limit: int, errors: list[BaseException]) -> None:
    """Insert (number, seq) rows one by one through the write alias until ``stop`` or ``limit``."""
    with router(bounced) as helper:
        try:
            for seq in range(limit):
                if stop.is_set():
                    return
                [guid] = helper.insert(EVENTS, [{"writer": number, "seq": seq, "body": f"w{number}"}])
                acked.add(number, seq, guid)
        except BaseException as error:  # the test reports it
            errors.append(error)


def read_side(bounced: BouncedLayout) -> list[tuple[int, int, int, str]]:
    return query(bounced.read_dsn(),
                 "SELECT guid, writer, seq, tableoid::regclass::text FROM events")


def replicator(bounced: BouncedLayout) -> Replicator:
    masters = {m.name: m.endpoint.conninfo() for m in bounced.layout.masters}
    return Replicator(bounced.description, bounced.read_dsn(), masters)


def assert_every_acked_row_once(bounced: BouncedLayout, acked: dict[tuple[int, int], int]) -> None:
    rows = read_side(bounced)
    by_guid = {guid: (w, s, child) for guid, w, s, child in rows}
    assert len(by_guid) == len(rows), "a guid appears twice on the read side"
    missing = {key: guid for key, guid in acked.items() if guid not in by_guid}
    assert missing == {}, f"{len(missing)} acknowledged inserts are not on the read side"
    for key, guid in acked.items():
        writer_, seq, child = by_guid[guid]
        assert (writer_, seq) == key
        master = bounced.layout.master(child.removesuffix("_events")).master
        assert decode(guid).shard == master.id, "a guid lost its origin"


def test_eight_writers_through_pgbouncer_put_every_row_exactly_once_on_the_read_side(fresh) -> None:
    acked, stop, errors = Acked(), threading.Event(), []
    threads = [threading.Thread(target=writer, args=(fresh, n, acked, stop, 150, errors))
               for n in range(WRITERS)]
    with replicator(fresh) as copying, ReplicationLoop(copying, interval=0.05) as loop:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        wait_for(lambda: len(read_side(fresh)) >= len(acked), 30, interval=0.05,
                 what="every acknowledged row on the read side",
                 show=lambda: (len(read_side(fresh)), len(acked)))
    assert loop.failures == 0
    assert len(acked) == WRITERS * 150
    rows = read_side(fresh)
    assert len(rows) == len(acked)  # exactly once: nothing more than was acknowledged
    assert_every_acked_row_once(fresh, acked.snapshot())
    masters_used = {child for *_, child in rows}
    assert masters_used == {f"{m}_events" for m in "abcde"}, "the write alias skipped a master"


def lose_a_master_mid_stream(bounced: BouncedLayout, live: Callable[[], frozenset[str]],
                             reloads: Callable[[], int]) -> None:
    """Writers insert through pgbouncer while master c crashes and comes back; whoever keeps
    pgbouncer's alias (``live``, ``reloads``) must drop it and take it back, losing nothing."""
    lost = bounced.servers["c"]
    acked, stop, errors = Acked(), threading.Event(), []
    threads = [threading.Thread(target=writer, args=(bounced, n, acked, stop, 10**6, errors))
               for n in range(WRITERS)]
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: len(acked) >= 400, 60, what="400 inserts before the loss")
        lost.stop("immediate")  # a crash: what it acknowledged survives on its disk
        at_loss = len(acked)
        wait_for(lambda: "c" not in live(), 30, what="master c out of the write alias", show=live)
        after_reload = len(acked)
        wait_for(lambda: len(acked) >= after_reload + 400, 60,
                 what="400 more inserts once c is out of the alias", show=lambda: len(acked))
        stop.set()
        for thread in threads:
            thread.join(60)
        assert errors == []
        alias = [row for row in admin_command(bounced.bouncer.admin_conninfo, "SHOW DATABASES")
                 if row[0] == "write"]
        assert "127.0.0.4" not in str(alias), "pgbouncer still routes writes to master c"
        taken = acked.snapshot()
        late = [g for g in list(taken.values())[after_reload:] if decode(g).shard == 3]
        assert late == [], "inserts acknowledged after the reload went to the lost master"
        assert len(taken) > at_loss + 400
        lost.start()  # the master comes back: its rows reach the read side, it rejoins
        wait_for(lambda: "c" in live(), 30, what="master c back in the alias", show=live)
        assert reloads() >= 2
    finally:
        stop.set()
        if not lost.running():
            lost.start()
    with replicator(bounced) as copying:
        wait_for(lambda: not copying.sync_all().errors and len(read_side(bounced)) >= len(taken),
                 30, what="the read side to catch up", show=lambda: len(read_side(bounced)))
    assert_every_acked_row_once(bounced, taken)


def test_a_master_lost_mid_stream_loses_no_acknowledged_insert_and_writes_go_on(fresh) -> None:
    driver = BouncerDriver(lambda: fresh.layout.__class__.from_dns(fresh.resolver()),
                           fresh.bouncer.config_path, fresh.bouncer.admin_conninfo,
                           fresh.bouncer.settings, interval=0.05, probe_timeout=1.0, source="pg.zone")
    with driver:
        lose_a_master_mid_stream(fresh, lambda: driver.live, lambda: driver.reloads)


def _server_processes(server: LocalServer) -> list[int]:
    """The postmaster of ``server`` and every process it forked (its backends)."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    found = [postmaster]
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.isdigit() and int(stat[1]) == postmaster:
            found.append(int(entry))
    return found


def test_a_hung_master_leaves_the_alias_and_a_query_timeout_frees_every_writer(fresh) -> None:
    bouncer = fresh.bouncer
    settings = replace(bouncer.settings, query_timeout=2.0)
    hung = fresh.servers["d"]
    acked, stop, errors = Acked(), threading.Event(), []
    threads = [threading.Thread(target=writer, args=(fresh, n, acked, stop, 10**6, errors))
               for n in range(WRITERS)]
    driver = BouncerDriver(lambda: fresh.layout, bouncer.config_path, bouncer.admin_conninfo,
                           settings, interval=0.05, probe_timeout=1.0)
    frozen: list[int] = []
    try:
        with driver:
            wait_for(lambda: driver.reloads >= 1, 30, what="the driver to write query_timeout")
            for thread in threads:
                thread.start()
            wait_for(lambda: len(acked) >= 400, 60, what="400 inserts before the hang")
            frozen = _server_processes(hung)
            for pid in frozen:  # stopped dead: its sockets stay open, nothing answers
                os.kill(pid, signal.SIGSTOP)
            wait_for(lambda: "d" not in driver.live, 30, what="the probe's deadline to drop d",
                     show=lambda: driver.live)
            after = len(acked)
            wait_for(lambda: {w for w, _ in list(acked.snapshot())[after:]} == set(range(WRITERS)),
                     30, what="every writer acknowledged again, none stuck on the hung master",
                     show=lambda: sorted({w for w, _ in list(acked.snapshot())[after:]}))
            stop.set()
            for thread in threads:
                thread.join(60)
            assert errors == []
    finally:
        stop.set()
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        write_file_atomically(bouncer.config_path, bouncer_ini(fresh.layout, bouncer.settings))
        admin_command(bouncer.admin_conninfo, "RELOAD")  # as the module's other tests expect
    taken = acked.snapshot()
    with replicator(fresh) as copying:
        wait_for(lambda: not copying.sync_all().errors and len(read_side(fresh)) >= len(taken),
                 30, what="the read side to catch up", show=lambda: len(read_side(fresh)))
    assert_every_acked_row_once(fresh, taken)


def _bouncer_cell(node: Node) -> BouncerCell:
    [cell] = [c for c in node.cells().values() if isinstance(c, BouncerCell)]
    return cell


def _pgbouncer(cell: BouncerCell) -> dict[str, Any]:
    return dict(cell.cell_snapshot().get("pgbouncer", {"live": [], "reloads": 0, "rounds": 0}))


def test_the_pgbouncer_cell_rewrites_and_reloads_when_a_master_is_lost_and_loses_nothing(
        fresh, tmp_path) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    with bouncer_node(fresh, tmp_path, **{"pgbouncer.interval-ms": "50"}) as (node, _):
        node.listeners.append(lambda kind, fields: events.append((kind, fields)))
        cell = _bouncer_cell(node)
        wait_for(lambda: _pgbouncer(cell)["rounds"] >= 1, 30, what="the cell's first round",
                 show=lambda: _pgbouncer(cell))
        lose_a_master_mid_stream(fresh, lambda: frozenset(_pgbouncer(cell)["live"]),
                                 lambda: _pgbouncer(cell)["reloads"])
        wait_for(lambda: [f for k, f in events if k == "pgbouncer-reloaded" and f.get("back") == "c"],
                 30, what="the cell's event: c back", show=lambda: events)
    lost = [f for k, f in events if k == "pgbouncer-reloaded" and f.get("lost") == "c"]
    assert lost and "c" not in lost[0]["live"].split()
    assert "by node pgb-01" in fresh.bouncer.config_path.read_text()


def test_membership_news_makes_the_cell_probe_at_once_and_repeats_change_nothing(fresh, tmp_path) -> None:
    down = read('(member-down :node "pg-c" :incarnation 1)')
    # A minute between rounds: only the first round and the news make the cell probe.
    with bouncer_node(fresh, tmp_path, **{"pgbouncer.interval-ms": "60000"}) as (node, transport):
        cell = _bouncer_cell(node)
        wait_for(lambda: _pgbouncer(cell)["rounds"] >= 1, 30, what="the cell's first round",
                 show=lambda: _pgbouncer(cell))
        assert _pgbouncer(cell)["live"] == list("abcde")
        start_reloads = _pgbouncer(cell)["reloads"]
        lost = fresh.servers["c"]
        lost.stop("immediate")
        try:
            news = envelope_for(down, sender="test")
            transport.publish("membership.down.pg-c", news)
            wait_for(lambda: "c" not in _pgbouncer(cell)["live"], 30,
                     what="the news to drop master c at once", show=lambda: _pgbouncer(cell))
            assert _pgbouncer(cell)["reloads"] == start_reloads + 1
            for _ in range(2):
                rounds = _pgbouncer(cell)["rounds"]
                transport.publish("membership.down.pg-c", news)  # a duplicate delivery: dropped
                transport.publish("membership.down.pg-c", envelope_for(down, sender="test"))  # anew
                wait_for(lambda r=rounds: _pgbouncer(cell)["rounds"] > r, 30,
                         what="a round after the repeated news", show=lambda: _pgbouncer(cell))
            assert _pgbouncer(cell)["reloads"] == start_reloads + 1, "a repeated message reloaded"
        finally:
            lost.start()
        # Late news, after the master is back: the probe finds it, so it is in the alias, not out.
        rounds = _pgbouncer(cell)["rounds"]
        transport.publish("membership.down.pg-c", envelope_for(down, sender="test"))
        wait_for(lambda: _pgbouncer(cell)["rounds"] > rounds, 30, what="a round after late news",
                 show=lambda: _pgbouncer(cell))
        assert "c" in _pgbouncer(cell)["live"]
        assert "127.0.0.4" in str([r for r in admin_command(fresh.bouncer.admin_conninfo,
                                                            "SHOW DATABASES") if r[0] == "write"])


def test_the_helper_reads_from_the_read_side_and_names_a_master_only_when_told(fresh) -> None:
    with router(fresh) as helper:
        [guid] = helper.insert(EVENTS, [{"writer": 99, "seq": 0, "body": "first"}])
        master = helper.master_of(guid)
        with replicator(fresh) as copying:
            copying.sync_all()
        assert helper.select("SELECT body FROM events WHERE guid = %s", (guid,)) == [("first",)]
        with pytest.raises(ConfigError, match="consistent routing"):
            helper.execute("UPDATE events SET body = 'second' WHERE guid = %s", (guid,))
        # Named, it reaches the row's master, whose insert-only trigger has the last word.
        with pytest.raises(StoreError, match="masters are insert-only"):
            helper.execute("UPDATE events SET body = 'second' WHERE guid = %s", (guid,), master=master)
    # A client that writes through the read alias by hand reaches the read side, which
    # refuses it itself.
    with pytest.raises(StoreError, match="the read side is for selects"):
        _write_on_read(fresh)


def _write_on_read(bounced: BouncedLayout) -> None:
    import psycopg

    from cellframe.pgmulti import translate_error

    try:
        with psycopg.connect(bounced.bouncer.conninfo("read"), prepare_threshold=None) as conn:
            conn.execute("INSERT INTO events (guid, writer, seq) VALUES (1, 1, 1)")
    except psycopg.Error as exc:
        raise translate_error(exc, "writing through the read alias") from exc


def test_the_driver_keeps_the_file_as_generated_when_nothing_changes(fresh) -> None:
    before = fresh.bouncer.config_path.read_text()
    driver = BouncerDriver(lambda: fresh.layout, fresh.bouncer.config_path,
                           fresh.bouncer.admin_conninfo, fresh.bouncer.settings)
    try:
        started = time.monotonic()
        assert driver.poll() is False and driver.poll() is False
        assert time.monotonic() - started < 5
    finally:
        driver.stop()
    assert fresh.bouncer.config_path.read_text() == before and driver.reloads == 0


def test_a_driver_that_starts_over_an_old_file_rewrites_it_on_its_first_round(fresh) -> None:
    bouncer = fresh.bouncer
    stale = bouncer_ini(fresh.layout, bouncer.settings, live=["a", "b", "d", "e"])
    write_file_atomically(bouncer.config_path, stale)  # left by a driver that saw c lost
    admin_command(bouncer.admin_conninfo, "RELOAD")
    driver = BouncerDriver(lambda: fresh.layout, bouncer.config_path, bouncer.admin_conninfo,
                           bouncer.settings)
    try:
        assert driver.poll() is True and driver.reloads == 1
        assert driver.poll() is False and driver.reloads == 1
    finally:
        driver.stop()
    alias = [row for row in admin_command(bouncer.admin_conninfo, "SHOW DATABASES") if row[0] == "write"]
    assert "127.0.0.4" in str(alias), "master c, which answers, is still out of the alias"


def test_the_docs_driver_and_helper_examples_run_as_written(fresh, capsys) -> None:
    from tests.pg_support import doc_blocks

    blocks = {b.options.get("role"): b for b in doc_blocks()}
    bouncer = fresh.bouncer
    namespace = {"resolver": fresh.resolver(), "config_path": bouncer.config_path,
                 "admin": bouncer.admin_conninfo, "settings": bouncer.settings,
                 "bouncer": bouncer, "description": fresh.description}
    exec(blocks["driver"].text, namespace)  # our own doc's examples, not received text
    exec(blocks["router"].text, namespace)
    assert capsys.readouterr().out.strip() in set("abcde")
    assert namespace["rows"] == [(0,)]  # the read side: the replicator has not run
