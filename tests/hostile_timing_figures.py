"""The figures of issue 21 (items 6 and 7) and of issue 16 (item 4) over many runs.

Not part of the test suite:

    python -m tests.hostile_timing_figures pause --runs 10
    python -m tests.hostile_timing_figures broker --runs 10   # needs the 3-node cluster
    python -m tests.hostile_timing_figures broker-kill --runs 3 [--nodes 30]  # issue 16, item 4
    python -m tests.hostile_timing_figures node-kill --runs 5 [--nodes 30]    # issue 16, item 4

Each run is one trial of ``tests.timing_support`` (four node processes, or ``--nodes``; the
cluster trials start the 3-node cluster if it is not running, and leave it running); prints one
JSON line a run with its wall time, then the totals, with the load average before and after.
``node-kill`` reports each node's membership messages per second at 10 and at ``--nodes``
nodes, and how long after each SIGKILL every survivor had found the node down.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from cellframe.transports.amqp import DEFAULT_URL
from tests.timing_support import (
    CLUSTER_URLS,
    RING_SETTINGS,
    broker_kill_trial,
    broker_kills,
    broker_restart_trial,
    cluster_up,
    cold_start_cluster,
    node_kill_trial,
    pause_trial,
)


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-n", "cf1@localhost", *args], check=True, cwd="/",
                   timeout=120, capture_output=True)


def _start() -> None:
    _ctl("start_app")
    _ctl("await_startup")


def trial(kind: str, folder: Path, nodes: int) -> dict[str, Any]:
    if kind == "pause":
        return pause_trial(os.environ.get("CELLFRAME_TEST_AMQP", DEFAULT_URL), folder)
    if not cluster_up():
        cold_start_cluster()
    if kind == "broker-kill":
        with broker_kills(2) as kill:
            return broker_kill_trial(CLUSTER_URLS, folder, nodes=nodes, kill=kill,
                                     settings=RING_SETTINGS if nodes > 3 else None)
    if kind == "node-kill":
        return node_kill_trial(CLUSTER_URLS, folder, nodes=nodes)
    return broker_restart_trial(CLUSTER_URLS[:1], folder, stop=lambda: _ctl("stop_app"),
                                start=_start)


def run(kind: str, runs: int, nodes: int) -> list[dict[str, Any]]:
    results = []
    for index in range(runs):
        began = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"cf-{kind}-") as folder:
            try:
                figures = trial(kind, Path(folder), nodes)
            except AssertionError as error:  # a trial that did not settle is a result too
                figures = {"failed": str(error)[:500]}
        figures["run"] = index + 1
        figures["wall_s"] = round(time.monotonic() - began, 1)
        figures["load"] = os.getloadavg()[0]
        print(json.dumps(figures), flush=True)
        results.append(figures)
    return results


def totals(results: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ["healthy_declared_down", "declared_down", "served_after_declared_down", "lost",
            "applied_twice", "claims", "differentiated", "false_downs"]
    out: dict[str, Any] = {k: sum(r.get(k, 0) for r in results)
                           for k in keys if any(k in r for r in results)}
    out["max_tally_appliers"] = max((r.get("max_tally_appliers", 0) for r in results), default=0)
    out["failed_runs"] = sum(1 for r in results if "failed" in r)
    done = [r for r in results if "failed" not in r]
    blind = [s for r in done for s in r.get("reconnected_after", {}).values()]
    if blind:
        out["reconnected_after_median_max"] = [statistics.median(blind), max(blind)]
    everywhere = [s for r in done for s in r.get("down_everywhere_after", [])]
    if everywhere:
        out["down_everywhere_median_max"] = [statistics.median(everywhere), max(everywhere)]
        out["verdict_p99_max"] = max(r["verdict_p99"] for r in done)
        for size in done[0]["msgs_per_node_s"]:
            out[f"msgs_per_node_s_at_{size}"] = [min(r["msgs_per_node_s"][size] for r in done),
                                                 max(r["msgs_per_node_s"][size] for r in done)]
    out["wall_s"] = [min(r["wall_s"] for r in results), max(r["wall_s"] for r in results)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["pause", "broker", "broker-kill", "node-kill"])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=None,
                        help="node processes (broker-kill: 3, node-kill: 30)")
    args = parser.parse_args()
    nodes = args.nodes or (30 if args.kind == "node-kill" else 3)
    print("load before:", os.getloadavg(), flush=True)
    results = run(args.kind, args.runs, nodes)
    print("totals:", json.dumps(totals(results)))
    print("load after:", os.getloadavg())


if __name__ == "__main__":
    main()
