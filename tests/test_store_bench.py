"""The store's benchmark: every rival is measured beside the store or said to be skipped, and
the crash-reopen figures come from the opens they name."""

from __future__ import annotations

import sys

import pytest

from cellframe.benchmarks.store import bench_select, bench_store_inserts


def test_the_insert_bench_measures_each_rival_beside_the_store_in_the_same_rounds() -> None:
    pytest.importorskip("rocksdict", reason="a dev extra")
    pytest.importorskip("lmdb", reason="a dev extra")
    figures = bench_store_inserts(writers=2, n=160)
    for name in ("sqlite_wal_full", "rocksdb_sync", "lmdb_sync", "handoff_ceiling",
                 "handoff_ceiling_each", "handoff_unsynced", "store_blocking", "bare_fsync"):
        assert len(figures[f"{name}_runs_per_s"]) == 4, name  # one figure per round
        assert figures[f"{name}_per_s"] > 0, name
    assert figures["blocking_vs_best_rival"] > 0 and figures["blocking_vs_fsync_bound"] > 0
    assert 0 < figures["serial_handoff_bound_vs_fsync_bound"] < 1
    assert figures["store_pipelined_per_s"] > 0


def test_a_rival_that_is_not_installed_is_skipped_and_said_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rocksdict", None)  # import rocksdict now fails
    figures = bench_store_inserts(writers=2, n=80)
    assert figures["rocksdb_sync_per_s"] == "skipped: rocksdict is not installed (a dev extra)"
    assert "blocking_vs_rocksdb" not in figures
    assert figures["sqlite_wal_full_per_s"] > 0  # the others still run
    assert figures["blocking_vs_best_rival"] > 0


def test_the_reopen_bench_opens_after_a_kill_from_a_checkpoint_and_by_a_scan() -> None:
    figures = bench_select(n=20_000, families=500, samples=200)
    assert 2_000 <= figures["reopen_crash_tail_records"] < figures["reopen_scan_records"] == 20_000
    assert figures["peak_rss_mb"] == max(figures["peak_rss_mb_by_process"].values())
    assert figures["select_newest"]["p99_us"] > 0
