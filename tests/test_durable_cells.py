"""A durable cell keeps its state, fields and applied ids in the store: a restarted cell, or
the node that takes its role, resumes them and applies no message twice."""

from __future__ import annotations

import functools
import json
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from cellframe import Envelope, RoleRegistry, transition
from cellframe.cell.cell import RECORD_GROUP, Inbound
from cellframe.cell.durable import CellJournal
from cellframe.errors import ConfigError, StoreError
from cellframe.node.supervisor import SupervisionPolicy
from cellframe.store.store import Store
from cellframe.testing import wait_for
from tests.cell_support import message
from tests.durable_node import DurableCounter


class Counter(DurableCounter):
    """The durable counter of ``tests.durable_node``; crashes (SystemExit) on (die)."""

    @transition("die")
    def die(self) -> None:
        self.count += 1000  # rolled back: the crash leaves the count as it was
        raise SystemExit("asked to")


def _registry() -> RoleRegistry:
    return RoleRegistry({"counter": [Counter]})


def _count(node: Any) -> int:
    cells = node.cells()
    return next(iter(cells.values())).count if cells else -1


def test_durable_cell_without_a_store_is_refused_at_start(wire) -> None:
    with pytest.raises(ConfigError, match="Counter is durable.*no store"):
        wire.node("d0", "counter", registry=_registry())


def test_restarted_instance_resumes_count_and_ignores_ids_it_applied(tmp_path: Path) -> None:
    with Store(tmp_path / "s") as store:
        journal = CellJournal(store)
        first = Counter.start("c", journal=journal)
        for number in range(5):
            first.tell(message("(inc)", id=f"m{number}"))
        first.stop(block=True)
        second = Counter.start("c", journal=journal)
        try:
            for number in range(3, 8):  # m3 and m4 again: applied already
                second.tell(message("(inc)", id=f"m{number}"))
            assert second.proxy().count.get(timeout=10) == 8
            assert second.proxy().cell_counters.get(timeout=10).duplicates == 2
        finally:
            second.stop()


def test_durable_cell_keeps_its_count_across_a_crash_and_restart(wire, tmp_path: Path) -> None:
    with Store(tmp_path / "s") as store:
        node = wire.node("d1", "counter", registry=_registry(), journal=CellJournal(store),
                         supervision=SupervisionPolicy(backoff=0.01))
        client = wire.client()
        for _ in range(3):
            client.send("role.counter", "(inc)")
        client.send("role.counter", "(die)")
        client.send("role.counter", "(inc)")
        wait_for(lambda: _count(node) == 4 and node.status()["counters"]["restarts"] == 1, 15,
                 what="count 4 after one restart", show=lambda: node.status())
        node.stop()


def test_role_taken_over_after_a_lost_node_applies_each_distinct_message_once(
        wire, tmp_path: Path) -> None:
    """Messages sent 1 to 3 times under the same id; the first node's connection is dropped
    mid-stream (its unacknowledged deliveries go back to the queue) and another node opens
    the same store and takes the role."""
    if wire.kind != "amqp":
        pytest.skip("redelivery after a dropped connection is the broker's")
    rng = random.Random(14)
    ids = [f"inc-{n}" for n in range(2000)]
    sends = [i for i in ids for _ in range(rng.randint(1, 3))]
    rng.shuffle(sends)
    store = Store(tmp_path / "s")
    first = wire.node("d2", "counter", registry=_registry(), journal=CellJournal(store))
    publisher = wire.connect()
    for message_id in sends[: len(sends) // 2]:
        publisher.publish("role.counter", Envelope(b"(inc)", message_id=message_id),
                          persistent=True)
    assert publisher.flush(30)
    wait_for(lambda: _count(first) > 200, 15, what="the first node counting",
             show=lambda: first.status())
    lost = next(iter(first.cells().values()))
    first.transport.close()  # the node is lost: whatever it did not acknowledge is requeued
    first.stop()
    store.close()
    with Store(tmp_path / "s") as store:
        second = wire.node("d3", "counter", registry=_registry(), journal=CellJournal(store))
        for message_id in sends[len(sends) // 2:]:
            publisher.publish("role.counter", Envelope(b"(inc)", message_id=message_id),
                              persistent=True)
        assert publisher.flush(30)
        wait_for(lambda: _count(second) == len(ids), 60,
                 what=f"a count of {len(ids)} distinct messages", show=lambda: second.status())
        spare = next(iter(second.cells().values()))
        assert lost.cell_counters.applied + spare.cell_counters.applied == len(ids)
        assert lost.cell_counters.applied > 0 and spare.cell_counters.duplicates > 0
        second.stop()


def test_recovery_reads_the_newest_snapshot_and_the_records_after_it(tmp_path: Path) -> None:
    with Store(tmp_path / "s") as store:
        journal = CellJournal(store, snapshot_every=4)
        first = Counter.start("c", journal=journal)
        for number in range(10):  # one at a time: a record each
            first.ask(message("(inc)", id=f"m{number}"))
        first.stop(block=True)
    with Store(tmp_path / "s") as store:
        assert len(store.select_history("cell/counter/counter/snapshot")) == 2  # after m3, m7
        state, fields, ids = CellJournal(store, snapshot_every=4).recover("cell/counter/counter", 100)
        assert (state, fields, ids) == ("ready", {"count": 10}, [f"m{n}" for n in range(10)])


def test_messages_applied_back_to_back_share_a_record_and_recover_as_one_by_one(
        tmp_path: Path) -> None:
    """While more messages wait in its mailbox, a durable cell records them together: fewer
    records than messages, each settled once its group is durable, and a recovery that
    gives the same state and ids as a record a message would."""
    Holding.gate.clear()
    settled: list[str] = []
    sent = [f"m{number}" for number in range(300)]
    with Store(tmp_path / "s") as store:
        cell = Holding.start("c", journal=CellJournal(store, snapshot_every=50))
        family = CellJournal.family_for("c", Holding.role, "Holding")
        cell.tell(message("(hold)", id="hold"))  # the mailbox fills behind it
        for message_id in sent:
            cell.tell(Inbound(message("(inc)", id=message_id),
                              functools.partial(settled.append, message_id)))
        Holding.gate.set()
        wait_for(lambda: len(settled) == len(sent), 20, what="every message settled",
                 show=lambda: len(settled))
        cell.stop(block=True)
    with Store(tmp_path / "s") as store:
        groups = [json.loads(r.value)["ids"] for r in store.select_history(family)]
        assert [i for group in groups for i in group] == ["hold", *sent]
        assert len(groups) < len(sent) // 4, f"{len(groups)} records"
        assert max(len(group) for group in groups) <= RECORD_GROUP
        state, fields, ids = CellJournal(store, snapshot_every=50).recover(family, 1000)
        assert (state, fields, ids) == ("ready", {"count": 300}, ["hold", *sent])


class Holding(Counter):
    """A durable counter whose (hold) waits for the test: messages queue up behind it, and
    whose (spoil) leaves a field that cannot be recorded."""

    gate = threading.Event()

    @transition("hold")
    def hold(self) -> None:
        assert self.gate.wait(20), "the test never opened the gate"

    @transition("spoil")
    def spoil(self) -> None:
        self.count = {"not", "json"}


def test_a_group_that_cannot_be_recorded_is_given_back_and_forgotten(tmp_path: Path) -> None:
    """A field that is not JSON fails the record of its whole group: every delivery in it is
    given back to its queue, no instance of the role counts them as applied, and the cell
    dies (its supervisor restarts it from what was recorded)."""
    Holding.gate.clear()
    outcomes: list[tuple[str, str]] = []

    def inbound(text: str, message_id: str) -> Inbound:
        return Inbound(message(text, id=message_id),
                       settle=lambda: outcomes.append((message_id, "settled")),
                       refuse=lambda reason, requeue: outcomes.append(
                           (message_id, f"requeued: {reason}" if requeue else reason)))

    with Store(tmp_path / "s") as store:
        journal = CellJournal(store)
        cell = Holding.start("c", journal=journal)
        cell.tell(message("(hold)", id="hold"))
        for text, message_id in (("(inc)", "m1"), ("(inc)", "m2"), ("(spoil)", "spoil")):
            cell.tell(inbound(text, message_id))
        Holding.gate.set()
        wait_for(lambda: not cell.is_alive(), 20, what="the cell to die on its record")
        assert [i for i, _ in outcomes] == ["m1", "m2", "spoil"]
        assert all(o.startswith("requeued: c: not recorded: ") and "JSON" in o
                   for _, o in outcomes), outcomes
        family = CellJournal.family_for("c", Holding.role, "Holding")
        assert not any(journal.claimed(family, i) for i in ("m1", "spoil", "m2"))
        again = Holding.start("c", journal=journal)
        try:
            assert again.proxy().count.get(timeout=10) == 0
        finally:
            again.stop()


def test_an_audited_message_to_a_durable_cell_is_reported_applied_then_duplicate(
        tmp_path: Path) -> None:
    from cellframe.cell.cell import Inbound

    reports: list[tuple[str, str]] = []
    settled: list[str] = []
    with Store(tmp_path / "s") as store:
        cell = Counter.start("c", journal=CellJournal(store))
        try:
            for _ in range(2):  # the same id twice: the second is a duplicate
                inbound = Inbound(message("(inc)", id="op-1"), lambda: settled.append("op-1"),
                                  report=lambda c, o: reports.append((c, o)))
                cell.tell(inbound)
            wait_for(lambda: len(settled) == 2, 20, what="both settled", show=lambda: reports)
        finally:
            cell.stop()
    # The duplicate may be settled first: the first copy waits for its record to be durable.
    assert sorted(reports) == [("c", "applied"), ("c", "duplicate")]


def test_a_crash_in_a_group_keeps_what_the_cell_applied_before_it(tmp_path: Path) -> None:
    """Messages applied while more waited are recorded before the cell dies on a later one:
    their deliveries are settled, and the cell that starts next counts them, once."""
    Holding.gate.clear()
    settled: list[str] = []
    before = [f"m{number}" for number in range(10)]
    with Store(tmp_path / "s") as store:
        journal = CellJournal(store)
        cell = Holding.start("c", journal=journal)
        cell.tell(message("(hold)", id="hold"))
        for message_id in [*before, "die", "after"]:
            cell.tell(Inbound(message("(die)" if message_id == "die" else "(inc)", id=message_id),
                              functools.partial(settled.append, message_id)))
        Holding.gate.set()
        wait_for(lambda: not cell.is_alive(), 20, what="the cell to die on (die)")
        wait_for(lambda: settled == before, 20, what="the ten before the crash settled",
                 show=lambda: settled)
        again = Holding.start("c", journal=journal)
        try:
            assert again.proxy().count.get(timeout=10) == 10
            assert again.proxy().cell_applied("m9").get(timeout=5)
            assert not again.proxy().cell_applied("after").get(timeout=5)
        finally:
            again.stop()


class HeldStore:
    """A Store whose records wait for the test: ``complete(n, error)`` makes the n-th durable
    (written to the real store, then its call-back) or fails it (dropped, call-back with
    ``error``): what a shard tier does when one record times out and the next gets through."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.held: list[tuple[str, bytes, Any, int | None]] = []
        self.select, self.select_history = store.select, store.select_history

    def insert_nowait(self, family: str, value: bytes, callback: Any = None, *,
                      time: int | None = None) -> None:
        if "/snapshot" in family:
            self.store.insert_nowait(family, value, callback, time=time)
        else:
            self.held.append((family, value, callback, time))

    def complete(self, n: int, error: BaseException | None = None) -> None:
        family, value, callback, when = self.held[n]
        if error is None:
            self.store.insert(family, value, time=when)  # durable when it returns
        callback(None, error)


def test_a_record_that_fails_after_a_later_one_is_durable_loses_nothing(tmp_path: Path) -> None:
    """A record names the ids of the earlier records not yet durable: once it is durable,
    their deliveries are settled too, whatever became of their own records."""
    outcomes: list[tuple[str, str]] = []
    with Store(tmp_path / "s") as store:
        held = HeldStore(store)
        cell = Counter.start("c", journal=CellJournal(held))
        try:
            for number, message_id in enumerate(("m0", "m1")):
                cell.tell(Inbound(message("(inc)", id=message_id),
                                  functools.partial(outcomes.append, (message_id, "settled"))))
                wait_for(lambda number=number: len(held.held) > number, 10,
                         what=f"the record of {message_id}")
            held.complete(1)  # the later one: it names m0 too
            held.complete(0, StoreError("only 1 of 2 copies were durable"))
            assert sorted(outcomes) == [("m0", "settled"), ("m1", "settled")]
            assert cell.is_alive() and cell.proxy().count.get(timeout=10) == 2
        finally:
            cell.stop()
        state, fields, ids = CellJournal(store).recover("cell/counter/counter", 100)
        assert (fields, ids) == ({"count": 2}, ["m0", "m1"])


def test_a_cell_whose_last_record_failed_gives_its_messages_back_and_recovers(
        tmp_path: Path) -> None:
    """A record failed after the cell went on, with no later record to name its ids: its
    messages go back to their queue, and the cell dies rather than go on from a state its
    journal does not hold; the next one counts each message once."""
    outcomes: list[tuple[str, str]] = []
    with Store(tmp_path / "s") as store:
        held = HeldStore(store)
        journal = CellJournal(held)
        cell = Counter.start("c", journal=journal)
        cell.tell(Inbound(message("(inc)", id="m0"),
                          functools.partial(outcomes.append, ("m0", "settled"))))
        wait_for(lambda: len(held.held) == 1, 10, what="the record of m0")
        held.complete(0)
        cell.tell(Inbound(message("(inc)", id="m1"),
                          functools.partial(outcomes.append, ("m1", "settled")),
                          lambda reason, requeue: outcomes.append(("m1", f"requeue={requeue}"))))
        wait_for(lambda: len(held.held) == 2, 10, what="the record of m1")
        held.complete(1, StoreError("no shard cell answered within 10 s"))
        wait_for(lambda: not cell.is_alive(), 10, what="the cell to die")
        assert outcomes == [("m0", "settled"), ("m1", "requeue=True")]
        again = Counter.start("c", journal=journal)
        try:
            assert again.proxy().count.get(timeout=10) == 1  # m0 only: m1 comes again
            again.tell(Inbound(message("(inc)", id="m1"),
                               functools.partial(outcomes.append, ("m1", "settled"))))
            wait_for(lambda: len(held.held) == 3, 10, what="the record of m1, again")
            held.complete(2)
            assert again.proxy().count.get(timeout=10) == 2
        finally:
            again.stop()


class RefusingStore:
    """A Store that refuses at once (as a closed store, or a record too large for the shard
    tier) every record naming ``refused`` among its ids."""

    def __init__(self, store: Store, refused: str) -> None:
        self.store, self.refused = store, refused
        self.select, self.select_history = store.select, store.select_history

    def insert_nowait(self, family: str, value: bytes, callback: Any = None, *,
                      time: int | None = None) -> Any:
        if self.refused in json.loads(value).get("ids", []):
            raise StoreError("refused at once")
        return self.store.insert_nowait(family, value, callback, time=time)


def test_a_record_refused_at_once_leaves_no_id_for_a_later_snapshot_to_name(
        tmp_path: Path) -> None:
    """A snapshot names the ids recorded: one whose record was refused was never recorded,
    and a snapshot naming it would make a recovery drop its copy given back to the queue."""
    with Store(tmp_path / "s") as store:
        journal = CellJournal(RefusingStore(store, "m2"), snapshot_every=4)
        done: list[BaseException | None] = []
        for n in range(6):
            try:
                journal.record("cell/c", [f"m{n}"], "ready", {"count": n}, done.append)
            except StoreError:
                assert n == 2
        wait_for(lambda: len(done) == 5, 10, what="five records durable")
        snapshot = json.loads(store.select("cell/c/snapshot").value)
        assert "m2" not in snapshot["ids"] and "m4" in snapshot["ids"]
