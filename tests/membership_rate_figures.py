"""Membership messages per node per second, everyone-hears-everyone against the watch ring,
at 10 and 30 nodes in one process on the memory broker (not part of the test suite):

    python -m tests.membership_rate_figures [--nodes 10 30] [--watchers 0 3] [--seconds 3]

Every node is a spare (nothing to heal), 100 ms heartbeats. Prints one JSON line per case:
membership deliveries (heartbeats and announces) each node received per second, the mean and
the most, and the process CPU seconds per node per second.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from cellframe.errors import ClusterError
from cellframe.healing.membership import HealingConfig
from cellframe.node.cluster import LocalCluster
from cellframe.testing import wait_for


def _zone(path: Path, names: list[str]) -> Path:
    records = "\n".join(f'{n} IN TXT "rack=r1"' for n in names)
    path.write_text(f"""$ORIGIN cluster.test.
$TTL 5
@ IN SOA ns.cluster.test. hostmaster.cluster.test. ( 1 60 30 600 5 )
  IN NS ns
ns IN A 127.0.0.1
_cluster IN TXT "heartbeat-ms=100" "failure-timeout-ms=500"
_nodes IN TXT {' '.join(f'"{n}"' for n in names)}
{records}
""", encoding="utf-8")
    return path


def _heard(cluster: LocalCluster) -> dict[str, int]:
    counts = {}
    for name in cluster.live():
        for cell in cluster.node(name).status()["cells"]:
            if "heard" in cell:
                counts[name] = cell["heard"]["heartbeat"] + cell["heard"]["announce"]
    return counts


def measure(n: int, k: int, seconds: float) -> dict[str, object]:
    names = [f"node-{i:03d}" for i in range(n)]
    with tempfile.TemporaryDirectory() as folder:
        zone = _zone(Path(folder) / "cluster.zone", names)
        healing = HealingConfig(watchers=k, reconcile=False)
        with LocalCluster(zone, healing=healing, workdir=folder) as cluster:
            try:
                wait_for(cluster.converged, 60, interval=0.2, what=f"{n} nodes to converge")
            except ClusterError as error:  # the figure then is that it never got there
                return {"nodes": n, "watchers": k, "converged": False, "error": str(error)[:200]}
            first, cpu, started = _heard(cluster), time.process_time(), time.monotonic()
            time.sleep(seconds)  # the measuring window
            last = _heard(cluster)
            elapsed = time.monotonic() - started
            cpu = time.process_time() - cpu
            downs = sum(1 for name in cluster.live() for m in cluster.view(name).values()
                        if m["status"] != "alive")
    rates = [(last[x] - first[x]) / elapsed for x in first]
    return {"nodes": n, "watchers": k, "msgs_per_node_s_mean": round(sum(rates) / len(rates), 1),
            "msgs_per_node_s_max": round(max(rates), 1),
            "cpu_s_per_node_s": round(cpu / elapsed / n, 4), "not_alive_in_views": downs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--watchers", type=int, nargs="+", default=[0, 3])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print("load before:", os.getloadavg(), flush=True)
    for n in args.nodes:
        for k in args.watchers:
            print(json.dumps(measure(n, k, args.seconds)), flush=True)
    print("load after:", os.getloadavg())


if __name__ == "__main__":
    main()
