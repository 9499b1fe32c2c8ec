"""Healing benchmarks: how fast a SIGKILLed node is declared down and replaced, and whether a
loaded machine makes the detector flap.

``python -m cellframe.benchmarks.healing [amqp|memory] [runs] [seconds]`` prints the figures
as JSON. Times come from the events the nodes publish (``event.down``, ``event.pool-added``):
each carries the wall time at which the node decided, and all processes share one clock here.

- ``bench_detection``: a proxy, three web nodes, a log sump and two spares, on the real
  RabbitMQ (one process per node, killed with SIGKILL) or in one process (``kill`` aborts the
  node's transport). Each run kills a web node and measures kill -> 'down' on every survivor
  and kill -> a replacement in the proxy's pool; the victim then restarts (it rejoins as a
  spare) and the next run kills the next web node.
- ``bench_false_downs``: the same cluster, healthy, for ``seconds`` while ``burners``
  processes keep every core busy; counts 'down' and 'suspected' events (all false: nothing
  was killed).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CellframeError
from ..language.plist import from_plist
from ..language.reader import read
from ..node.children import NodeProcesses
from ..transports.base import Delivery
from .burners import cpu_burners

__all__ = ["bench_detection", "bench_false_downs", "main", "scenario_zone"]

AMQP_URL = os.environ.get("CELLFRAME_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
WEBS = ("web-01", "web-02", "web-03")
NODES = ("logsump-01", "proxy-01", *WEBS, "spare-01", "spare-02")


def scenario_zone(path: Path, *, log_file: Path, heartbeat_ms: int = 100,
                  failure_timeout_ms: int = 500) -> Path:
    """Write the benchmark's zone: 1 proxy, 3 web, 1 log sump, two spares."""
    path.write_text(f"""$ORIGIN cluster.test.
$TTL 5
@           IN SOA  ns.cluster.test. hostmaster.cluster.test. ( 1 60 30 600 5 )
            IN NS   ns
ns          IN A    127.0.0.1
_cluster    IN TXT  "proxy=1" "web=3" "logsump=1" "heartbeat-ms={heartbeat_ms}"
_cluster    IN TXT  "failure-timeout-ms={failure_timeout_ms}"
_nodes      IN TXT  "{' '.join(NODES)}"
proxy-01    IN TXT  "role=proxy"
web-01      IN TXT  "role=web"
web-02      IN TXT  "role=web"
web-03      IN TXT  "role=web"
logsump-01  IN TXT  "role=logsump" "log-file={log_file}"
""", encoding="utf-8")
    return path


class EventLog:
    """Consumes ``event.#`` on its own connection and keeps every event as a dict."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        queue = f"reply.bench-events-{uuid.uuid4().hex[:8]}"
        transport.declare_queue(queue, exclusive=True)
        transport.bind(queue, "event.#")
        transport.consume(queue, self._on_delivery)

    def _on_delivery(self, delivery: Delivery) -> None:
        try:
            expr = read(delivery.envelope.body)
            event = {key: value for key, value in from_plist(expr[1:]).items()}
        except CellframeError:
            event = None
        delivery.ack()
        if event is not None:
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()

    def wait(self, predicate: Callable[[list[dict[str, Any]]], Any], timeout: float,
             what: str = "") -> Any:
        with self._cond:
            result = self._cond.wait_for(lambda: predicate(self.events), timeout)
        if not result:
            raise CellframeError(f"benchmark: {what or 'condition'} not met within {timeout} s")
        return result

    def since(self, t: float, kind: str, **fields: Any) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e.get("kind") == kind and e.get("time", 0) >= t
                    and all(e.get(k) == v for k, v in fields.items())]


# -- the two ways of running a cluster ------------------------------------------------------------


class _ProcessCluster:
    """One OS process per node (``cellframe node``), on RabbitMQ; SIGKILL to kill."""

    def __init__(self, workdir: Path, zone: Path, url: str) -> None:
        self.workdir, self.zone, self.url = workdir, zone, url
        # Unsigned, as its event listener is: the healing bench measures detection, not trust.
        self.nodes = NodeProcesses(workdir, ["--amqp", url, "--zone", str(zone), "--insecure"])
        from ..transports.amqp import AmqpTransport

        self.events = EventLog(AmqpTransport(url, name="bench-events"))

    def start(self, name: str) -> None:
        self.nodes.start(name)

    def kill(self, name: str) -> float:
        return self.nodes.kill(name)

    def close(self) -> None:
        self.nodes.close()
        self.events.transport.close()


class _MemoryCluster:
    """Every node in this process on one MemoryBroker; ``kill`` aborts a node's transport."""

    def __init__(self, workdir: Path, zone: Path) -> None:
        from ..node.cluster import LocalCluster

        self.cluster = LocalCluster(zone, nodes=[], workdir=workdir)
        self.events = EventLog(self.cluster.broker.connect(name="bench-events"))

    def start(self, name: str) -> None:
        self.cluster.start_node(name)

    def kill(self, name: str) -> float:
        return self.cluster.kill(name)

    def close(self) -> None:
        self.cluster.stop()


def _open(transport: str, workdir: Path, heartbeat_ms: int) -> Any:
    zone = scenario_zone(workdir / "cluster.zone", log_file=workdir / "logsump.log",
                         heartbeat_ms=heartbeat_ms)
    if transport == "amqp":
        return _ProcessCluster(workdir, zone, AMQP_URL)
    if transport == "memory":
        return _MemoryCluster(workdir, zone)
    raise CellframeError(f"transport must be 'amqp' or 'memory', not {transport!r}")


def _start_all(cluster: Any) -> None:
    started = time.time()
    for name in NODES:
        cluster.start(name)
    # Healthy: the proxy's pool holds the three web cells, and each spare has seen everyone.
    log = cluster.events
    log.wait(lambda _: {e["backend"] for e in log.since(started, "pool-added")} >= set(WEBS), 60)
    for spare in ("spare-01", "spare-02"):
        cluster.events.wait(lambda _, s=spare: len(cluster.events.since(started, "up", node=s))
                            >= len(NODES) - 1, 60)
    time.sleep(1.5)  # past every node's warm-up (1 s): measure the steady state


def _summary(values: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(values), 3), "worst_s": round(max(values), 3),
            "best_s": round(min(values), 3)}


def bench_detection(runs: int = 10, transport: str = "amqp",
                    heartbeat_ms: int = 100) -> dict[str, Any]:
    """Kill a web node ``runs`` times; time kill -> down on all survivors, and kill -> a
    replacement in the proxy's pool."""
    workdir = Path(tempfile.mkdtemp(prefix="cellframe-bench-"))
    cluster = _open(transport, workdir, heartbeat_ms)
    down_all: list[float] = []
    replaced: list[float] = []
    evidence: dict[str, int] = {}
    doubled_for: list[float] = []
    try:
        _start_all(cluster)
        holders = list(WEBS)
        for run in range(runs):
            victim = holders[run % len(holders)]
            survivors = [n for n in NODES if n != victim]
            killed = cluster.kill(victim)
            downs = _wait_downs(cluster.events, killed, victim, survivors)
            down_all.append(max(e["time"] for e in downs if e["node"] in survivors) - killed)
            for e in downs:
                evidence[e["evidence"]] = evidence.get(e["evidence"], 0) + 1
            added = cluster.events.wait(lambda _, t=killed, v=victim: [
                e for e in cluster.events.since(t, "pool-added") if e["backend"] != v], 30,
                f"a replacement of {victim} in the pool")
            replaced.append(added[0]["time"] - killed)
            holders[run % len(holders)] = added[0]["backend"]
            doubled = _restart_as_spare(cluster, victim)
            if doubled is not None:
                doubled_for.append(doubled)
    finally:
        cluster.close()
    return {"transport": transport, "runs": runs, "heartbeat_ms": heartbeat_ms,
            "kill_to_down_on_all_survivors": _summary(down_all),
            "kill_to_replacement_in_pool": _summary(replaced),
            "returning_web_node_doubled_role_for": _summary(doubled_for) if doubled_for else None,
            "down_evidence": evidence, "samples_down_s": [round(v, 3) for v in down_all],
            "samples_replaced_s": [round(v, 3) for v in replaced]}


def _wait_downs(log: EventLog, killed: float, victim: str,
                survivors: list[str]) -> list[dict[str, Any]]:
    def every_survivor_said_down(_: object) -> list[dict[str, Any]] | None:
        downs = log.since(killed, "down", member=victim)
        return downs if {e["node"] for e in downs} >= set(survivors) else None

    return log.wait(every_survivor_said_down, 30,  # type: ignore[no-any-return]
                    f"every survivor declaring {victim} down")


def _restart_as_spare(cluster: Any, victim: str) -> float | None:
    """Restart the killed node: it rejoins as a spare (a web node by DNS steps down, since
    its role was refilled; a spare that had become web comes back as the spare it is).
    Returns how long the returning web node doubled its role (start to stepping down)."""
    restarted = time.time()
    cluster.start(victim)
    log = cluster.events
    doubled = None
    if victim in WEBS:  # from its cells starting as web (DNS) to its stepping down
        stepped = log.wait(lambda _: log.since(restarted, "stepped-down", node=victim), 30,
                           f"{victim} stepping down after its restart")
        began = log.since(restarted, "differentiated", node=victim, role="web")
        doubled = stepped[0]["time"] - (began[0]["time"] if began else restarted)
    log.wait(lambda _: len({e["node"] for e in log.since(restarted, "up", member=victim)})
             >= len(NODES) - 1, 30, f"every node seeing {victim} up again")
    time.sleep(1.0)  # let the restarted node finish its warm-up before the next kill
    return doubled


def bench_false_downs(seconds: float = 60.0, transport: str = "amqp", burners: int | None = None,
                      heartbeat_ms: int = 100) -> dict[str, Any]:
    """Run the healthy cluster ``seconds`` with every core kept busy; count false downs."""
    workdir = Path(tempfile.mkdtemp(prefix="cellframe-bench-"))
    cluster = _open(transport, workdir, heartbeat_ms)
    count = burners if burners is not None else os.cpu_count() or 2
    try:
        _start_all(cluster)
        started = time.time()
        # Bounded past the run, in case this process dies before its clean-up kills them.
        with cpu_burners(count, seconds=seconds + 60):
            time.sleep(seconds)
        downs = cluster.events.since(started, "down")
        suspected = cluster.events.since(started, "suspected")
    finally:
        cluster.close()
    return {"transport": transport, "seconds": seconds, "cpu_burners": count,
            "heartbeat_ms": heartbeat_ms, "false_downs": len(downs),
            "suspicions": len(suspected),
            "max_silence_suspected_s": max((e.get("silence", 0.0) for e in suspected), default=0.0)}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    transport = args[0] if args else "amqp"
    runs = int(args[1]) if len(args) > 1 else 10
    seconds = float(args[2]) if len(args) > 2 else 60.0
    figures = {"detection": bench_detection(runs, transport),
               "false_downs": bench_false_downs(seconds, transport)}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
