"""The 64-bit guid layout: round trips, the signed and JSON views, and shard separation."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe.errors import GuidExhaustedError
from cellframe.store import GuidAllocator
from cellframe.store.guid import (
    MAX_COUNTER,
    MAX_SHARD,
    decode,
    encode,
    from_json,
    from_signed,
    to_json,
    to_signed,
)

shards = st.integers(0, MAX_SHARD)
counters = st.integers(0, MAX_COUNTER)


@settings(deadline=None, max_examples=300)
@given(shards, counters)
def test_decode_inverts_encode(shard: int, counter: int) -> None:
    assert decode(encode(shard, counter)) == (shard, counter)


@settings(deadline=None, max_examples=300)
@given(shards, counters, shards, counters)
def test_ids_of_different_shards_never_collide(s1: int, c1: int, s2: int, c2: int) -> None:
    if s1 != s2:
        assert encode(s1, c1) != encode(s2, c2)


@settings(deadline=None, max_examples=300)
@given(shards, counters)
def test_signed_view_round_trips_and_decodes(shard: int, counter: int) -> None:
    guid = encode(shard, counter)
    signed = to_signed(guid)
    assert -(1 << 63) <= signed < 1 << 63
    assert from_signed(signed) == guid
    assert decode(signed) == (shard, counter)


@settings(deadline=None, max_examples=200)
@given(st.integers(32768, MAX_SHARD), counters)
def test_shards_from_32768_are_negative_in_the_signed_view(shard: int, counter: int) -> None:
    assert to_signed(encode(shard, counter)) < 0


@settings(deadline=None, max_examples=200)
@given(st.integers(0, 32767), counters)
def test_shards_below_32768_are_positive_in_the_signed_view(shard: int, counter: int) -> None:
    assert to_signed(encode(shard, counter)) >= 0


@settings(deadline=None, max_examples=300)
@given(shards, counters)
def test_json_carries_guids_as_strings_that_round_trip(shard: int, counter: int) -> None:
    guid = encode(shard, counter)
    text = json.dumps({"id": to_json(guid)})
    assert from_json(json.loads(text)["id"]) == guid


def test_json_refuses_a_bare_number_that_may_have_been_rounded() -> None:
    with pytest.raises(ValueError, match="decimal string"):
        from_json(2**60)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="larger than 64 bits"):
        from_json(str(1 << 64))


def test_counter_past_48_bits_is_exhaustion() -> None:
    with pytest.raises(GuidExhaustedError):
        encode(1, MAX_COUNTER + 1)


@settings(deadline=None, max_examples=25)
@given(st.lists(st.integers(0, MAX_SHARD), min_size=2, max_size=5, unique=True),
       st.integers(1, 40))
def test_allocators_of_different_shards_issue_disjoint_ids(tmp_path_factory: pytest.TempPathFactory,
                                                          shard_ids: list[int], n: int) -> None:
    base = tmp_path_factory.mktemp("leases")
    issued: set[int] = set()
    for shard in shard_ids:
        allocator = GuidAllocator(shard, base / f"{shard}.lease", block=7)
        ids = [allocator.allocate() for _ in range(n)]
        assert all(decode(g).shard == shard for g in ids)
        assert issued.isdisjoint(ids)
        issued.update(ids)


@settings(deadline=None, max_examples=20)
@given(st.lists(st.floats(-1e9, 2e9), min_size=1, max_size=30))
def test_a_clock_stepping_back_changes_nothing(tmp_path_factory: pytest.TempPathFactory,
                                               readings: list[float]) -> None:
    """The allocator never reads the clock: any clock, even one jumping back, gives the
    same ids, and every read of it would be visible here."""
    path = tmp_path_factory.mktemp("clock") / "lease"
    reads = []
    clock = iter(readings * 100)

    def fake() -> float:
        reads.append(1)
        return next(clock)

    with pytest.MonkeyPatch.context() as patch:
        for name in ("time", "monotonic", "perf_counter"):
            patch.setattr(time, name, fake)
        patch.setattr(time, "time_ns", lambda: int(fake() * 1e9))
        allocator = GuidAllocator(3, path, block=4)
        ids = [allocator.allocate() for _ in range(len(readings))]
    assert ids == [encode(3, c) for c in range(1, len(readings) + 1)]
    assert reads == []
