"""Several ``cellframe node`` processes on the real RabbitMQ and BIND 9: routing by node, role,
each, cell and broadcast; a role change in DNS reaching a running node; a broker connection cut
mid-stream with nothing lost and nothing applied twice; SIGTERM and SIGKILL; forged and
unsigned messages refused; malformed TXT records handled.

The processes are started once for the module, in parallel; each test uses its own nodes or
measures only what changed, so the tests do not disturb each other. Every node learns its
role from the test BIND; the tallies record the ids they apply in files (see
``process_cells``), which is how "nothing lost, nothing twice" is checked across processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from cellframe.client import Client
from cellframe.config.registration import register
from cellframe.language.symbols import Keyword, Symbol
from cellframe.testing import Collector, wait_for
from cellframe.transports.base import DEAD_LETTER_REASON
from cellframe.wire.envelope import Envelope
from cellframe.wire.signing import Signer
from tests.amqp_support import close_connections
from tests.node_support import replies_matching
from tests.process_cells import applied_ids
from tests.process_support import REPO, ProcessCluster, Stream, child_env

pytestmark = [pytest.mark.amqp, pytest.mark.bind, pytest.mark.slow]

# TTLs of 1 s so that a DNS change reaches the running nodes within about a second; no role
# counts at _cluster, so the reconciler leaves the roles the test gives alone.
ZONE = r"""$ORIGIN cluster.test.
$TTL 1
@           IN SOA  ns.cluster.test. hostmaster.cluster.test. ( 1 60 30 600 1 )
            IN NS   ns
ns          IN A    127.0.0.1
_cluster    IN TXT  "heartbeat-ms=500" "failure-timeout-ms=2000"
tally-01    IN TXT  "role=tally" "rack=r1"
tally-02    IN TXT  "role=tally" "rack=r2"
other-01    IN TXT  "role=other"
morph-01    IN TXT  "rack=r9"
steady-01   IN TXT  "role=steady"
drain-01    IN TXT  "role=drain"
drain-02    IN TXT  "role=drain"
crash-01    IN TXT  "role=crash"
crash-02    IN TXT  "role=crash"
broken-01   IN TXT  ( "role=other" "no-equals-sign" "=empty-key" "" "\255\254=x" "weight=1"
                      "Weight=2" "note=" "data` dir=/srv/data" )
broken-01   IN TXT  "weight=3"
"""
NODES = {"tally-01": "tally", "tally-02": "tally", "other-01": "other", "morph-01": None,
         "steady-01": "steady", "drain-01": "drain", "drain-02": "drain", "crash-01": "crash",
         "crash-02": "crash", "broken-01": "other"}


@pytest.fixture(scope="module")
def bind_zone() -> str:
    """The zone the plugin's ``bind_server`` serves to this module's nodes."""
    return ZONE


@pytest.fixture(scope="module")
def cluster(bind_server: Any, amqp_url: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    cluster = ProcessCluster(amqp_url, tmp_path_factory.mktemp("nodes"), dns=bind_server)
    try:
        # other-01 runs in diagnostic mode, so what it refuses goes to the dead letters.
        started = [cluster.launch(name, *(["--diagnostic"] if name == "other-01" else []))
                   for name in NODES]
        cluster.wait_ready(started)
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def client(cluster: ProcessCluster) -> Iterator[Client]:
    client = cluster.client()
    yield client
    client.close()
    client.transport.close()


def pongs_by_node(client: Client) -> Counter[str]:
    return Counter(r.expr[r.expr.index(Keyword("node")) + 1] for r in client.replies
                   if r.expr and r.expr[0] == Symbol("pong"))


def totals(cluster: ProcessCluster, client: Client, *nodes: str) -> dict[str, int]:
    return {node: cluster.cell(client, node)["total"] for node in nodes}


def cli(cluster: ProcessCluster, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run ``python -m cellframe ARGS`` as its own process, as an operator would."""
    return subprocess.run([sys.executable, "-m", "cellframe", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=str(REPO), env=child_env())


def topology_args(cluster: ProcessCluster) -> list[str]:
    return ["--amqp", cluster.url, "--exchange", cluster.exchange, "--queue-prefix",
            cluster.prefix, "--secret-file", str(cluster.secret_file)]


# -- routing -----------------------------------------------------------------------------------


def test_node_key_reaches_that_node_alone_and_all_reaches_every_node(cluster, client) -> None:
    client.send("node.tally-02", "(ping)")
    client.send("node.other-01", "(ping)")
    replies_matching(client, "pong", 2)
    # A node queue is FIFO: had a node.* ping reached another node, its pong would come
    # before that node's pong to the broadcast below.
    client.send("all", "(ping)")
    replies_matching(client, "pong", 2 + len(NODES))
    expected = Counter(list(NODES))
    expected.update(["tally-02", "other-01"])
    assert pongs_by_node(client) == expected


def test_every_node_answers_status_with_the_role_dns_gave_it(cluster) -> None:
    done = cli(cluster, "status", "--json", "--window", "4", *topology_args(cluster))
    assert done.returncode == 0, done.stderr
    nodes = json.loads(done.stdout)["nodes"]
    assert {n["node"]: n["role"] for n in nodes} == NODES
    tally = next(n for n in nodes if n["node"] == "tally-01")
    assert [c["class"] for c in tally["cells"]] == ["Membership", "Tally"]
    assert set(tally["counters"]) >= {"delivered", "rejected", "unroutable", "sent"}


def test_cellframe_send_prints_each_call_back_on_its_own_line(cluster) -> None:
    done = cli(cluster, "send", "each:tally", "(ping)", "--wait", "3", *topology_args(cluster))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sorted(line.split('"')[1] for line in lines) == ["tally-01", "tally-02"]
    assert all(line.startswith("(pong :node ") for line in lines)


def test_role_key_reaches_exactly_one_node_of_the_role(cluster, client) -> None:
    before = totals(cluster, client, "tally-01", "tally-02")
    sent = [client.send("role.tally", "(add 1)", expect_reply=False) for _ in range(40)]
    wait_for(lambda: sum(totals(cluster, client, "tally-01", "tally-02").values())
             == sum(before.values()) + 40, 15, what="40 adds applied")
    applied = Counter(i for i in applied_ids(cluster.tally_dir) if i in set(sent))
    assert applied == Counter(sent)  # each one applied once, by one of the two


def test_each_key_reaches_every_node_of_the_role_and_no_other(cluster, client) -> None:
    before = totals(cluster, client, "tally-01", "tally-02", "other-01")
    message_id = client.send("each.tally", "(add 5)", expect_reply=False)
    wait_for(lambda: all(totals(cluster, client, n)[n] == before[n] + 5
                         for n in ("tally-01", "tally-02")), 15, what="both tallies +5")
    # other-01's node queue is FIFO: this status answer comes after anything routed before it.
    assert totals(cluster, client, "other-01") == {"other-01": before["other-01"]}
    assert sorted(c for c in ("tally-01", "tally-02", "other-01")
                  if message_id in applied_ids(cluster.tally_dir, c)) == ["tally-01", "tally-02"]


def test_cell_key_reaches_one_cell(cluster, client) -> None:
    before = totals(cluster, client, "tally-01", "tally-02")
    client.send("cell.tally-01", "(add 7)")
    client.send("cell.tally-01", "(total)")
    (total,) = replies_matching(client, "total", 1)
    assert total == [Symbol("total"), before["tally-01"] + 7, "tally-01"]
    assert totals(cluster, client, "tally-02") == {"tally-02": before["tally-02"]}


# -- DNS ---------------------------------------------------------------------------------------


def test_the_repl_talks_to_node_processes_on_rabbitmq(cluster, tmp_path) -> None:
    import pexpect

    child = pexpect.spawn(
        sys.executable, ["-m", "cellframe", "repl", *topology_args(cluster),
                         "--history", str(tmp_path / "history")],
        encoding="utf-8", timeout=30, dimensions=(40, 200), cwd=str(REPO),
        env=child_env(TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1"),
    )
    try:
        child.expect(r"cellframe[^>\n]*>")
        child.sendline("node:tally-02 (ping)")
        child.expect(r'\(pong :node "tally-02"')
        child.sendline("node:tally-02 (ping))")  # an extra parenthesis: shown, not sent
        child.expect("error: ")
        child.expect(r"cellframe[^>\n]*>")
        child.sendline(",quit")
        child.expect(pexpect.EOF)
    finally:
        child.terminate(force=True)


def test_a_quorum_cluster_keeps_its_role_mailboxes_in_quorum_queues(tmp_path, amqp_url) -> None:
    # Quorum or classic is a choice for a whole cluster (the broker refuses to redeclare a
    # queue with another type), so this one gets a topology of its own.
    quorate = ProcessCluster(amqp_url, tmp_path)
    try:
        quorate.wait_ready([quorate.launch("quorum-01", "--role", "quorate", "--quorum")])
        listed = subprocess.run(["rabbitmqctl", "list_queues", "--quiet", "--no-table-headers",
                                 "name", "type"], capture_output=True, text=True,
                                timeout=60).stdout
        types = dict(line.split()[:2] for line in listed.splitlines() if len(line.split()) >= 2)
        assert types[f"{quorate.prefix}role.quorate"] == "quorum"
        client = quorate.client()
        client.send("role.quorate", "(add 3)")
        wait_for(lambda: quorate.cell(client, "quorum-01")["total"] == 3, 30,
                 what="the add sent to the quorum mailbox")
    finally:
        quorate.close()


def test_a_role_change_in_dns_reaches_the_running_node(cluster, bind_server, client) -> None:
    def set_txt(pairs: dict[str, str]) -> None:
        register(bind_server.address, bind_server.port, bind_server.zone,
                 bind_server.key_name, bind_server.key_secret, "morph-01",
                 pairs, ttl=1)

    assert cluster.status(client, "morph-01")["role"] is None
    set_txt({"role": "scribe", "rack": "r9"})
    wait_for(lambda: cluster.status(client, "morph-01")["role"] == "scribe", 15,
             interval=0.2, what="morph-01 to become a scribe")
    client.send("role.scribe", "(add 2)")
    wait_for(lambda: cluster.cell(client, "morph-01")["total"] == 2, 30, what="the scribe's add")
    assert dict(cluster.cell(client, "morph-01")["settings"]) == {"role": "scribe", "rack": "r9"}
    set_txt({"role": "scribe", "rack": "r10"})  # a setting alone changes: the same cell hears it
    wait_for(lambda: dict(cluster.cell(client, "morph-01")["settings"]).get("rack") == "r10", 15,
             interval=0.2, what="the running scribe to see rack=r10")
    assert cluster.cell(client, "morph-01")["total"] == 2  # not restarted: it kept its state
    set_txt({"rack": "r9"})
    wait_for(lambda: cluster.status(client, "morph-01")["role"] is None, 15, interval=0.2,
             what="morph-01 back to a spare")
    assert [c["class"] for c in cluster.status(client, "morph-01")["cells"]] == ["Membership"]


def test_a_node_with_malformed_txt_records_runs_with_the_valid_pairs(cluster, bind_server, client) -> None:
    output = cluster.nodes["broken-01"].text()
    for warning in ("no unquoted '=' in 'no-equals-sign'", "empty key in '=empty-key'",
                    "not UTF-8", "key 'weight' repeated"):
        assert warning in output
    cell = cluster.cell(client, "broken-01")
    assert dict(cell["settings"]) == {"role": "other", "weight": "3", "note": "",
                                      "data dir": "/srv/data"}
    done = cli(cluster, "env", "broken-01", "--dns", f"{bind_server.address}:{bind_server.port}",
               "--domain", bind_server.zone)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "export CELLFRAME_NAME=broken-01", "export CELLFRAME_ROLE=other",
        "export CELLFRAME_WEIGHT=3", "export CELLFRAME_NOTE=''"]
    assert "# not exported: data dir" in done.stderr
    assert "# warning: " in done.stderr and "no-equals-sign" in done.stderr


# -- security ----------------------------------------------------------------------------------


def test_unsigned_forged_altered_and_stale_messages_are_refused(cluster, client) -> None:
    raw = cluster.connect("raw")
    dead = Collector()
    raw.consume(raw.dead_letter_queue, dead)
    rejected = cluster.status(client, "other-01")["counters"]["rejected"]
    before = totals(cluster, client, "other-01", "tally-01")
    good = cluster.signer
    altered = good.sign(Envelope(b"(add 1)", message_id="altered"), "cell.other-01")
    bad = {
        "unsigned": Envelope(b"(add 100)", message_id="unsigned"),
        "forged": Signer(b"not the cluster secret!", exchange=cluster.exchange).sign(
            Envelope(b"(add 100)", message_id="forged"), "cell.other-01"),
        "altered": Envelope(b"(add 100)", altered.message_id, altered.timestamp,
                            headers=altered.headers),
        "stale": good.sign(Envelope(b"(add 100)", message_id="stale",
                                    timestamp=time.time() - 3600), "cell.other-01"),
    }
    for envelope in bad.values():
        raw.publish("cell.other-01", envelope)
    raw.publish("cell.tally-01", Envelope(b"(add 100)", message_id="unsigned-to-tally"))
    raw.publish("cell.other-01", good.sign(Envelope(b"(add 1)", message_id="good"), "cell.other-01"))
    wait_for(lambda: set(bad) <= set(dead.ids), 15, what="four dead letters")
    reasons = {d.envelope.message_id: d.envelope.headers[DEAD_LETTER_REASON]
               for d in dead.deliveries}
    assert "not signed" in reasons["unsigned"] and "forged" in reasons["forged"]
    assert "expired" in reasons["stale"]
    wait_for(lambda: totals(cluster, client, "other-01")["other-01"] == before["other-01"] + 1,
             30, what="the one good add")
    assert cluster.status(client, "other-01")["counters"]["rejected"] == rejected + 4
    # Not in diagnostic mode, tally-01 drops what it refuses, and applies nothing of it.
    assert totals(cluster, client, "tally-01") == {"tally-01": before["tally-01"]}
    assert "unsigned-to-tally" not in applied_ids(cluster.tally_dir, "tally-01")


# -- faults ------------------------------------------------------------------------------------


def test_a_connection_cut_mid_stream_loses_nothing_and_applies_nothing_twice(
    cluster, client,
) -> None:
    node = cluster.nodes["steady-01"]
    with Stream(client, "role.steady") as stream:
        wait_for(lambda: len(applied_ids(cluster.tally_dir, "steady-01")) >= 300, 20,
                 what="the stream under way")
        # Both ends at once: the node's unacked deliveries are redelivered, and the
        # client's unconfirmed publishes are sent again.
        close_connections(node.connection_name, client.transport.name)
        sent = stream.finish(300)
    assert client.transport.stats()["reconnects"] >= 1
    wait_for(lambda: len(applied_ids(cluster.tally_dir, "steady-01")) >= len(sent), 30,
             what=f"all {len(sent)} applied")
    applied = applied_ids(cluster.tally_dir, "steady-01")
    assert Counter(applied) == Counter(sent)
    cell = cluster.cell(client, "steady-01")
    assert cell["total"] == len(sent)
    assert "reconnecting" in node.text()


def test_sigterm_finishes_or_requeues_in_flight_messages(cluster, client) -> None:
    with Stream(client, "role.drain") as stream:
        wait_for(lambda: len(applied_ids(cluster.tally_dir, "drain-01")) >= 300, 20,
                 what="drain-01 busy")
        assert cluster.terminate("drain-01") == 0
        sent = stream.finish(300)
    wait_for(lambda: set(sent) <= set(applied_ids(cluster.tally_dir)), 30,
             what="every message applied")
    applied = Counter(i for i in applied_ids(cluster.tally_dir) if i in set(sent))
    assert applied == Counter(sent)  # finished by drain-01 or requeued to drain-02: once
    assert "Traceback" not in cluster.nodes["drain-01"].text()


def test_sigkill_loses_nothing_acknowledged(cluster, client) -> None:
    with Stream(client, "role.crash") as stream:
        wait_for(lambda: len(applied_ids(cluster.tally_dir, "crash-01")) >= 300, 20,
                 what="crash-01 busy")
        cluster.kill("crash-01")
        sent = stream.finish(300)
    # What crash-01 applied but had not acknowledged is applied again by crash-02: at least
    # once, never lost.
    wait_for(lambda: set(sent) <= set(applied_ids(cluster.tally_dir)), 30,
             what="every message applied")
