"""The figures of issue 21, items 6 and 7, over many runs (not part of the test suite):

    python -m tests.hostile_timing_figures pause --runs 10
    python -m tests.hostile_timing_figures broker --runs 10   # needs the 3-node cluster
    python -m tests.hostile_timing_figures broker-kill --runs 3  # issue 16, item 4

Each run is one trial of ``tests.timing_support`` (four node processes); prints one JSON line a
run, then the totals, with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from cellframe.transports.amqp import DEFAULT_URL
from tests.timing_support import (
    CLUSTER_URLS,
    RMQC,
    broker_kill_trial,
    broker_restart_trial,
    pause_trial,
)


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-n", "cf1@localhost", *args], check=True, cwd="/",
                   timeout=120, capture_output=True)


def _kill_second() -> None:
    subprocess.run([str(RMQC / "rabbitmq-cluster"), "kill", "2"], check=True, cwd="/",
                   timeout=60, capture_output=True)


def _start() -> None:
    _ctl("start_app")
    _ctl("await_startup")


def run(kind: str, runs: int) -> list[dict[str, Any]]:
    results = []
    for index in range(runs):
        with tempfile.TemporaryDirectory(prefix=f"cf-{kind}-") as folder:
            try:
                if kind == "pause":
                    figures = pause_trial(os.environ.get("CELLFRAME_TEST_AMQP", DEFAULT_URL), Path(folder))
                elif kind == "broker-kill":
                    try:
                        figures = broker_kill_trial(CLUSTER_URLS, Path(folder), kill=_kill_second)
                    finally:
                        subprocess.run([str(RMQC / "rabbitmq-cluster"), "restart", "2"], cwd="/",
                                       timeout=180, capture_output=True)
                else:
                    figures = broker_restart_trial(CLUSTER_URLS[:1], Path(folder),
                                                   stop=lambda: _ctl("stop_app"), start=_start)
            except AssertionError as error:  # a trial that did not settle is a result too
                figures = {"failed": str(error)[:500]}
        figures["run"] = index + 1
        print(json.dumps(figures), flush=True)
        results.append(figures)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["pause", "broker", "broker-kill"])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print("load before:", os.getloadavg(), flush=True)
    results = run(args.kind, args.runs)
    keys = ["healthy_declared_down", "declared_down", "served_after_declared_down", "lost",
            "applied_twice", "claims", "differentiated"]
    totals = {k: sum(r.get(k, 0) for r in results) for k in keys if any(k in r for r in results)}
    totals["max_tally_appliers"] = max((r.get("max_tally_appliers", 0) for r in results), default=0)
    totals["failed_runs"] = sum(1 for r in results if "failed" in r)
    print("totals:", json.dumps(totals))
    print("load after:", os.getloadavg())


if __name__ == "__main__":
    main()
