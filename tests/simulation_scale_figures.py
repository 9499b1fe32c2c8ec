"""The deterministic simulator's cost against n (issue 16), not part of the test suite:

    python -m tests.simulation_scale_figures [--nodes 100 300 1000 3000] [--seconds 60]
        [--warmup 5] [--loss 0.01] [--crashes 10] [--seed 7]

Each size runs in its own process (so its peak memory is its own), from a converged view, and
prints one JSON line: the report of ``cellframe.simulation.simulate`` (detection, false downs,
membership messages each node received per virtual second, the CPU and wall seconds), the
peak resident memory and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

from cellframe.simulation import simulate


def _one(args: argparse.Namespace, n: int) -> dict[str, object]:
    load = os.getloadavg()[0]
    report = simulate(n, seconds=args.seconds, seed=args.seed, loss=args.loss,
                      crashes=args.crashes, warmup=args.warmup).as_dict()
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    report["load_before_after"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--loss", type=float, default=0.01)
    parser.add_argument("--crashes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args, args.nodes[0]), sort_keys=True), flush=True)
        return
    for n in args.nodes:
        command = [sys.executable, "-m", "tests.simulation_scale_figures", "--one",
                   "--nodes", str(n), "--seconds", str(args.seconds), "--warmup",
                   str(args.warmup), "--loss", str(args.loss), "--crashes", str(args.crashes),
                   "--seed", str(args.seed)]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
