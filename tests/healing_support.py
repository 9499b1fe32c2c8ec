"""Shared helpers of the healing tests: clusters of the issue's scenario, a chaos transport,
and node processes on the real RabbitMQ."""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cellframe.errors import CellframeError
from cellframe.healing.membership import HealingConfig
from cellframe.node import children as processes
from cellframe.node.cluster import LocalCluster
from cellframe.roles import LogSumpCell, builtin_registry
from cellframe.roles.registry import RoleRegistry
from cellframe.testing import AmqpNames, running_cluster
from cellframe.wire.envelope import Envelope, new_message_id
from cellframe.wire.routing import topic_matches

REPO = Path(__file__).resolve().parent.parent
ZONE = REPO / "examples" / "cluster.zone"

#: Fast timing for tests: 50 ms heartbeats, and a warm-up shorter than the default second.
FAST = HealingConfig(heartbeat_interval=0.05, acceptable_pause=0.5, reconcile_period=0.3)

#: The in-process scenario of the issue: a proxy, three web cells, a log sump, one spare.
SCENARIO_NODES = ["proxy-01", "web-01", "web-02", "web-03", "logsump-01", "spare-01"]


def local_cluster(tmp_path: Path, nodes: list[str] | None = None,
                  **options: Any) -> AbstractContextManager[LocalCluster]:
    """A started LocalCluster of the scenario on the bundled zone with FAST timing, stopped
    afterwards."""
    options.setdefault("healing", FAST)
    if "registry" not in options:
        # These scenarios are about the web tier: with the shard role playable, a spare would
        # (rightly) fill the zone's unstarted shard slots first.
        full = builtin_registry(logsump=LogSumpCell.writing_to(tmp_path / "logsump.log"))
        options["registry"] = RoleRegistry({r: full.cells_for(r) for r in full.roles if r != "shard"})
    return running_cluster(ZONE, nodes=nodes or SCENARIO_NODES, workdir=tmp_path, **options)


def log_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def events(path: Path, kind: str, **fields: str) -> list[str]:
    """Lines of a log sump file holding event ``kind`` whose fields match ``fields``."""
    wanted = [f':kind "{kind}"', *(f':{k.replace("_", "-")} "{v}"' for k, v in fields.items())]
    return [line for line in log_lines(path) if all(w in line for w in wanted)]


# -- chaos: duplicate, delay and so reorder messages -------------------------------------------


@dataclass
class Chaos:
    """What to do to messages whose routing key matches one of ``patterns``."""

    patterns: tuple[str, ...] = ("heartbeat.*", "membership.#", "probe.*", "event.#",
                                 "each.proxy", "each.web")
    duplicate: float = 0.5  # chance of a second copy (same id) and a third (fresh id)
    max_delay: float = 0.03  # every matching message is held back uniformly up to this
    rng: random.Random = field(default_factory=lambda: random.Random(1234))
    counts: dict[str, int] = field(default_factory=lambda: {"delayed": 0, "duplicated": 0})


class _Scheduler:
    """One thread that publishes held-back messages when they are due."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._lock = threading.Condition()
        self._order = itertools.count()
        threading.Thread(target=self._run, name="chaos-scheduler", daemon=True).start()

    def later(self, delay: float, action: Callable[[], None]) -> None:
        with self._lock:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), action))
            self._lock.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._lock.wait(timeout)
                _, _, action = heapq.heappop(self._heap)
            try:
                action()
            except CellframeError:
                pass  # the sender was killed meanwhile: its late messages are lost, as in life


_SCHEDULER: _Scheduler | None = None


def _scheduler() -> _Scheduler:
    global _SCHEDULER
    if _SCHEDULER is None:
        _SCHEDULER = _Scheduler()
    return _SCHEDULER


class ChaosTransport:
    """Wraps a transport: matching publishes are delayed at random (so reordered), and some
    are delivered two or three times, once with a fresh message id (defeating dedup)."""

    def __init__(self, inner: Any, chaos: Chaos) -> None:
        self.inner = inner
        self.chaos = chaos

    def publish(self, routing_key: str, envelope: Envelope, **options: Any) -> None:
        chaos = self.chaos
        if not any(topic_matches(p, routing_key) for p in chaos.patterns):
            self.inner.publish(routing_key, envelope, **options)
            return
        copies = [envelope]
        if chaos.rng.random() < chaos.duplicate:
            chaos.counts["duplicated"] += 1
            fresh = replace(envelope, message_id=new_message_id(), headers=dict(envelope.headers))
            copies += [envelope, fresh]
        for copy in copies:
            chaos.counts["delayed"] += 1
            delay = chaos.rng.uniform(0.0, chaos.max_delay)
            _scheduler().later(delay, lambda c=copy: self.inner.publish(routing_key, c, **options))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# -- node processes on RabbitMQ ----------------------------------------------------------------


def write_zone(path: Path, *, log_file: Path, heartbeat_ms: int = 100, extra: str = "") -> Path:
    """A zone for the process tests: proxy, three web, a log sump writing to ``log_file``, and
    two spares; the intent asks for 1 proxy, 3 web and 1 log sump."""
    path.write_text(f"""$ORIGIN cluster.test.
$TTL 5
@           IN SOA  ns.cluster.test. hostmaster.cluster.test. ( 1 60 30 600 5 )
            IN NS   ns
ns          IN A    127.0.0.1
_cluster    IN TXT  "proxy=1" "web=3" "logsump=1"
_cluster    IN TXT  "heartbeat-ms={heartbeat_ms}" "failure-timeout-ms=500"
_nodes      IN TXT  "proxy-01 web-01 web-02 web-03 logsump-01 spare-01 spare-02"
proxy-01    IN TXT  "role=proxy"
web-01      IN TXT  "role=web" "weight=10"
web-02      IN TXT  "role=web" "weight=10"
web-03      IN TXT  "role=web" "weight=5"
logsump-01  IN TXT  "role=logsump" "log-file={log_file}"
spare-01    IN TXT  "rack=r1"
spare-02    IN TXT  "rack=r2"
{extra}""", encoding="utf-8")
    return path


class NodeProcesses(processes.NodeProcesses):
    """Node processes on a topology of this test's own; all stopped, and the topology deleted,
    on close."""

    def __init__(self, amqp_url: str, zone: Path, logdir: Path) -> None:
        # A topology of this test's own: durable role queues on the shared broker must not
        # carry one run's backlog into another's.
        self.names = AmqpNames(amqp_url)
        for role in ("proxy", "web", "logsump", "shard", "keepalive"):
            self.names.queue(f"role.{role}")
        self.prefix = self.names.queue_prefix
        super().__init__(logdir, ["--amqp", amqp_url, "--zone", str(zone), "--exchange",
                                  self.names.exchange, "--queue-prefix", self.prefix, "--insecure"],
                         cwd=REPO)

    def transport(self, name: str) -> Any:
        """An AmqpTransport on this test's topology, for observers and traffic."""
        return self.names.connect(name=name, connect_timeout=10.0, op_timeout=30.0)

    def client(self, name: str) -> Any:
        from cellframe.client import Client

        return Client(self.transport(name), name=name, queue_prefix=self.prefix)

    def close(self) -> None:
        super().close()
        self.names.cleanup()


class GateTransport:
    """Wraps a transport; while ``closed_for`` patterns are set, matching publishes are held
    back (a node that is slow, not dead: its queue stays), and ``open()`` sends them late."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.closed_for: tuple[str, ...] = ()
        self.held: list[tuple[str, Envelope, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def close_gate(self, *patterns: str) -> None:
        self.closed_for = patterns

    def open_gate(self) -> None:
        with self._lock:
            self.closed_for, held, self.held = (), self.held, []
        for key, envelope, options in held:
            self.inner.publish(key, envelope, **options)

    def publish(self, routing_key: str, envelope: Envelope, **options: Any) -> None:
        with self._lock:
            if any(topic_matches(p, routing_key) for p in self.closed_for):
                self.held.append((routing_key, envelope, options))
                return
        self.inner.publish(routing_key, envelope, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
