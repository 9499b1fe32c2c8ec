"""The round-trip tail comparison is wired: five interleaved runs, one with a CPU burner that
the benchmark starts and stops, every run's ratio reported and the worst one judged. These
tests assert what the benchmark does, never how fast anything is."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cellframe.benchmarks.burners import cpu_burners, cpu_seconds
from cellframe.testing import wait_for

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def zombie(pid: int) -> bool:
    """Exited and not yet reaped: it stopped by itself."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


@linux_only
def test_a_burner_spins_while_inside_and_is_gone_after() -> None:
    with cpu_burners(1, seconds=30) as burners:
        (pid,) = burners.pids
        wait_for(lambda: cpu_seconds(pid) >= 0.05, 30, what="the burner to use CPU",
                 show=lambda: cpu_seconds(pid))
    assert gone(pid)
    assert burners.cpu_seconds >= 0.05


@linux_only
def test_a_burner_stops_itself_after_its_seconds_even_if_nobody_kills_it() -> None:
    with cpu_burners(1, seconds=0.3) as burners:
        (pid,) = burners.pids
        wait_for(lambda: zombie(pid), 30, what="the burner to exit by itself")
    assert gone(pid)


@pytest.mark.amqp
def test_the_tail_comparison_reports_five_runs_and_judges_the_worst(amqp_url: str) -> None:
    from cellframe.benchmarks.tail import bench_round_trip_tail

    figures = bench_round_trip_tail(n=20, runs=5, burner_run=2, warm_up=5, url=amqp_url)
    assert len(figures["ratio_runs"]) == 5
    assert figures["ratio"] == max(figures["ratio_runs"])
    assert figures["burner_run"] == 2 and figures["burner"]["cpu_s"] >= 0
    for key in ("p99_ms_runs", "raw_p99_ms_runs"):
        assert len(figures[key]) == 5 and all(p99 > 0 for p99 in figures[key])
    assert figures["ratio_runs"] == [round(ours / raw, 3) for ours, raw in
                                     zip(figures["p99_ms_runs"], figures["raw_p99_ms_runs"],
                                         strict=True)]
    assert gone(figures["burner"]["pid"])  # started and stopped by the benchmark


def test_bench_lists_the_tail_comparison_with_its_goal() -> None:
    from cellframe.benchmarks.comparisons import COMPARISONS

    (tail,) = [c for c in COMPARISONS if c.key == "round_trip_p99_tail_vs_raw_rpc"]
    assert tail.goal == "<= 2.5" and tail.needs_broker
