"""Guid leases: durable blocks, no id reissued after a restart or a crash, exhaustion."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from cellframe.errors import GuidExhaustedError, StoreError
from cellframe.store import GuidAllocator
from cellframe.store.guid import MAX_COUNTER, decode, encode
from tests.store_support import read_lines_until, spawn_python


def test_ids_increase_and_start_after_counter_zero(tmp_path: Path) -> None:
    allocator = GuidAllocator(5, tmp_path / "lease", block=3)
    ids = [allocator.allocate() for _ in range(10)]
    assert ids == [encode(5, c) for c in range(1, 11)]


def test_high_water_mark_is_recorded_before_ids_of_a_block_are_issued(tmp_path: Path) -> None:
    path = tmp_path / "lease"
    allocator = GuidAllocator(1, path, block=100)
    first = allocator.allocate()
    # a second allocator reading the file now must start past everything the first may issue
    assert GuidAllocator(1, path, block=100).allocate() > encode(1, 100)
    assert decode(first).counter == 1


def test_reopened_allocator_never_reissues_after_a_drop_without_close(tmp_path: Path) -> None:
    path = tmp_path / "lease"
    seen: list[int] = []
    for _ in range(5):
        allocator = GuidAllocator(2, path, block=8)
        new = [allocator.allocate() for _ in range(13)]  # ends in the middle of a block
        assert not seen or min(new) > max(seen)
        seen.extend(new)
        del allocator  # no close, no flush: what a crash leaves
    assert len(set(seen)) == len(seen)


def test_killed_process_mid_block_never_gets_its_ids_reissued(tmp_path: Path) -> None:
    path = tmp_path / "lease"
    child = spawn_python("""
        import sys
        from cellframe.store import GuidAllocator
        allocator = GuidAllocator(9, sys.argv[1], block=1000)
        while True:
            print(allocator.allocate(), flush=True)
    """, str(path))
    try:
        issued = [int(line) for line in read_lines_until(child, 2500)]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    reopened = GuidAllocator(9, path, block=1000)
    fresh = [reopened.allocate() for _ in range(100)]
    assert min(fresh) > max(issued)


def test_allocation_is_thread_safe(tmp_path: Path) -> None:
    allocator = GuidAllocator(4, tmp_path / "lease", block=50)
    results: list[list[int]] = [[] for _ in range(8)]

    def work(i: int) -> None:
        results[i] = [allocator.allocate() for _ in range(500)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [g for r in results for g in r]
    assert len(set(every)) == 4000
    assert all(r == sorted(r) for r in results)


def test_allocate_many_matches_single_allocations(tmp_path: Path) -> None:
    allocator = GuidAllocator(6, tmp_path / "lease", block=4)
    assert allocator.allocate_many(10) == [encode(6, c) for c in range(1, 11)]
    assert allocator.allocate() == encode(6, 11)


def test_exhausted_shard_raises_and_stays_exhausted(tmp_path: Path) -> None:
    path = tmp_path / "lease"
    allocator = GuidAllocator(7, path, block=10)
    allocator.skip_to(MAX_COUNTER - 1)
    assert [decode(allocator.allocate()).counter for _ in range(2)] == [MAX_COUNTER - 1,
                                                                         MAX_COUNTER]
    with pytest.raises(GuidExhaustedError):
        allocator.allocate()
    with pytest.raises(GuidExhaustedError):
        GuidAllocator(7, path, block=10).allocate()


def test_skip_to_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "lease"
    GuidAllocator(8, path).skip_to(1_000_000)
    assert decode(GuidAllocator(8, path).allocate()).counter >= 1_000_000


def test_lease_of_another_shard_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lease"
    GuidAllocator(1, path).allocate()
    with pytest.raises(StoreError, match="belongs to shard 1"):
        GuidAllocator(2, path)


def test_damaged_lease_file_is_an_error_not_a_reset(tmp_path: Path) -> None:
    path = tmp_path / "lease"
    GuidAllocator(1, path).allocate()
    data = bytearray(path.read_bytes())
    data[12] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged"):
        GuidAllocator(1, path)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        GuidAllocator(1 << 16, tmp_path / "a")
    with pytest.raises(ValueError):
        GuidAllocator(1, tmp_path / "b", block=0)
    assert not os.path.exists(tmp_path / "a")
