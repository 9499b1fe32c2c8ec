"""Replication benchmarks: how fast N copies come back after a shard node is lost, and how much
data a joining shard moves.

``python -m cellframe.benchmarks.replication [memory|amqp|join] [records] [spare|four]``
prints JSON. ``CELLFRAME_BENCH_AMQP`` names the broker (best a virtual host of the run's own:
node names are fixed, so two runs on one vhost take each other's queues), and
``CELLFRAME_BENCH_NODE_OPTIONS`` adds options to every ``cellframe`` node process (``-v``
logs each ring change).

- ``bench_restore``: shard nodes with N=3 hold ``records`` records (written straight into
  their stores before the clock starts); one is killed. Scenario ``spare``: three shards and
  a spare; the spare differentiates into a shard and receives every record (one receiver).
  Scenario ``four``: four shards; the three survivors re-replicate the lost node's copies
  among themselves (three receivers). Measured: kill -> every survivor holds every record and
  all Merkle roots agree (N copies again). In one process on the embedded transport (``kill``
  aborts the node's connection), or one ``cellframe node`` process per node on RabbitMQ
  (SIGKILL). The cluster is observed only through messages (``shard-status``, ``roots``).
- ``bench_join_fraction``: from the ring's transfer plan, the fraction of partition replicas
  (and so, with keys spread evenly, of the data) that move when one shard joins n.
"""

from __future__ import annotations

import abc
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from ..errors import CellframeError
from ..language.printer import write
from ..node.children import NodeProcesses
from ..store import Record, Ring, Store, content_digest, moved_fraction, plan_transfer
from ..store.guid import encode

__all__ = ["bench_join_fraction", "bench_restore", "main", "restore_zone", "synthetic_records"]

AMQP_URL = os.environ.get("CELLFRAME_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
PLUGIN = "cellframe.roles.shard:ShardCell"
#: Options for ``cellframe`` in every node process (``-v`` logs each ring change and transfer).
NODE_OPTIONS = os.environ.get("CELLFRAME_BENCH_NODE_OPTIONS", "").split()


def restore_zone(path: Path, shards: int, *, partitions: int = 1024, fsync: bool = True,
                 heartbeat_ms: int = 100, failure_timeout_ms: int = 1000) -> Path:
    """``shards`` shard nodes (ids 1..n, N=3) and a spare; the intent asks for ``shards``.

    The timing is the bundled zone's: with all the copying in one process the heartbeats of
    every node starve, and a faster detector sees false 'down's that make the ring churn.
    """
    names = [f"shard-{i:02d}" for i in range(1, shards + 1)]
    records = "\n".join(f'{n}    IN TXT  "role=shard" "shard-id={i}"'
                        for i, n in enumerate(names, start=1))
    path.write_text(f"""$ORIGIN cluster.test.
$TTL 5
@           IN SOA  ns.cluster.test. hostmaster.cluster.test. ( 1 60 30 600 5 )
            IN NS   ns
ns          IN A    127.0.0.1
_cluster    IN TXT  "shard={shards}" "spares=spare-01" "replicas=3" "heartbeat-ms={heartbeat_ms}"
_cluster    IN TXT  "failure-timeout-ms={failure_timeout_ms}" "shard.partitions={partitions}"
_cluster    IN TXT  "shard.fsync={'true' if fsync else 'false'}"
_nodes      IN TXT  "{' '.join(names)} spare-01"
{records}
spare-01    IN TXT  "rack=r1"
""", encoding="utf-8")
    return path


def synthetic_records(count: int, *, value_bytes: int = 100, families: int = 10_000,
                      shard: int = 1) -> list[Record]:
    """``count`` records of ``families`` families, values of about ``value_bytes`` bytes."""
    base = 1_700_000_000_000_000
    pad = "x" * max(0, value_bytes - 12)
    out = []
    for i in range(count):
        family = f"bench/{i % families}"
        value = write(f"{i:010d}{pad}").encode()
        out.append(Record(family, base + i, value, encode(shard, i + 1),
                          content_digest(family, base + i, value)))
    return out


def preload(directory: Path, shard: int, records: list[Record], *, partitions: int,
            fsync: bool) -> None:
    """Write ``records`` into the store a shard cell will open at ``directory``."""
    with Store(directory, shard=shard, partitions=partitions, fsync=fsync) as store:
        for start in range(0, len(records), 10_000):
            store.apply_many(records[start:start + 10_000])


def bench_restore(records: int = 100_000, *, transport: str = "memory", scenario: str = "spare",
                  value_bytes: int = 100, partitions: int = 1024, fsync: bool = True,
                  timeout: float = 180.0, workdir: str | None = None) -> dict[str, Any]:
    """Kill one shard node of a cluster holding ``records`` records with N=3; time the return
    to N copies (``scenario``: ``spare`` or ``four``, see the module's docstring)."""
    if scenario not in ("spare", "four"):
        raise ValueError(f"scenario must be spare or four, got {scenario!r}")
    work = Path(workdir or tempfile.mkdtemp(prefix="cellframe-bench-repl-"))
    work.mkdir(parents=True, exist_ok=True)
    shards = 3 if scenario == "spare" else 4
    runner: _Cluster = (_InProcess if transport == "memory" else _Processes)(
        work, restore_zone(work / "cluster.zone", shards, partitions=partitions, fsync=fsync))
    try:
        started = time.monotonic()
        _preload(runner, shards, synthetic_records(records, value_bytes=value_bytes),
                 partitions=partitions, fsync=fsync)
        loaded = time.monotonic() - started
        figures = _run(runner, shards, records, scenario, timeout)
    finally:
        runner.close()
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    figures.update(records=records, scenario=scenario, transport=transport,
                   value_bytes=value_bytes, partitions=partitions, fsync=fsync,
                   preload_seconds=round(loaded, 2))
    return figures


def _preload(runner: _Cluster, shards: int, rows: list[Record], *, partitions: int,
             fsync: bool) -> None:
    """Every shard's store, filled with the records of the partitions it owns, and the ring
    saved beside it (a cell resumes with its saved ring: no data moves at the start)."""
    ring = Ring.build(range(1, shards + 1), partitions=partitions, replicas=3)
    for shard in range(1, shards + 1):
        mine = set(ring.partitions_of(shard))
        held = [r for r in rows if ring.partition_of(r.family) in mine]
        directory = runner.store_dir(f"shard-{shard:02d}", shard)
        preload(directory, shard, held, partitions=partitions, fsync=fsync)
        directory.with_name(directory.name + ".ring.json").write_text(
            json.dumps({"ring": ring.to_dict(), "receiving": []}))


def _run(runner: _Cluster, shards: int, total: int, scenario: str,
         timeout: float) -> dict[str, Any]:
    from ..node.cluster import wait_for

    names = [f"shard-{i:02d}" for i in range(1, shards + 1)]
    for name in names:
        runner.start(name)
    wait_for(lambda: _settled(runner.status(), names), timeout, interval=0.2)
    if scenario == "spare":
        runner.start("spare-01")
        time.sleep(1.5)  # a spare already running when the shard dies, heard by everyone
    survivors = [n for n in names if n != "shard-02"] + (["spare-01"] if scenario == "spare"
                                                        else [])
    before = _received(runner.status(), survivors)
    killed = time.monotonic()
    runner.kill("shard-02")
    wait_for(lambda: _holds_all(runner.status(survivors), survivors, total), timeout,
             interval=0.05)
    copied = time.monotonic()
    wait_for(lambda: _roots_agree(runner.roots(survivors), survivors), timeout, interval=0.05)
    done = time.monotonic()
    return {"seconds_kill_to_all_records": round(copied - killed, 3),
            "seconds_kill_to_roots_agree": round(done - killed, 3),
            "records_copied": _received(runner.status(), survivors) - before}


def _received(status: dict[str, dict[str, Any]], names: list[str]) -> int:
    return sum(s["stats"].get("transfer-records-received", 0)
               for n, s in status.items() if n in names)


def _settled(status: dict[str, dict[str, Any]], names: list[str]) -> bool:
    """Every named shard answers, with the same ring of all of them, nothing on the move."""
    rings = [status.get(n, {}).get("ring", {}) for n in names]
    return (all(len(r.get("members", [])) == len(names) and r.get("moving") == 0 for r in rings)
            and len({r.get("digest") for r in rings}) == 1)


def _holds_all(status: dict[str, dict[str, Any]], names: list[str], total: int) -> bool:
    return all(status.get(n, {}).get("store", {}).get("records", 0) >= total for n in names)


def _roots_agree(roots: dict[str, dict[int, str]], names: list[str]) -> bool:
    seen = [roots.get(n) for n in names]
    return all(seen) and all(r == seen[0] for r in seen)


# -- two ways of running the cluster -----------------------------------------------------------


class _Cluster(abc.ABC):
    """What the benchmark needs of a cluster: start, kill, and a client to ask questions."""

    client: Any

    @abc.abstractmethod
    def store_dir(self, node: str, shard: int) -> Path:
        """Where node ``node`` keeps shard ``shard``'s store."""

    @abc.abstractmethod
    def start(self, name: str) -> None:
        """Start node ``name``."""

    @abc.abstractmethod
    def kill(self, name: str) -> None:
        """Kill node ``name`` as SIGKILL would."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop everything still running."""

    def ask(self, expr: str, window: float = 0.5,
            complete: Callable[[list[Any]], bool] | None = None) -> list[Any]:
        """Send ``expr`` to every shard cell; the call-backs within ``window`` seconds, or
        fewer as soon as ``complete(call-backs)`` says every expected one is in."""
        from ..language.reader import read

        first = len(self.client.replies)
        self.client.send("each.shard", read(expr))
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            if complete is not None and complete([r.expr for r in self.client.replies[first:]]):
                break
            self.client.wait_for_replies(len(self.client.replies) + 1,
                                         max(0.0, deadline - time.monotonic()))
        return [r.expr for r in self.client.replies[first:]]

    def status(self, names: Collection[str] = ()) -> dict[str, dict[str, Any]]:
        """Every shard cell's status (waiting the whole window unless ``names`` says whose
        answers to expect: each poll then takes milliseconds, not 0.5 s)."""
        from ..language.plist import from_plist

        out = {}
        for expr in self.ask("(shard-status)", complete=_answered(names, "shard-status-is")):
            if expr and str(expr[0]) == "shard-status-is":
                fields = from_plist(expr[1:])
                out[fields["node"]] = {key: from_plist(_unquote(fields[key]))
                                       for key in ("store", "ring", "stats")}
        return out

    def roots(self, names: Collection[str] = ()) -> dict[str, dict[int, str]]:
        """Every shard cell's Merkle roots, by node (``names`` as for ``status``)."""
        from ..language.plist import from_plist

        out: dict[str, dict[int, str]] = {}
        for expr in self.ask("(roots)", complete=_answered(names, "roots-are")):
            if expr and str(expr[0]) == "roots-are":
                fields = from_plist(expr[1:])
                out.setdefault(fields["node"], {}).update(dict(_unquote(fields["roots"])))
        return out


def _answered(names: Collection[str], verb: str) -> Callable[[list[Any]], bool] | None:
    """Whether every node of ``names`` has sent all the parts of its ``verb`` call-back."""
    if not names:
        return None

    def complete(replies: list[Any]) -> bool:
        from ..language.plist import from_plist

        parts: dict[str, set[int]] = {}
        wanted: dict[str, int] = {}
        for expr in replies:
            if expr and str(expr[0]) == verb:
                fields = from_plist(expr[1:])
                node = fields["node"]
                parts.setdefault(node, set()).add(fields.get("part", 0))
                wanted[node] = fields.get("parts", 1)
        return all(len(parts.get(n, ())) >= wanted.get(n, 1) for n in names)

    return complete


class _InProcess(_Cluster):
    """Every node in this process: LocalCluster on the embedded transport."""

    def __init__(self, work: Path, zone: Path) -> None:
        from ..config.resolvers import ZoneFileResolver
        from ..node.cluster import LocalCluster
        from ..roles.registry import RoleRegistry
        from ..roles.shard import ShardCell

        self.data = work / "data"
        registry = RoleRegistry({"shard": [ShardCell.configured(data_dir=str(self.data))]})
        self.cluster = LocalCluster(resolver=ZoneFileResolver(zone), registry=registry,
                                    workdir=work, nodes=[])
        self.client = self.cluster.client("bench-replication")

    def store_dir(self, node: str, shard: int) -> Path:
        return self.data / f"shard-{shard}"

    def start(self, name: str) -> None:
        self.cluster.start_node(name)

    def kill(self, name: str) -> None:
        self.cluster.kill(name)

    def close(self) -> None:
        self.client.close()
        self.cluster.stop()


class _Processes(_Cluster):
    """One ``cellframe node`` process per node on RabbitMQ; SIGKILL to kill."""

    def __init__(self, work: Path, zone: Path) -> None:
        from ..client import Client
        from ..transports.amqp import AmqpTransport

        self.work, self.zone, self.data = work, zone, work / "data"
        self.nodes = NodeProcesses(work, ["--amqp", AMQP_URL, "--zone", str(zone), "--data-dir",
                                          str(self.data), "--plugin", PLUGIN, "--insecure"],
                                   cli_options=NODE_OPTIONS)
        self.transport = AmqpTransport(AMQP_URL, name="bench-replication")
        self.client = Client(self.transport, name=f"bench-repl-{os.getpid()}")

    def store_dir(self, node: str, shard: int) -> Path:
        return self.data / node / f"shard-{shard}"

    def start(self, name: str) -> None:
        self.nodes.start(name)

    def kill(self, name: str) -> None:
        self.nodes.kill(name)

    def close(self) -> None:
        self.nodes.close()
        self.client.close()
        self.transport.close()


def _unquote(value: Any) -> Any:
    """A call-back's quoted list, as data."""
    if isinstance(value, list) and len(value) == 2 and str(value[0]) == "quote":
        return value[1]
    return value


# -- the ring's transfer plan ------------------------------------------------------------------


def bench_join_fraction(sizes: range = range(3, 13), *, partitions: int = 1024,
                        replicas: int = 3) -> dict[str, Any]:
    """Per cluster size n: the fraction of replica slots (so of the data) and of primaries
    that move when shard n+1 joins, against the ideal 1/(n+1)."""
    ring = Ring.build(range(1, sizes.start + 1), partitions=partitions, replicas=replicas)
    rows = []
    for n in sizes:
        if len(ring.members) != n:
            ring = ring.rebalanced(range(1, n + 1))
        bigger = ring.rebalanced(range(1, n + 2))
        primaries, slots = moved_fraction(ring, bigger)
        plan = plan_transfer(ring, bigger)
        rows.append({"from": n, "to": n + 1, "data_moved": round(slots, 4),
                     "primaries_moved": round(primaries, 4), "ideal": round(1 / (n + 1), 4),
                     "transfers": len(plan),
                     "only_newcomer_receives": {t.to_shard for t in plan} == {n + 1}})
        ring = bigger
    return {"partitions": partitions, "replicas": replicas, "joins": rows}


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    mode = args[0] if args else "memory"
    records = int(args[1]) if len(args) > 1 else 100_000
    scenario = args[2] if len(args) > 2 else "spare"
    try:
        if mode == "join":
            result = bench_join_fraction()
        else:
            result = bench_restore(records, transport=mode, scenario=scenario)
    except CellframeError as error:
        result = {"error": str(error)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
