"""Adversarial tests of durable cells journaling on the shard tier (``ShardStore``,
``CellJournal``): malformed answers on the journal's reply queue, and records or snapshot
chunks the client-side bound lets through but a shard cell refuses."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cellframe.cell.cell import Inbound
from cellframe.cell.durable import CellJournal
from cellframe.config.resolvers import ZoneFileResolver
from cellframe.errors import ConfigError, StoreError
from cellframe.language.reader import read
from cellframe.node.shard_journal import ShardStore
from cellframe.roles.registry import RoleRegistry
from cellframe.testing import wait_for
from cellframe.transports.base import Delivery, Transport
from cellframe.wire.envelope import envelope_for
from tests.cell_support import message
from tests.durable_node import DurableCounter
from tests.node_support import Wire
from tests.replication_support import shard_cluster

FAKE_SHARD = "role.fake-shard"


@pytest.fixture
def fake_shard() -> Iterator[tuple[Wire, Callable[[str], None]]]:
    """An in-process broker and a stand-in shard cell on ``FAKE_SHARD`` that answers every
    request with the reply text it is given (``{request}`` replaced by the request's id)."""
    wire = Wire.in_process()
    answer = ["(error :request \"{request}\" :reason \"unset\")"]
    transport: Transport = wire.connect()
    transport.declare_queue(FAKE_SHARD)
    transport.bind(FAKE_SHARD, FAKE_SHARD)

    def handle(delivery: Delivery) -> None:
        envelope = delivery.envelope
        expr = read(envelope.body)
        request = expr[-1]  # ShardStore puts ``:request R`` last
        reply = read(answer[0].replace("{request}", str(request)))
        transport.publish(envelope.reply_to, envelope_for(reply, sender="fake-shard",
                                                          target=envelope.reply_to))
        delivery.ack()

    transport.consume(FAKE_SHARD, handle)
    try:
        yield wire, lambda text: answer.__setitem__(0, text)
    finally:
        wire.close()


@pytest.mark.parametrize("versions", [
    '((:value "{}"))',  # a version with no :time
    '((:time "soon" :value "{}"))',  # a time that is not a number
], ids=["no-time", "text-time"])
def test_a_malformed_history_answer_fails_a_refresh_with_a_store_error(
        fake_shard: tuple[Wire, Callable[[str], None]], versions: str) -> None:
    """A durable cell refreshes (reads its role's records) before a redelivered or resent
    message, and gives the delivery back on a ``CellframeError``. Any other exception escapes
    ``on_receive``: the cell crashes, and the delivery it was handling is never settled (no
    ``_cell_crash`` names it). A malformed answer on the reply queue must be a StoreError."""
    wire, answer_with = fake_shard
    answer_with(f'(history-selected :request "{{request}}" :versions (quote {versions}))')
    store = ShardStore(wire.connect(), target=FAKE_SHARD, timeout=2.0, patience=0.5)
    try:
        with pytest.raises(StoreError):
            CellJournal(store).refresh("cell/counter/durablecounter")
    finally:
        store.close()


@pytest.fixture
def shard_tier(tmp_path: Path) -> Iterator[Any]:
    with shard_cluster(tmp_path) as cluster:
        yield cluster


def _insert(store: ShardStore, family: str, value: bytes, when: int) -> BaseException | None:
    done = threading.Event()
    outcome: list[BaseException | None] = []

    def answered(fields: Any, error: BaseException | None) -> None:
        outcome.append(error)
        done.set()

    store.insert_nowait(family, value, answered, time=when)
    assert done.wait(30), "no answer"
    return outcome[0]


def test_a_record_the_shard_store_sends_is_one_a_shard_cell_takes(shard_tier: Any) -> None:
    """A shard cell counts a record as a message writes it, every quote and backslash escaped
    twice: a JSON record made mostly of short strings is far larger there than as JSON.
    ``ShardStore`` measures it the same way, so it refuses at once what a shard cell would
    refuse (a durable cell then gives the group back at once), and sends only what a shard
    cell takes: no refusal comes back later, as a lost record."""
    store = ShardStore(shard_tier.broker.connect(name="journal"))
    try:
        def record(tags: int) -> bytes:
            return json.dumps({"ids": ["m1"], "state": "ready", "fields": {"tags": ["a"] * tags}},
                              separators=(",", ":")).encode()

        assert len(record(4000)) < 20 * 1024  # small as JSON...
        with pytest.raises(StoreError, match="as a shard cell counts it"):
            _insert(store, "cell/tags/tagger", record(4000), 1_000)  # ...but not on the wire
        assert _insert(store, "cell/tags/tagger", record(2000), 1_001) is None  # taken
    finally:
        store.close()


def test_a_snapshot_is_written_after_message_ids_that_need_escaping(shard_tier: Any) -> None:
    """Ids that need escaping (quotes; non-ASCII is written ``\\uXXXX``) still let snapshots
    be written: chunks are cut by what the ids cost on the wire (``id_cost``), and a chunk
    refused at once ends its own snapshot, not every later one. (Before: chunks cut by the
    ids' length went over the bound, the refusal was only logged, and the family took no
    snapshot again: recovery read an ever longer tail.)"""
    family = "cell/quoted/durablecounter"
    store = ShardStore(shard_tier.broker.connect(name="journal"))
    reader = ShardStore(shard_tier.broker.connect(name="reader"))
    try:
        journal = CellJournal(store, snapshot_every=12)
        outcomes: list[BaseException | None] = []
        hostile = [f"{n:02d}" + '"' * 998 for n in range(12)]  # legal ids, 1,000 characters
        plain = [f"plain-{n}" for n in range(24)]
        for count, message_id in enumerate(hostile + plain, 1):
            journal.record(family, [message_id], "ready", {"count": count}, outcomes.append)
            wait_for(lambda count=count: len(outcomes) == count, 30, what="a record durable")
        assert outcomes == [None] * len(outcomes)

        def head() -> dict[str, Any]:
            found = reader.select(family + "/snapshot")
            return json.loads(found.value) if found is not None else {}

        wait_for(lambda: head().get("fields") == {"count": 36}, 20,
                 what="the snapshot after the plain ids", show=head)
    finally:
        store.close()
        reader.close()


def test_a_group_of_ids_a_durable_cell_may_form_is_a_record_the_shard_tier_takes(
        shard_tier: Any) -> None:
    """Ids of 1,024 quotes (legal, from any sender) cost a record some 8 KiB each on the wire:
    a durable cell's groups are cut by that cost (``id_cost``), not by the ids' length, so
    eight of them back to back are recorded, none refused (before: one group of all eight,
    65 KiB at the shard cell, refused, the cell crashing on it again and again)."""
    store = ShardStore(shard_tier.broker.connect(name="journal"))
    ids = [f"{n}" + '"' * 1_023 for n in range(8)]
    settled: list[str] = []
    cell = DurableCounter.start("quoted", journal=CellJournal(store))
    try:
        for message_id in ids:
            cell.tell(Inbound(message("(inc)", id=message_id),
                              functools.partial(settled.append, message_id)))
        wait_for(lambda: len(settled) == len(ids), 30, what="all eight recorded and settled",
                 show=lambda: len(settled))
        assert cell.is_alive() and cell.proxy().count.get(timeout=10) == len(ids)
    finally:
        cell.stop()
        store.close()


class _ClusterRecordMissingAtFirst(ZoneFileResolver):
    """A zone whose ``_cluster`` lookup fails (a DNS time-out, a zone half-way through an
    update) until ``failing`` is set False."""

    failing = True

    def cluster_intent(self) -> Any:
        if self.failing:
            raise ConfigError("_cluster.cluster.test.: no TXT records: no cluster intent")
        return super().cluster_intent()


def test_a_spare_told_durable_journal_shards_can_take_a_durable_role_after_a_failed_lookup(
        tmp_path: Path) -> None:
    """A spare that started while ``_cluster`` did not answer makes its journal when it is
    told to take a durable role, once DNS answers again. (Before: ``durable.journal`` was
    read once, at start, and its durable cell could not start, 'given no store for its
    state', until an operator restarted the spare.)"""
    zone = _zone_with_journal(tmp_path / "cluster.zone")
    registry = RoleRegistry({"counter": [DurableCounter]})
    wire = Wire.in_process()
    try:
        resolver = _ClusterRecordMissingAtFirst(zone)
        spare = wire.node("spare-01", resolver=resolver, registry=registry)
        resolver.failing = False  # DNS answers again, a moment after the spare started
        assert resolver.cluster_intent().settings.get("durable.journal") == "shards"
        spare.differentiate("counter")  # the failover: raises ConfigError
        assert isinstance(next(iter(spare.cells().values())), DurableCounter)
    finally:
        wire.close()


def _zone_with_journal(path: Path) -> Path:
    path.write_text("""$ORIGIN cluster.test.
$TTL 5
@           IN SOA  ns.cluster.test. hostmaster.cluster.test. ( 1 60 30 600 5 )
            IN NS   ns
ns          IN A    127.0.0.1
_cluster    IN TXT  "counter=1" "durable.journal=shards"
_nodes      IN TXT  "counter-01 spare-01"
counter-01  IN TXT  "role=counter"
spare-01    IN TXT  "rack=r1"
""", encoding="utf-8")
    return path


def test_a_record_refused_when_a_snapshot_is_due_does_not_stop_later_snapshots(
        shard_tier: Any, big: bool = True) -> None:
    """A record refused at once (over the store's bound, a closed store) when a snapshot is
    due leaves the snapshot to the next record. (Before: the snapshot stayed marked as on its
    way, and the family took no snapshot on this node again, across the cell's restarts:
    recovery read an ever longer tail, and compaction then dropped ids a recovery needs.)"""
    family = "cell/big/durablecounter"
    store = ShardStore(shard_tier.broker.connect(name="journal"))
    reader = ShardStore(shard_tier.broker.connect(name="reader"))
    try:
        journal = CellJournal(store, snapshot_every=4)
        outcomes: list[BaseException | None] = []

        def record(n: int, fields: dict[str, Any]) -> None:  # one at a time, each durable
            expected = len(outcomes) + 1
            journal.record(family, [f"m{n}"], "ready", fields, outcomes.append)
            wait_for(lambda: len(outcomes) == expected, 30, what=f"record {n} durable")

        for n in range(3):
            record(n, {"count": n + 1})
        with pytest.raises(StoreError, match="at most"):  # the fourth: a snapshot is due
            record(3, {"count": 4, "blob": "x" * (30_000 if big else 3)})
        for n in range(4, 12):  # the cell restarts and goes on, with small records
            record(n, {"count": n + 1})
        assert outcomes == [None] * len(outcomes)

        def head() -> dict[str, Any]:
            found = reader.select(family + "/snapshot")
            return json.loads(found.value) if found is not None else {}

        wait_for(lambda: head().get("fields", {}).get("count", 0) >= 8, 20,
                 what="a snapshot after the refused record", show=head)
    finally:
        store.close()
        reader.close()
