"""Handoff: resumable transfers from durable checkpoints, within one bandwidth budget."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from cellframe.store import (
    Checkpoints,
    HandoffReceiver,
    HandoffSender,
    Store,
    TokenBucket,
    run_transfer,
)
from cellframe.store.handoff import HandoffBatch, parse_transfer_key, record_bytes, transfer_key
from cellframe.testing import FakeClock
from tests.store_support import read_lines_until, spawn_python

PARTS = 8
PARTITION = 3


def family_in(partition: int, count: int) -> list[str]:
    from cellframe.store import partition_of
    return [f for f in (f"f{i}" for i in range(10_000))
            if partition_of(f, PARTS) == partition][:count]


def filled_source(path: Path, n: int = 300) -> Store:
    source = Store(path, partitions=PARTS, fsync=False, shard=1)
    families = family_in(PARTITION, 10)
    for i in range(n):
        source.insert(families[i % 10], b"payload %d " % i * 20, time=i)
    return source


def digests(store: Store) -> list[bytes]:
    return [r.digest for r in store.records_since(PARTITION, 0, 10**6)]


def test_token_bucket_allows_a_burst_then_paces_to_the_rate(fake_clock: FakeClock) -> None:
    bucket = TokenBucket(1000, burst=500, clock=fake_clock, sleep=fake_clock.sleep)
    assert bucket.reserve(500) == 0.0
    assert bucket.reserve(250) == pytest.approx(0.25)
    fake_clock.advance(0.25)
    assert bucket.reserve(100) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_one_budget_shared_by_two_transfers_caps_their_total_rate(tmp_path: Path,
                                                                    fake_clock: FakeClock) -> None:
    budget = TokenBucket(50_000, burst=10_000, clock=fake_clock, sleep=fake_clock.sleep)
    source = filled_source(tmp_path / "src")
    targets = [Store(tmp_path / f"t{i}", partitions=PARTS, fsync=False, shard=2 + i)
               for i in range(2)]
    checkpoints = Checkpoints(tmp_path / "checkpoints")
    try:
        moved = sum(run_transfer(source, t, PARTITION, checkpoints, budget=budget,
                                 batch_bytes=4096).nbytes for t in targets)
        # everything beyond the burst was paid for in time at the budget's rate
        assert fake_clock.slept == pytest.approx((moved - 10_000) / 50_000, rel=0.01)
    finally:
        for s in (source, *targets):
            s.close()
        checkpoints.close()


def test_checkpoints_are_durable_and_survive_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "cp"
    cp = Checkpoints(path)
    cp.set("a", 5)
    cp.set("b", 7)
    cp.set("a", 9)
    cp.close()
    with open(path, "ab") as f:
        f.write(b"a 12 0000")  # a crash in the middle of a write
    again = Checkpoints(path)
    assert again.get("a") == 9 and again.get("b") == 7 and again.get("missing") == 0
    again.forget("b")
    again.close()
    assert Checkpoints(path).get("b") == 0
    with pytest.raises(ValueError):
        Checkpoints(tmp_path / "other").set("has space", 1)


def test_checkpoint_file_is_rewritten_when_it_grows(tmp_path: Path) -> None:
    cp = Checkpoints(tmp_path / "cp")
    for i in range(1500):
        cp.set("k", i)
    cp.close()
    assert (tmp_path / "cp").read_bytes().count(b"\n") < 1000
    assert Checkpoints(tmp_path / "cp").get("k") == 1499


def test_a_transfer_copies_the_partition_in_order(tmp_path: Path) -> None:
    source = filled_source(tmp_path / "src")
    target = Store(tmp_path / "dst", partitions=PARTS, fsync=False, shard=2)
    cp = Checkpoints(tmp_path / "cp")
    try:
        result = run_transfer(source, target, PARTITION, cp, batch_bytes=2048)
        assert digests(target) == digests(source)
        assert result.records == 300 and result.position == source.last_position(PARTITION)
        assert result.batches > 10
        assert cp.get(transfer_key(PARTITION, 1, 2)) == result.position
        again = run_transfer(source, target, PARTITION, cp)
        assert again.records == 0  # caught up: nothing resent
    finally:
        source.close()
        target.close()
        cp.close()


class CrashAfter(HandoffReceiver):
    """A receiver that dies after ``limit`` batches, before or after checkpointing."""

    limit = 0
    before_checkpoint = False

    def receive(self, batch: HandoffBatch) -> int:
        if CrashAfter.limit == 0:
            if CrashAfter.before_checkpoint:
                self.store.apply_many(batch.records)  # applied, but the checkpoint is lost
            raise RuntimeError("simulated crash")
        CrashAfter.limit -= 1
        return super().receive(batch)


@pytest.mark.parametrize("before_checkpoint", [False, True])
def test_an_interrupted_transfer_resumes_without_gaps_or_duplicates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before_checkpoint: bool) -> None:
    source = filled_source(tmp_path / "src")
    target = Store(tmp_path / "dst", partitions=PARTS, fsync=False, shard=2)
    monkeypatch.setattr(CrashAfter, "limit", 10)
    monkeypatch.setattr(CrashAfter, "before_checkpoint", before_checkpoint)
    monkeypatch.setattr("cellframe.store.handoff.HandoffReceiver", CrashAfter)
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            run_transfer(source, target, PARTITION, Checkpoints(tmp_path / "cp"),
                         batch_bytes=2048)
        half = len(digests(target))
        assert 0 < half < 300
        monkeypatch.undo()
        cp = Checkpoints(tmp_path / "cp")  # a new process reads the durable checkpoint
        resumed_from = cp.get(transfer_key(PARTITION, 1, 2))
        result = run_transfer(source, target, PARTITION, cp, batch_bytes=2048)
        got = digests(target)
        assert got == digests(source)  # none missing, same order, none twice
        assert len(set(got)) == len(got) == 300
        # resumed at the checkpoint: at most the one unrecorded batch is sent again
        assert result.records == 300 - resumed_from
        assert result.records <= 300 - half + (30 if before_checkpoint else 0)
    finally:
        source.close()
        target.close()


def test_a_killed_receiver_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    filled_source(tmp_path / "src").close()
    child = spawn_python("""
        import sys
        from cellframe.store import Checkpoints, Store, run_transfer
        from cellframe.store.handoff import HandoffReceiver
        base = sys.argv[1]
        source = Store(base + "/src", partitions=8, shard=1)
        target = Store(base + "/dst", partitions=8, shard=2)
        original = HandoffReceiver.receive
        def receive(self, batch):
            position = original(self, batch)
            print(position, flush=True)
            return position
        HandoffReceiver.receive = receive
        run_transfer(source, target, 3, Checkpoints(base + "/cp"), batch_bytes=512)
        print("done", flush=True)
        import time
        time.sleep(60)
    """, str(tmp_path))
    try:
        recorded = int(read_lines_until(child, 8)[-1])
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    source = Store(tmp_path / "src", partitions=PARTS, shard=1)
    target = Store(tmp_path / "dst", partitions=PARTS, shard=2)
    cp = Checkpoints(tmp_path / "cp")
    try:
        assert cp.get(transfer_key(PARTITION, 1, 2)) >= recorded
        result = run_transfer(source, target, PARTITION, cp, batch_bytes=512)
        assert result.records < 300
        assert digests(target) == digests(source)
    finally:
        source.close()
        target.close()
        cp.close()


def test_sender_cuts_batches_by_bytes_and_reports_the_wait(tmp_path: Path,
                                                           fake_clock: FakeClock) -> None:
    source = filled_source(tmp_path / "src", n=50)
    try:
        budget = TokenBucket(1000, burst=1000, clock=fake_clock, sleep=fake_clock.sleep)
        sender = HandoffSender(source, PARTITION, budget=budget, batch_bytes=1000)
        batch, wait = sender.next_batch(0)
        assert batch is not None and batch.nbytes <= 1000 and wait == 0.0
        assert batch.nbytes == sum(record_bytes(r) for r in batch.records)
        second, wait = sender.next_batch(batch.last)
        assert second is not None and second.records[0].sequence == batch.last + 1
        assert wait == pytest.approx((batch.nbytes + second.nbytes - 1000) / 1000)
        assert sender.next_batch(source.last_position(PARTITION)) == (None, 0.0)
    finally:
        source.close()


def test_sender_batches_are_the_same_prefix_however_the_partition_is_read(tmp_path: Path) -> None:
    source = filled_source(tmp_path / "src", n=300)  # records of about 180 bytes
    try:
        stream = source.records_since(PARTITION, 0, 10**6)
        for batch_bytes, batch_records in ((10**9, 100), (9_000, 1000), (10**9, 1000), (1, 5)):
            sender = HandoffSender(source, PARTITION, batch_bytes=batch_bytes,
                                   batch_records=batch_records)
            batch, _ = sender.next_batch(7)
            assert batch is not None and batch.records[0] == stream[7]
            assert list(batch.records) == stream[7:7 + len(batch.records)]
            taken = len(batch.records)
            assert taken <= batch_records
            assert batch.nbytes <= batch_bytes or taken == 1  # one record at least
            # cut only where the count, the partition or the bytes say so
            assert taken == batch_records or taken == len(stream) - 7 or \
                batch.nbytes + record_bytes(stream[7 + taken]) > batch_bytes
    finally:
        source.close()


def test_checkpoints_update_many_keys_and_forget_others_in_one_durable_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cp"
    cp = Checkpoints(path)
    cp.set("old", 3)
    cp.update({"a": 5, "b": 7}, forget=["old"])
    assert (cp.get("a"), cp.get("b"), cp.get("old")) == (5, 7, 0)
    with pytest.raises(ValueError):
        cp.update({"c": 1, "has space": 2})
    cp.update({})  # nothing to write
    cp.close()
    again = Checkpoints(path)
    assert (again.get("a"), again.get("b"), again.get("old"), again.get("c")) == (5, 7, 0, 0)
    again.close()
    assert path.read_bytes().count(b"\n") == 4  # set, two positions and a forget: no more


def test_checkpoint_keys_list_what_is_recorded_and_transfer_keys_read_back(
        tmp_path: Path) -> None:
    checkpoints = Checkpoints(tmp_path / "cp")
    checkpoints.update({transfer_key(7, 1, 4): 10, transfer_key(12, 2, 4): 5})
    checkpoints.forget(transfer_key(7, 1, 4))
    assert checkpoints.keys() == [transfer_key(12, 2, 4)]
    checkpoints.close()
    assert Checkpoints(tmp_path / "cp").keys() == [transfer_key(12, 2, 4)]
    assert parse_transfer_key(transfer_key(12, 2, 4)) == (12, 2, 4)
    assert parse_transfer_key("other-key") is None
