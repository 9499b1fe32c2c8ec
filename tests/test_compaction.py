"""Compaction: retention rules, unchanged selects, concurrent inserts, crash at every step."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from cellframe.store import MerkleTree, Record, Retention, Store, content_digest
from cellframe.store.compaction import STEPS, choose_kept, obsolete
from cellframe.store.merkle import EMPTY
from tests.store_support import SimulatedCrash, crash_at, log_segments

PARTS = 4
FAMILIES = [f"fam{i}" for i in range(12)]


def fill(store: Store, versions: int = 6) -> None:
    for t in range(versions):
        for f in FAMILIES:
            store.insert(f, f"{f}@{t}".encode(), time=t * 10)


def view(store: Store, times: range) -> dict[tuple[str, int | None], Record | None]:
    """What select answers for every family, newest and at each of ``times``."""
    out: dict[tuple[str, int | None], Record | None] = {}
    for f in FAMILIES:
        out[(f, None)] = store.select(f)
        for t in times:
            out[(f, t)] = store.select(f, at=t)
    return out


def test_a_retention_needs_a_rule() -> None:
    with pytest.raises(ValueError):
        Retention()
    with pytest.raises(ValueError):
        Retention(newest=-1)
    with pytest.raises(TypeError):
        Retention(since=1.5)  # type: ignore[arg-type]


def test_choose_kept_applies_each_rule_and_their_union() -> None:
    versions = [(10, 0), (20, 0), (30, 0), (40, 0)]
    assert choose_kept(versions, Retention(newest=1)) == [3]
    assert choose_kept(versions, Retention(newest=9)) == [0, 1, 2, 3]
    assert choose_kept(versions, Retention(since=25)) == [1, 2, 3]  # 20 was current at 25
    assert choose_kept(versions, Retention(since=30)) == [2, 3]
    assert choose_kept(versions, Retention(since=5)) == [0, 1, 2, 3]
    assert choose_kept(versions, Retention(since=99)) == [3]
    assert choose_kept(versions, Retention(newest=2, since=15)) == [0, 1, 2, 3]


def test_obsolete_drops_exactly_what_compacting_the_union_would_drop() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        pool = sorted(rng.sample([(t, tie) for t in range(12) for tie in range(2)], 10))
        fresh = set(rng.sample(range(len(pool)), rng.randint(0, len(pool))))
        held = [v for i, v in enumerate(pool) if i not in fresh]
        candidates = [v for i, v in enumerate(pool) if i in fresh]
        since = rng.choice([None, *range(14)])
        keep = Retention(newest=rng.randint(0 if since is not None else 1, 4), since=since)
        kept = {pool[i] for i in choose_kept(pool, keep)}
        assert obsolete(candidates, held, keep) == [v not in kept for v in candidates]


def _version(family: str, time: int) -> Record:
    value = f"{family}@{time}".encode()
    return Record(family, time, value, time, content_digest(family, time, value))


def test_retained_skips_what_the_rule_drops_given_the_store_and_the_batch(
        tmp_path: Path) -> None:
    with Store(tmp_path, partitions=PARTS, fsync=False) as s:
        s.apply_many([_version("f", t) for t in (30, 40)])
        incoming = [_version("f", t) for t in (10, 35, 40, 50)] + [_version("g", 1)]
        kept = s.retained(incoming, Retention(newest=2))
        # 10 and 35 have two newer versions (40 held, 50 arriving); 40 is held already
        assert [(r.family, r.time) for r in kept] == [("f", 40), ("f", 50), ("g", 1)]
        cut = s.retained([_version("f", t) for t in (20, 45)], Retention(since=42))
        assert [r.time for r in cut] == [45]  # 40 was current at 42: 20 is superseded
        assert s.retained(incoming, Retention(newest=9)) == incoming


def test_compact_all_stops_between_partitions_when_asked(tmp_path: Path) -> None:
    with Store(tmp_path, partitions=PARTS, fsync=False) as s:
        fill(s)
        calls: list[int] = []

        def stop() -> bool:
            calls.append(1)
            return len(calls) > 2

        assert len(s.compact_all(Retention(newest=1), stop=stop)) == 2


def test_newest_rule_keeps_select_newest_and_drops_the_rest(tmp_path: Path) -> None:
    with Store(tmp_path, partitions=PARTS, fsync=False) as s:
        fill(s)
        before = view(s, range(0))
        results = [s.compact(p, Retention(newest=1)) for p in range(PARTS)]
        assert view(s, range(0)) == before
        assert sum(r.kept for r in results) == len(FAMILIES)
        assert sum(r.dropped for r in results) == len(FAMILIES) * 5
        assert all(len(s.select_history(f)) == 1 for f in FAMILIES)


def test_since_rule_keeps_every_select_at_or_after_since(tmp_path: Path) -> None:
    with Store(tmp_path, partitions=PARTS, fsync=False) as s:
        fill(s)
        kept_range = range(25, 70)
        before = view(s, kept_range)
        for p in range(PARTS):
            s.compact(p, Retention(since=25))
        assert view(s, kept_range) == before
        assert [r.time for r in s.select_history("fam0")] == [20, 30, 40, 50]
    with Store(tmp_path, partitions=PARTS, fsync=False) as s:
        assert view(s, kept_range) == before


def test_compaction_rebuilds_the_merkle_tree_to_the_kept_records(tmp_path: Path) -> None:
    with Store(tmp_path, partitions=PARTS, fsync=False) as s:
        fill(s)
        s.compact(1, Retention(newest=2))
        kept = {r.digest for r in s.records_since(1, 0, 10**6)}
        assert s.merkle(1).root() == MerkleTree.build(kept).root()
        assert set().union(*(s.bucket(1, b) for b in range(256))) == kept


def test_inserts_continue_during_compaction_and_none_is_lost(tmp_path: Path) -> None:
    with Store(tmp_path, partitions=PARTS, fsync=False) as s:
        fill(s, versions=20)
        stop = threading.Event()
        written: list[tuple[str, int]] = []

        def writer() -> None:
            t = 1001
            while not stop.is_set() or len(written) < 50:
                f = FAMILIES[t % len(FAMILIES)]
                s.insert(f, b"late", time=t)
                written.append((f, t))
                t += 1

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            for _ in range(3):  # every late record is newer than `since`: all must stay
                for p in range(PARTS):
                    s.compact(p, Retention(since=1000))
        finally:
            stop.set()
            thread.join()
        for f, t in written:
            found = s.select(f, at=t)
            assert found is not None and found.time == t
        newest = {f: max(t for g, t in written if g == f) for f in FAMILIES}
        assert all(s.select(f).time == newest[f] for f in FAMILIES)
        assert all(s.select_history(f)[0].time == 190 for f in FAMILIES)  # current at 1000


def test_compact_all_frees_the_log_and_needs_only_the_kept_size(tmp_path: Path) -> None:
    with Store(tmp_path, partitions=PARTS, fsync=False) as s:
        fill(s, versions=30)
        before = s.stats()["bytes"]
        results = s.compact_all(Retention(newest=1))
        after = s.stats()["bytes"]
        live = sum(r.bytes_written for r in results)
        assert sum(r.segments_deleted for r in results) >= 1
        assert after < before / 10
        assert live <= after  # the compacted files are all that is left, besides the log head
    assert len(log_segments(tmp_path)) == 1


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_leaves_old_or_new_content_and_can_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    kept_range = range(40, 60)
    with Store(tmp_path, partitions=PARTS) as s:
        fill(s)
        s.compact(2, Retention(since=20))  # so an older compacted file exists to replace
        before = view(s, kept_range)
        histories = {f: s.select_history(f) for f in FAMILIES}
        with crash_at(step, monkeypatch), pytest.raises(SimulatedCrash):
            s.compact(2, Retention(since=40))
    assert not list(tmp_path.glob("*.tmp")) or step in ("written", "synced")
    with Store(tmp_path, partitions=PARTS) as s:
        assert not list(tmp_path.glob("*.tmp"))
        assert view(s, kept_range) == before
        for f in FAMILIES:
            history = [r.digest for r in s.select_history(f)]
            full = [r.digest for r in histories[f]]
            assert history == full or history == full[-2:]  # old content or new, never a mix
        s.compact(2, Retention(since=40))  # simply restartable
        assert view(s, kept_range) == before
        assert len(list(tmp_path.glob("part-00002-*.seg"))) == 1


def _families_of(store: Store, partition: int) -> list[str]:
    return [f for f in FAMILIES if store.partition_of(f) == partition]


def test_dropping_a_partition_forgets_its_records_and_leaves_the_others_intact(
        tmp_path: Path) -> None:
    with Store(tmp_path, partitions=PARTS, fsync=False) as s:
        fill(s)
        gone = _families_of(s, 2)
        assert gone  # the test means something only if partition 2 holds families
        others = {f: s.select_history(f) for f in FAMILIES if f not in gone}
        roots = {p: s.merkle(p).root() for p in range(PARTS) if p != 2}
        result = s.drop_partition(2)
        assert result.kept == 0 and result.dropped == 6 * len(gone)
        assert all(s.select(f) is None and s.select_history(f) == [] for f in gone)
        assert s.merkle(2).root() == EMPTY
        assert s.records_since(2, 0) == [] and s.holdings(2) == (0, [])
        assert 2 not in s.partitions_held()
        assert {f: s.select_history(f) for f in others} == others
        assert {p: s.merkle(p).root() for p in roots} == roots
        assert s.stats()["families"] == len(others)


def test_a_dropped_partition_stays_dropped_after_reopen_and_its_sequence_goes_on(
        tmp_path: Path) -> None:
    with Store(tmp_path, partitions=PARTS) as s:
        fill(s)
        last = s.last_position(2)
        s.drop_partition(2)
    with Store(tmp_path, partitions=PARTS) as s:
        family = _families_of(s, 2)[0]
        assert s.select(family) is None and s.last_position(2) == 0
        assert s.insert(family, b"again", time=999).sequence > last  # never reused
    with Store(tmp_path, partitions=PARTS) as s:
        assert [r.value for r in s.select_history(family)] == [b"again"]


def test_a_drop_keeps_the_records_that_arrived_after_the_sequence_it_was_given(
        tmp_path: Path) -> None:
    with Store(tmp_path, partitions=PARTS, fsync=False) as s:
        fill(s)
        family = _families_of(s, 2)[0]
        upto, digests = s.holdings(2)
        assert upto == s.last_position(2) and len(digests) == 6 * len(_families_of(s, 2))
        late = s.insert(family, b"late", time=10_000)
        result = s.drop_partition(2, upto=upto)
        assert result.kept == 1 and result.dropped == len(digests)
        assert [r.digest for r in s.select_history(family)] == [late.digest]
        assert s.missing(2, [*digests, late.digest]) == digests


def test_a_drop_frees_the_partitions_disk(tmp_path: Path) -> None:
    with Store(tmp_path, partitions=PARTS, fsync=False, segment_bytes=8192) as s:
        fill(s, versions=40)
        assert len(log_segments(tmp_path)) > 3
        s.compact(1, Retention(since=0))  # partition 1 also has a compacted file to free
        before = s.stats()["bytes"]
        results = [s.drop_partition(p) for p in range(PARTS)]
        after = s.stats()["bytes"]
        # every sealed log segment held only records now dropped: all of them are deleted
        assert sum(r.segments_deleted for r in results) >= 3
        assert len(log_segments(tmp_path)) == 1  # the active one stays
        assert after < before / 4
        assert s.stats()["records"] == 0


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_of_a_drop_leaves_all_or_none_of_the_partition(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    with Store(tmp_path, partitions=PARTS) as s:
        fill(s)
        s.compact(2, Retention(since=20))  # so an older compacted file exists to replace
        gone = _families_of(s, 2)
        histories = {f: s.select_history(f) for f in FAMILIES}
        with crash_at(step, monkeypatch), pytest.raises(SimulatedCrash):
            s.drop_partition(2)
    with Store(tmp_path, partitions=PARTS) as s:
        assert not list(tmp_path.glob("*.tmp"))
        dropped = s.select_history(gone[0]) == []
        for f in FAMILIES:
            expected = [] if dropped and f in gone else histories[f]
            assert s.select_history(f) == expected  # old content or none, never a mix
        assert dropped == (step not in ("snapshot", "written", "synced"))
        s.drop_partition(2)  # simply restartable
        assert all(s.select(f) is None for f in gone)
        assert len(list(tmp_path.glob("part-00002-*.seg"))) == 1
