"""A role message is applied once by the role, not once per live instance that sees it: on
the real RabbitMQ, two live instances of a durable role, the broker's connections closed
mid-stream, each of the distinct messages applied exactly once; whether the instances share
one journal (one process) or each has its own journal and store, as two processes do (then
a redelivered message waits for the other instance's answer: ``cellframe.node.siblings``)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from cellframe import Envelope, Node, RoleRegistry
from cellframe.cell.durable import CellJournal
from cellframe.healing.membership import HealingConfig, Membership
from cellframe.store.store import Store
from cellframe.testing import wait_for
from cellframe.testing.amqp import AmqpNames
from tests.amqp_support import close_connections
from tests.ledger_node import CountingLedger
from tests.process_support import child_env

MESSAGES = 1500
PACE = 200  # messages a second: the stream lasts 7.5 s, so every close lands inside it
CLOSES = (200, 600, 1000)  # applied messages at which the connections are closed


class Ledger(CountingLedger):
    """Records, for the whole process, which node applied which message id."""

    applied: ClassVar[list[tuple[str, str]]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def record(self, message_id: str) -> None:
        with self.lock:
            self.applied.append((self.cell_name, message_id))


def _publish_paced(publisher: Any, ids: list[str], pace: int = PACE) -> None:
    start = time.monotonic()
    for number, message_id in enumerate(ids):
        publisher.publish("role.ledger", Envelope(f"(entry {number})".encode(),
                                                  message_id=message_id), persistent=True)
        ahead = start + number / pace - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # pacing the stream, not waiting for a condition


def test_two_live_instances_apply_each_role_message_once_across_closed_connections(
        amqp_connect, amqp_names, tmp_path: Path, record_property: Any) -> None:
    name = f"cf-once-{amqp_names.token}"
    registry = RoleRegistry({"ledger": [Ledger]})
    Ledger.applied.clear()
    ids = [f"entry-{n}" for n in range(MESSAGES)]
    with Store(tmp_path / "s") as store:
        journal = CellJournal(store)  # the fence both instances share
        nodes = [Node(node, transport=amqp_connect(name=name), role="ledger", registry=registry,
                      journal=journal, queue_prefix=amqp_names.queue_prefix).start()
                 for node in ("once-1", "once-2")]
        publisher = amqp_connect(name=name, buffer_size=MESSAGES)
        try:
            _stream_with_closes(name, publisher, ids, _ledger_ids, connections=3,
                                show=lambda: (len(Ledger.applied),
                                              [n.status()["counters"] for n in nodes]))
            by_id = Tally(i for _, i in Ledger.applied)
            assert [i for i, times in by_id.items() if times > 1] == []
            by_node = Tally(node for node, _ in Ledger.applied)
            assert set(by_node) == {"once-1", "once-2"}, by_node  # both instances served
            fenced = sum(c.cell_counters.duplicates for n in nodes for c in n.cells().values())
            record_property("redeliveries_fenced", fenced)
        finally:
            _close(nodes, publisher)


#: Membership only to know who else plays the role: 50 ms heartbeats, no reconciling, and a
#: 5 s acceptable pause, so that the reconnections after each close are not taken for deaths.
HEARTBEATS = Membership.configured(HealingConfig(heartbeat_interval=0.05, acceptable_pause=5.0,
                                                 reconcile=False))


def _sees(node: Node, other: str, role: str) -> bool:
    members = next((c["members"] for c in node.status()["cells"] if "members" in c), [])
    return any(m["name"] == other and m["role"] == role and m["status"] == "alive"
               for m in members)


def _stream_with_closes(name: str, publisher: Any, ids: list[str],
                        applied: Callable[[], list[str]], *, connections: int = 2,
                        show: Callable[[], Any] | None = None) -> None:
    """Publish ``ids`` once each, closing the ``connections`` connections named ``name`` at
    ``CLOSES`` applied messages, and wait until every id is applied (``applied``: the ids
    applied so far, a second application too). With the nodes' connections only (2), every
    second copy the nodes see is a redelivery of a lost ack. A publisher whose connection
    closes (3) sends its unconfirmed messages again, each a second broker message under the
    same id, marked ``x-cellframe-resent`` (not ``redelivered``), which the nodes check as
    they check a redelivery."""
    stream = threading.Thread(target=_publish_paced, args=(publisher, ids), daemon=True)
    stream.start()
    for at in CLOSES:
        wait_for(lambda at=at: len(applied()) >= at, 60,
                 what=f"{at} messages applied", show=lambda: len(applied()))
        close_connections(name, expect=connections)
    stream.join(60)
    assert publisher.flush(60), "the broker confirmed every message"
    wait_for(lambda: len(set(applied())) == len(ids), 90, what=f"all {len(ids)} ids applied",
             show=show or (lambda: len(applied())))


def _close(nodes: list[Node], publisher: Any) -> None:
    for node in nodes:
        node.stop()
    for node in nodes:
        node.transport.close()
    publisher.close()


def _ledger_ids() -> list[str]:
    return [i for _, i in Ledger.applied]


@contextlib.contextmanager
def _two_instances_apart(amqp_names: AmqpNames, tmp_path: Path,
                         name: str) -> Iterator[tuple[list[Node], Any]]:
    """Two nodes of the durable role ``ledger``, ``NAME-1`` and ``NAME-2``, sharing nothing
    (each its own store, journal and membership), once each sees the other alive in the role;
    and a publisher. ``Ledger.applied`` starts empty. Connections are named ``name``."""
    registry = RoleRegistry({"ledger": [Ledger]})
    Ledger.applied.clear()
    nodes: list[Node] = []
    with Store(tmp_path / "a") as store_a, Store(tmp_path / "b") as store_b:
        for node, store in ((f"{name}-1", store_a), (f"{name}-2", store_b)):
            nodes.append(Node(node, transport=amqp_names.connect(name=name), role="ledger",
                              registry=registry, journal=CellJournal(store),
                              system_cells=(HEARTBEATS,), watch_config=False,
                              queue_prefix=amqp_names.queue_prefix).start())
        publisher = amqp_names.connect(name=f"{name}-publisher", buffer_size=MESSAGES)
        try:
            wait_for(lambda: _sees(nodes[0], f"{name}-2", "ledger") and
                     _sees(nodes[1], f"{name}-1", "ledger"), 30,
                     what="each node to see the other alive in the role")
            yield nodes, publisher
        finally:
            _close(nodes, publisher)


def test_two_instances_with_separate_journals_apply_each_role_message_once(
        amqp_names: AmqpNames, tmp_path: Path, record_property: Any) -> None:
    name = f"cf-sep-{amqp_names.token}"
    ids = [f"entry-{n}" for n in range(MESSAGES)]
    with _two_instances_apart(amqp_names, tmp_path, name) as (nodes, publisher):
        _stream_with_closes(name, publisher, ids, _ledger_ids,
                            show=lambda: (len(Ledger.applied),
                                          [n.status()["counters"] for n in nodes]))
        assert publisher.stats()["resent"] == 0  # one broker message per id
        by_id = Tally(i for _, i in Ledger.applied)
        twice = [i for i, times in by_id.items() if times > 1]
        assert twice == [], f"{len(twice)} ids applied twice"
        by_node = Tally(node for node, _ in Ledger.applied)
        assert set(by_node) == {f"{name}-1", f"{name}-2"}, by_node  # both instances served
        checks = [n.siblings.counts for n in nodes]
        record_property("sibling_checks", checks)
        waited = [n.siblings.waited for n in nodes]
        decided = sum(c["duplicates"] + c["applied"] for c in checks)
        record_property("sibling_check_mean_ms",
                        round(1000 * sum(w["total"] for w in waited) / max(1, decided), 2))
        record_property("sibling_check_max_ms", round(1000 * max(w["max"] for w in waited)))


def _applied_in(files: list[Path]) -> list[str]:
    return [line for f in files if f.exists() for line in f.read_text().splitlines() if line]


def test_two_node_processes_apply_each_role_message_once_across_closed_connections(
        amqp_names: AmqpNames, tmp_path: Path) -> None:
    name = f"cf-proc-{amqp_names.token}"
    amqp_names.queue("role.ledger")  # the role's durable queue goes with the test
    ids = [f"entry-{n}" for n in range(MESSAGES)]
    nodes = ("proc-a", "proc-b")
    files = [tmp_path / f"{node}.applied" for node in nodes]
    logs = [tmp_path / f"{node}.log" for node in nodes]
    processes = [subprocess.Popen(
        [sys.executable, "-m", "tests.ledger_node", node, str(tmp_path / node), str(applied),
         amqp_names.url, amqp_names.token, name], stdout=log.open("wb"),
        stderr=subprocess.STDOUT, env=child_env())
        for node, applied, log in zip(nodes, files, logs, strict=True)]
    publisher = amqp_names.connect(name=f"{name}-publisher", buffer_size=MESSAGES)
    try:
        for node, other, log in ((nodes[0], nodes[1], logs[0]), (nodes[1], nodes[0], logs[1])):
            wait_for(lambda node=node, other=other, log=log:
                     f"{node}: up member={other} role=ledger" in log.read_text(), 60,
                     what=f"{node} to see {other} alive in the role",
                     show=lambda log=log: log.read_text()[-2000:])
        _stream_with_closes(name, publisher, ids, lambda: _applied_in(files))
        assert publisher.stats()["resent"] == 0  # one broker message per id
        twice = [i for i, times in Tally(_applied_in(files)).items() if times > 1]
        assert twice == [], f"{len(twice)} ids applied twice"
        assert all(f.read_text() for f in files), "both instances served"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)
        publisher.close()


STEP_DOWNS = (300, 700, 1100)  # applied messages at which the first instance steps down
STEP_PACE = 1000  # a faster stream: more applied and not yet acknowledged at each step down


def test_an_instance_stepping_down_mid_stream_leaves_nothing_applied_to_be_applied_again(
        amqp_names: AmqpNames, tmp_path: Path) -> None:
    """Stepping down from a role (a spare again, not stopping) closes the role consumer: what
    its durable cell applied but had not acknowledged went back to the role queue, and the
    other instance applied it again. The node now waits for those acknowledgements first."""
    name = f"cf-step-{amqp_names.token}"
    ids = [f"entry-{n}" for n in range(MESSAGES)]
    with _two_instances_apart(amqp_names, tmp_path, name) as (nodes, publisher):
        stream = threading.Thread(target=_publish_paced, args=(publisher, ids, STEP_PACE),
                                  daemon=True)
        stream.start()
        for at in STEP_DOWNS:
            wait_for(lambda at=at: len(Ledger.applied) >= at, 60,
                     what=f"{at} messages applied", show=lambda: len(Ledger.applied))
            nodes[0].differentiate(None)
            wait_for(lambda at=at: len(Ledger.applied) >= at + 100, 60,
                     what=f"{at + 100} messages applied with the first instance a spare",
                     show=lambda: len(Ledger.applied))
            nodes[0].differentiate("ledger")
        stream.join(60)
        assert publisher.flush(60), "the broker confirmed every message"
        wait_for(lambda: len(set(_ledger_ids())) == len(ids), 90,
                 what=f"all {len(ids)} ids applied",
                 show=lambda: (len(Ledger.applied), [n.status()["counters"] for n in nodes]))
        twice = [i for i, times in Tally(_ledger_ids()).items() if times > 1]
        assert twice == [], f"{len(twice)} ids applied twice: {twice[:5]}"
        # Nothing the first applied came back: the second never had to ask and hear "applied"
        # (it did, 3 times in 20 redeliveries, and had membership already said the first had
        # left, it would have applied them again).
        assert nodes[1].siblings.counts["duplicates"] == 0, nodes[1].siblings.counts
        assert {node for node, _ in Ledger.applied} == {f"{name}-1", f"{name}-2"}
