"""Shared helpers of the replication tests: zones with shard nodes, in-process clusters of shard
cells, a client that matches call-backs to requests, and node processes on RabbitMQ."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from cellframe.client import Client
from cellframe.config.resolvers import ZoneFileResolver
from cellframe.language.plist import from_plist
from cellframe.language.reader import read
from cellframe.node.children import NodeProcesses
from cellframe.node.cluster import LocalCluster
from cellframe.roles.registry import RoleRegistry
from cellframe.roles.shard import ShardCell
from cellframe.store import Record, Ring
from cellframe.testing import AmqpNames, running_cluster, wait_for
from tests.healing_support import FAST

__all__ = [
    "ShardClient",
    "ShardProcesses",
    "agreed_ring",
    "cells",
    "converged",
    "rings_held",
    "roots_agree",
    "shard_cluster",
    "shard_zone",
    "unquote",
]

REPO = Path(__file__).resolve().parent.parent


def shard_zone(path: Path, *, shards: int = 3, spares: int = 1, replicas: int = 3,
               partitions: int = 16, extra: str = "", heartbeat_ms: int = 50,
               intent: int | None = None, fsync: bool = False,
               others: dict[str, str] | None = None) -> Path:
    """A zone of ``shards`` shard nodes (ids 1..n) and ``spares`` spares; the intent asks for
    ``intent`` shards (default ``shards``). ``others``: more nodes, each name with its TXT
    strings (``{"counter-01": '"role=counter"'}``); their roles' intent goes in ``extra``."""
    names = [f"shard-{i:02d}" for i in range(1, shards + 1)]
    spare_names = [f"spare-{i:02d}" for i in range(1, spares + 1)]
    nodes = "\n".join(f'{n}    IN TXT  "role=shard" "shard-id={i}"'
                      for i, n in enumerate(names, start=1))
    nodes += "".join(f'\n{n}    IN TXT  {txt}' for n, txt in (others or {}).items())
    names += list(others or {})
    nodes += "".join(f'\n{n}    IN TXT  "rack=r{i}"' for i, n in enumerate(spare_names, 1))
    spare_list = f' "spares={",".join(spare_names)}"' if spare_names else ""
    path.write_text(f"""$ORIGIN cluster.test.
$TTL 5
@           IN SOA  ns.cluster.test. hostmaster.cluster.test. ( 1 60 30 600 5 )
            IN NS   ns
ns          IN A    127.0.0.1
_cluster    IN TXT  "shard={intent or shards}"{spare_list} "replicas={replicas}"
_cluster    IN TXT  "heartbeat-ms={heartbeat_ms}" "failure-timeout-ms=500"
_cluster    IN TXT  "shard.partitions={partitions}" "shard.fsync={str(fsync).lower()}"
_nodes      IN TXT  "{' '.join(names + spare_names)}"
{nodes}
{extra}""", encoding="utf-8")
    return path


#: FAST heartbeats, but a node is given 2 s of silence before it is suspected, not 0.5: these
#: tests kill nodes (the broker's evidence finds those at once) and never pause one, and a
#: false down on a starved CI machine refuses writes the test expects to succeed.
SHARD_HEALING = replace(FAST, acceptable_pause=2.0)


@contextmanager
def shard_cluster(tmp_path: Path, *, nodes: list[str] | None = None, shards: int = 3,
                  spares: int = 1, replicas: int = 3, partitions: int = 16,
                  intent: int | None = None, **settings: Any) -> Iterator[LocalCluster]:
    """A started LocalCluster of shard cells (fast timing, no fsync), stopped afterwards.

    ``settings`` are ``ShardConfig`` fields for every shard cell (``write_quorum=3``...).
    """
    zone = shard_zone(tmp_path / "cluster.zone", shards=shards, spares=spares,
                      replicas=replicas, partitions=partitions, intent=intent)
    settings.setdefault("anti_entropy_interval", 0.2)
    settings.setdefault("ring_wait", 0.3)  # 50 ms heartbeats: the view fills in 0.1 s
    shard_class = ShardCell.configured(data_dir=str(tmp_path / "data"), **settings)
    registry = RoleRegistry({"shard": [shard_class]})
    names = nodes if nodes is not None else [f"shard-{i:02d}" for i in range(1, shards + 1)]
    count = len([n for n in names if n.startswith("shard")])

    def shards_converged(cluster: LocalCluster) -> bool:
        return converged(cluster, count)

    with running_cluster(resolver=ZoneFileResolver(zone), registry=registry, healing=SHARD_HEALING,
                         workdir=tmp_path, nodes=names, ready=shards_converged) as cluster:
        yield cluster


def cells(cluster: LocalCluster) -> dict[str, ShardCell]:
    """The live shard cells by node name (whose stores are open)."""
    found = {}
    for name, node in list(cluster.nodes.items()):
        for cell in node.cells().values():
            if isinstance(cell, ShardCell) and cell.checkpoints is not None:
                found[name] = cell
    return found


def converged(cluster: LocalCluster, count: int) -> bool:
    """``count`` shard cells, all with the same ring of all of them, nothing on the move."""
    found = cells(cluster).values()
    live = tuple(sorted(c.me for c in found))
    return (len(live) == count and all(c.view.ring is not None and c.view.ring.members == live
                                       for c in found)
            and len({c.view.digest for c in found}) == 1
            and all(not c.view.moved_at and not c.pulls for c in found))


def agreed_ring(cluster: LocalCluster, count: int) -> Ring | None:
    """The table ``count`` shard cells all hold, naming all of them (None until they do)."""
    found = list(cells(cluster).values())
    live = tuple(sorted(c.me for c in found))
    rings = {(c.view.ring, c.view.digest) for c in found}
    if len(live) != count or len(rings) != 1:
        return None
    ring = found[0].view.ring
    return ring if ring is not None and ring.members == live else None


def rings_held(cluster: LocalCluster) -> dict[str, tuple[Any, str]]:
    """Each shard cell's table and the head of its digest: what a wait on the ring shows."""
    return {name: (c.view.ring, c.view.digest[:8]) for name, c in cells(cluster).items()}


def roots_agree(cluster: LocalCluster) -> bool:
    """Every partition's owners hold the same records (equal Merkle roots)."""
    found = cells(cluster)
    by_shard = {c.me: c for c in found.values()}
    any_cell = next(iter(found.values()))
    ring = any_cell.view.ring
    assert ring is not None
    for p in range(ring.partitions):
        roots = {by_shard[s].store.merkle_nodes(p, 0, [0])[0] for s in ring.owners(p)
                 if s in by_shard}
        if len(roots) != 1:
            return False
    return True


def holders(cluster: LocalCluster, family: str) -> list[str]:
    """The nodes whose store holds a version of ``family``."""
    return [name for name, c in cells(cluster).items() if c.store.select(family) is not None]


def unquote(value: Any) -> Any:
    if isinstance(value, list) and len(value) == 2 and str(value[0]) == "quote":
        return value[1]
    return value


class ShardClient:
    """Sends store verbs to ``role.shard`` and finds each call-back by its ``:request``."""

    def __init__(self, client: Client, target: str = "role.shard") -> None:
        self.client = client
        self.target = target

    def send(self, text: str | list[Any]) -> str:
        return self.client.send(self.target, read(text) if isinstance(text, str) else text)

    def insert(self, family: str, value: str = "1", **options: Any) -> str:
        extra = "".join(f" :{k.replace('_', '-')} {v}" for k, v in options.items())
        return self.send(f'(insert "{family}" {value}{extra})')

    def answers(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Every call-back so far, by request id: (verb, fields)."""
        out = {}
        for reply in list(self.client.replies):
            expr = reply.expr
            if isinstance(expr, list) and expr and len(expr) % 2 == 1:
                fields = from_plist(expr[1:])
                if isinstance(fields.get("request"), str):
                    out[fields["request"]] = (str(expr[0]), fields)
        return out

    def answer(self, request: str, timeout: float = 30.0) -> tuple[str, dict[str, Any]]:
        return wait_for(lambda: self.answers().get(request), timeout)

    def call(self, text: str, timeout: float = 30.0) -> tuple[str, dict[str, Any]]:
        return self.answer(self.send(text), timeout)


class InsertStream:
    """Inserts ``(insert "stream/N" N)`` from a thread every ``every`` seconds until stopped."""

    def __init__(self, shard_client: ShardClient, every: float = 0.005) -> None:
        self.shards, self.every = shard_client, every
        self.sent: dict[str, str] = {}  # request id -> family
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> InsertStream:
        self._thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.every):
            family = f"stream/{n}"
            self.sent[self.shards.insert(family, str(n))] = family
            n += 1

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def acknowledged(self) -> dict[str, int]:
        """family -> guid of every insert acknowledged so far."""
        answers = self.shards.answers()
        return {family: answers[r][1]["guid"] for r, family in list(self.sent.items())
                if r in answers and answers[r][0] == "inserted"}


def record(family: str, time_: int, value: str, guid: int) -> Record:
    from cellframe.store import content_digest

    data = value.encode()
    return Record(family, time_, data, guid, content_digest(family, time_, data))


@contextmanager
def lonely_shard(tmp_path: Path, **settings: Any) -> Iterator[tuple[ShardCell, ShardClient]]:
    """One shard node configured with ``settings`` on an embedded broker: its cell, and a
    client that asks it (``cell.lonely``) directly."""
    from cellframe.node.node import Node
    from cellframe.transports.memory import MemoryBroker

    broker = MemoryBroker()
    cls = ShardCell.configured(data_dir=str(tmp_path), **settings)
    node = Node("lonely", transport=broker.connect(), role="shard",
                registry=RoleRegistry({"shard": [cls]}))
    node.start()
    client = Client(broker.connect())
    try:
        yield next(iter(node.cells().values())), ShardClient(client, "cell.lonely")
    finally:
        client.close()
        node.stop()


# -- a rebalance that moves partitions (the drop and retention tests) ---------------------------

FAMILIES = [f"item/{i}" for i in range(120)]


def only_owned(cluster) -> bool:
    """Every shard holds records of the partitions it owns, and of no other."""
    return all(set(c.store.partitions_held()) <= set(c.view.mine())
               for c in cells(cluster).values())


def settled(cluster, count: int) -> bool:
    return converged(cluster, count) and only_owned(cluster)


def lost(before: Ring, after: Ring) -> set[tuple[int, int]]:
    """(shard, partition) for every copy the move took away from an old owner."""
    return {(s, p) for p in range(before.partitions) for s in before.owners(p)
            if s not in after.owners(p)}


def read_everything(shards: ShardClient, families: list[str]) -> list[tuple[str, str, Any]]:
    """Select every family through the cluster; those not found: (family, the answer's verb,
    its reason or whether it found the family)."""
    misses = []
    for family in families:
        verb, fields = shards.call(f'(select "{family}")')
        if verb != "selected" or fields["found"] is not True:
            misses.append((family, verb, fields.get("reason", fields.get("found"))))
    return misses


def fill(cluster) -> ShardClient:
    shards = ShardClient(cluster.client())
    for request in [shards.insert(f, '"payload-payload"') for f in FAMILIES]:
        assert shards.answer(request)[0] == "inserted"
    wait_for(lambda: all(len(holders(cluster, f)) == 2 for f in FAMILIES), 30)
    return shards



# -- node processes on RabbitMQ ----------------------------------------------------------------


class ShardProcesses(NodeProcesses):
    """``python -m cellframe node`` processes with a data directory, on the test's own
    topology (``names``: the shared broker's durable ``role.shard`` must carry nothing from one
    run, or one engineer, to another); SIGKILL to kill."""

    def __init__(self, names: AmqpNames, zone: Path, workdir: Path) -> None:
        self.names = names
        names.queue("role.shard")  # declared by the node processes: deleted with the rest
        super().__init__(workdir, ["--amqp", names.url, "--zone", str(zone), "--exchange",
                                   names.exchange, "--queue-prefix", names.queue_prefix,
                                   "--data-dir", str(workdir / "data"), "--insecure"], cwd=REPO)

    def client(self, name: str) -> Client:
        """A client of the test's own on the processes' topology (closed with the names)."""
        return Client(self.names.connect(name=name, connect_timeout=10.0, op_timeout=30.0),
                      name=f"{name}-{uuid.uuid4().hex[:8]}", queue_prefix=self.names.queue_prefix)


def ask_all(client: Client, expr: str, window: float, accept: Callable[[Any], bool],
            expect: Collection[str] = ()) -> list[dict[str, Any]]:
    """Broadcast ``expr`` to ``each.shard``; the fields of the call-backs ``accept`` takes.

    Answers are collected for ``window`` seconds, and, when ``expect`` names nodes, until each
    of them has answered too (at most 15 s): under load a node may answer after the window,
    and a count that misses it would be wrong, not slow."""
    first = len(client.replies)
    client.send("each.shard", read(expr))
    start = time.monotonic()

    def answers() -> list[dict[str, Any]]:
        return [from_plist(r.expr[1:]) for r in client.replies[first:] if accept(r.expr)]

    while (elapsed := time.monotonic() - start) < window or (
            elapsed < 15 and not set(expect) <= {a.get("node") for a in answers()}):
        client.wait_for_replies(len(client.replies) + 1, 0.05)
    return answers()
