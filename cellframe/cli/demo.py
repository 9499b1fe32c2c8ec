"""``cellframe demo``: a local cluster heals itself in front of you.

The scenario starts the bundled cluster (a proxy, three web cells, three shard cells, a log
sump and two spares), drives requests through the proxy and inserts into the shards, then
kills a web node and a shard node the way SIGKILL would. It watches, live, the survivors
declare them down, the spares differentiate, the proxy's pool change and the data
re-replicate; it ends with a summary and exits 0 only if the cluster healed with nothing lost.

The demo observes the cluster only as an operator would: through a Client that hears the
events every node publishes and asks questions with s-expressions. The same scenario runs on
the embedded transport in one process or across real node processes on RabbitMQ.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ..client import Client, Reply
from ..language.plist import from_plist
from ..language.symbols import Symbol
from ..wire.routing import each_key, role_key

__all__ = ["DemoSummary", "Launcher", "Observer", "Scenario"]


class Launcher(Protocol):
    """Starts the cluster's nodes somewhere and can kill one as SIGKILL would."""

    def start(self) -> list[str]:
        """Start every node; return their names."""

    def kill(self, name: str) -> float:
        """Kill ``name`` without any goodbye; return the wall time of the kill."""

    def client(self) -> Client:
        """A client connected to the cluster's broker."""

    def stop(self) -> None:
        """Stop whatever is still running."""


@dataclass
class DemoSummary:
    """What the demo measured; ``healed`` is the verdict (and the exit status)."""

    healed: bool = False
    detect_seconds: float | None = None
    heal_seconds: float | None = None
    requests_served: int = 0
    requests_after_detection_to_dead_node: int = 0
    inserts_acked: int = 0
    inserts_readable: int = 0
    inserts_lost: int = 0
    data_heal_seconds: float | None = None
    killed: list[str] = field(default_factory=list)
    replacements: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Event:
    at: float
    kind: str
    node: str
    fields: dict[str, Any]


class Observer:
    """Collects the cluster's events and the call-backs the demo's questions bring back."""

    def __init__(self, client: Client, on_event: Callable[[Event], None] | None = None):
        self.client = client
        self.events: list[Event] = []
        self.served: Counter[str] = Counter()
        self.served_at: list[tuple[float, str]] = []
        self.answers: dict[str, list[Any]] = {}
        self._on_event = on_event
        self._lock = threading.Condition()
        client.on_reply = self.on_reply
        client.transport.bind(client.queue, "event.#")

    def on_reply(self, reply: Reply) -> None:
        expr = reply.expr
        if not (isinstance(expr, list) and expr and isinstance(expr[0], Symbol)):
            return
        head, now = expr[0].name, time.time()
        event: Event | None = None
        with self._lock:
            if head == "event":
                fields = _fields(expr[1:])
                event = Event(now, str(fields.get("kind")), str(fields.get("node")), fields)
                self.events.append(event)
            elif head == "served":
                backend = str(_fields(expr[1:]).get("backend"))
                self.served[backend] += 1
                self.served_at.append((now, backend))
            else:
                self.answers.setdefault(head, []).append(expr)
            self._lock.notify_all()
        if event is not None and self._on_event is not None:
            self._on_event(event)

    def wait(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """Wait (the demo is not a cell: it may) until ``predicate`` holds, or give up."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not (result := predicate()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._lock.wait(min(remaining, 0.1))
            return result

    def events_of(self, kind: str, **match: Any) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.kind == kind
                    and all(e.fields.get(k) == v for k, v in match.items())]

    def ask(self, target: str, question: str, head: str, timeout: float = 5.0) -> list[Any] | None:
        """Send ``question`` and wait for the next ``(head ...)`` call-back."""
        with self._lock:
            before = len(self.answers.get(head, []))
        self.client.send(target, question)
        found = self.wait(lambda: len(self.answers.get(head, [])) > before, timeout)
        return self.answers[head][-1] if found else None


def _fields(items: list[Any]) -> dict[str, Any]:
    try:
        return from_plist(items)
    except Exception:  # a malformed event is not the demo's business: show it raw
        return {"raw": items}


class _DataPhase:
    """The data half of the scenario: inserts through the shard role, a shard node killed
    mid-stream, the replicas' Merkle roots agreeing again, every acknowledged insert read."""

    launcher: Launcher
    observer: Observer | None
    summary: DemoSummary
    shard_victim: str | None
    inserts: int
    timeout: float
    show: Callable[[str], None]
    _traffic_stop: threading.Event
    _inserts_done: threading.Event

    def _shard_answers(self) -> dict[str, dict[str, Any]]:
        assert self.observer is not None
        before = len(self.observer.answers.get("shard-status-is", []))
        self.observer.client.send(each_key("shard"), [Symbol("shard-status")])
        self.observer.wait(lambda: False, 0.3)  # answers arrive within the window
        answers = self.observer.answers.get("shard-status-is", [])[before:]
        return {str(_fields(a[1:]).get("node")): _fields(a[1:]) for a in answers}

    def _wait_for_shards(self, count: int) -> bool:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            answers = self._shard_answers()
            if len(answers) >= count and all(
                len(_unquote(a.get("peers")) or []) >= count - 1 for a in answers.values()
            ):
                self.show(f"shard ring formed: {', '.join(sorted(answers))}")
                return True
        return False

    def _drive_inserts(self) -> None:
        assert self.observer is not None
        try:
            for n in range(self.inserts):
                if self._traffic_stop.wait(0.01):
                    return
                self.observer.client.send(role_key("shard"),
                                          [Symbol("insert"), f"item-{n}", f"value-{n}"])
        finally:
            self._inserts_done.set()

    def _settle_acks(self, quiet: float) -> None:
        """Wait until no new acknowledgement arrived for ``quiet`` seconds."""
        seen = -1
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline and len(self._acked()) != seen:
            seen = len(self._acked())
            time.sleep(quiet)

    def _acked(self) -> dict[str, Any]:
        assert self.observer is not None
        acked = {}
        for answer in list(self.observer.answers.get("inserted", [])):
            fields = _fields(answer[1:])
            acked[str(fields.get("family"))] = fields.get("guid")
        return acked

    def _kill_shard_node(self) -> None:
        assert self.observer is not None and self.shard_victim is not None
        observer = self.observer
        observer.wait(lambda: len(self._acked()) >= 50, self.timeout)
        victim = self.shard_victim
        killed_at = self.launcher.kill(victim)
        self.summary.killed.append(victim)
        self.show(f"killed {victim} while inserts were streaming ({len(self._acked())} acknowledged)")
        took = observer.wait(lambda: [e for e in observer.events_of("differentiated", role="shard")
                                      if e.at > killed_at], self.timeout)
        if not took:
            self.summary.problems.append(f"no spare differentiated into shard after {victim} died")
            return
        self.summary.replacements[victim] = took[0].node
        self.show(f"{took[0].node} differentiated into shard; waiting for the replicas to agree")
        # Let the insert stream finish (the replicas cannot agree while it still writes).
        self._inserts_done.wait(self.timeout)
        self._settle_acks(quiet=0.5)
        if self._roots_agree(self.timeout):
            self.summary.data_heal_seconds = round(time.time() - killed_at, 3)
            self.show(f"every replica's Merkle roots agree {self.summary.data_heal_seconds} s after the kill")
        else:
            self.summary.problems.append("the replicas' Merkle roots did not agree again")

    def _roots_agree(self, timeout: float) -> bool:
        assert self.observer is not None
        deadline = time.monotonic() + timeout
        observer = self.observer
        while time.monotonic() < deadline:
            before = len(observer.answers.get("roots-are", []))
            observer.client.send(each_key("shard"), [Symbol("roots")])
            # Every shard's answer to this round: a busy node answers late, and a fixed
            # half-second window saw fewer than three answers in a round, again and again.
            observer.wait(functools.partial(self._answered_by_three, before),
                          max(0.5, min(5.0, deadline - time.monotonic())))
            roots = self._roots_since(before)
            if len(roots) >= 3 and len({tuple(sorted(r.items())) for r in roots.values()}) == 1:
                return True
            observer.wait(lambda: False, 0.5)  # writes still landing: ask again shortly
        return False

    def _answered_by_three(self, start: int) -> bool:
        return len(self._roots_since(start)) >= 3

    def _roots_since(self, start: int) -> dict[str, dict[int, str]]:
        """Each shard node's Merkle roots, from the ``roots-are`` answers after the first
        ``start`` (a later answer of a node updates its earlier one)."""
        assert self.observer is not None
        roots: dict[str, dict[int, str]] = {}
        for answer in list(self.observer.answers.get("roots-are", []))[start:]:
            fields = _fields(answer[1:])
            node_roots = roots.setdefault(str(fields.get("node")), {})
            node_roots.update({int(p): str(r) for p, r in _unquote(fields.get("roots")) or []})
        return roots

    def _verify_data(self) -> None:
        assert self.observer is not None
        observer = self.observer
        acked = self._acked()
        self.summary.inserts_acked = len(acked)
        for family in acked:
            observer.client.send(role_key("shard"), [Symbol("select"), family])

        def readable() -> dict[str, Any]:
            found = {}
            for answer in list(observer.answers.get("selected", [])):
                fields = _fields(answer[1:])
                if fields.get("found") is True:
                    found[str(fields.get("family"))] = fields.get("value")
            return found if len(found) >= len(acked) else {}

        found = observer.wait(readable, self.timeout) or readable_now(observer)
        good = sum(1 for family in acked if found.get(family) == f"value-{family[5:]}")
        self.summary.inserts_readable = good
        self.summary.inserts_lost = len(acked) - good
        self.show(f"{good} of {len(acked)} acknowledged inserts read back after the healing")
        if self.summary.inserts_lost:
            self.summary.problems.append(f"{self.summary.inserts_lost} acknowledged inserts are lost")


def readable_now(observer: Observer) -> dict[str, Any]:
    found = {}
    for answer in list(observer.answers.get("selected", [])):
        fields = _fields(answer[1:])
        if fields.get("found") is True:
            found[str(fields.get("family"))] = fields.get("value")
    return found


class Scenario(_DataPhase):
    """The demo's script: converge, load, kill, watch the healing, verify, summarise."""

    def __init__(self, launcher: Launcher, *, web_victim: str = "web-02",
                 shard_victim: str | None = "shard-02", request_rate: float = 200.0,
                 inserts: int = 300, timeout: float = 30.0,
                 show: Callable[[str], None] = lambda line: None):
        self.launcher = launcher
        self.web_victim = web_victim
        self.shard_victim = shard_victim
        self.request_rate = request_rate
        self.inserts = inserts
        self.timeout = timeout
        self.show = show
        self.summary = DemoSummary()
        self.nodes: list[str] = []
        self.observer: Observer | None = None
        self._traffic_stop = threading.Event()
        self._inserts_done = threading.Event()
        self.pool: list[str] = []
        self.recent: deque[str] = deque(maxlen=12)

    # -- the script ---------------------------------------------------------------------------

    def run(self) -> DemoSummary:
        try:
            self.nodes = self.launcher.start()
            self.observer = Observer(self.launcher.client(), on_event=self._note)
            self.show(f"started {len(self.nodes)} nodes: {', '.join(self.nodes)}")
            if not self._wait_for_pool(3):
                return self._give_up("the proxy's pool never reached three web backends")
            wanted = self.shard_victim is not None and self.shard_victim in self.nodes
            if self.shard_victim is not None and not wanted:
                self.show("no shard nodes in this cluster: the data phase is skipped")
            shards = wanted and self._wait_for_shards(3)
            if wanted and not shards:
                return self._give_up("the shard cells never formed a ring of three")
            traffic = threading.Thread(target=self._drive_requests, daemon=True)
            traffic.start()
            writer = threading.Thread(target=self._drive_inserts, daemon=True)
            if shards:
                writer.start()
            self._wait_for_requests(50)
            self._kill_web_node()
            if shards:
                self._kill_shard_node()
            self._traffic_stop.set()
            traffic.join(5)
            if shards:
                writer.join(5)
                self._verify_data()
            self.summary.requests_served = sum(self.observer.served.values())
            self.summary.healed = not self.summary.problems
            return self.summary
        finally:
            self._traffic_stop.set()
            self.launcher.stop()

    def _give_up(self, problem: str) -> DemoSummary:
        self.summary.problems.append(problem)
        self.summary.healed = False
        return self.summary

    def _note(self, event: Event) -> None:
        detail = ", ".join(f"{k}={v}" for k, v in event.fields.items()
                           if k not in ("kind", "node", "time"))
        line = f"{time.strftime('%H:%M:%S', time.localtime(event.at))} {event.node}: {event.kind} {detail}"
        self.recent.append(line)
        if event.kind in ("down", "claimed", "differentiated", "pool-added", "pool-removed",
                          "stood-down", "ready"):
            self.show(line)

    def _pool(self) -> list[str]:
        assert self.observer is not None
        answer = self.observer.ask(each_key("proxy"), "(pool)", "pool")
        if answer is None:
            return []
        rows = _unquote(_fields(answer[1:]).get("backends"))
        self.pool = [row[0] for row in rows or []]
        return self.pool

    def _wait_for_pool(self, size: int) -> bool:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if len(self._pool()) >= size:
                self.show(f"proxy pool: {', '.join(self.pool)}")
                return True
            time.sleep(0.1)
        return False

    def _drive_requests(self) -> None:
        assert self.observer is not None
        period = 1.0 / self.request_rate
        for n in itertools.count():
            if self._traffic_stop.wait(period):
                return
            self.observer.client.send(each_key("proxy"), [Symbol("route"), f"req-{n}"])

    def _wait_for_requests(self, count: int) -> None:
        assert self.observer is not None
        observer = self.observer
        observer.wait(lambda: sum(observer.served.values()) >= count, self.timeout)

    def _kill_web_node(self) -> None:
        assert self.observer is not None
        observer = self.observer
        victim = self.web_victim
        killed_at = self.launcher.kill(victim)
        self.summary.killed.append(victim)
        self.show(f"killed {victim} (as SIGKILL would)")
        survivors = [n for n in self.nodes if n not in self.summary.killed]
        down = observer.wait(
            lambda: {e.node for e in observer.events_of("down", member=victim)} >= set(survivors)
            and observer.events_of("down", member=victim), self.timeout)
        if not down:
            seen = {e.node for e in observer.events_of("down", member=victim)}
            self.summary.problems.append(
                f"{victim} was not declared down by {sorted(set(survivors) - seen)}")
            return
        detected_at = max(e.at for e in down if e.node in survivors)
        self.summary.detect_seconds = round(detected_at - killed_at, 3)
        self.show(f"every survivor declared {victim} down within {self.summary.detect_seconds} s")
        took = observer.wait(
            lambda: [e for e in observer.events_of("differentiated", role="web")
                     if e.at > killed_at], self.timeout)
        if not took:
            self.summary.problems.append(f"no spare differentiated into web after {victim} died")
            return
        spare = took[0].node
        added = observer.wait(
            lambda: [e for e in observer.events_of("pool-added", backend=spare)
                     if e.at > killed_at], self.timeout)
        if not added:
            self.summary.problems.append(f"no replacement for {victim} joined the proxy's pool")
            return
        replacement = str(added[0].fields.get("backend"))
        self.summary.replacements[victim] = replacement
        self.summary.heal_seconds = round(added[0].at - killed_at, 3)
        self.show(f"{replacement} replaced {victim} in the pool {self.summary.heal_seconds} s after the kill")
        self._check_no_routes_to(victim)

    def _check_no_routes_to(self, victim: str) -> None:
        """After the proxy dropped ``victim`` from its pool, it must route nothing to it."""
        assert self.observer is not None
        removed = self.observer.events_of("pool-removed", backend=victim)
        if not removed:
            self.summary.problems.append(f"the proxy never dropped {victim} from its pool")
            return
        since = float(removed[0].fields.get("time", removed[0].at))
        answer = self.observer.ask(each_key("proxy"), f"(routes :since {since!r})", "routes")
        if answer is None:
            self.summary.problems.append("the proxy did not answer (routes)")
            return
        counts = dict((row[0], row[1]) for row in _unquote(_fields(answer[1:]).get("counts")) or [])
        late = int(counts.get(victim, 0))
        self.summary.requests_after_detection_to_dead_node = late
        if late:
            self.summary.problems.append(f"{late} requests were routed to {victim} after detection")


def _unquote(value: Any) -> Any:
    if isinstance(value, list) and len(value) == 2 and value[0] == Symbol("quote"):
        return value[1]
    return value


def summary_table(summary: DemoSummary) -> Any:
    """The summary as a rich table, with the verdict in its title."""
    from rich.table import Table

    verdict = "[green]healed, nothing lost[/green]" if summary.healed else "[red]NOT healed[/red]"
    table = Table(title=f"cellframe demo: {verdict}", show_header=False)
    rows = [
        ("killed", ", ".join(summary.killed) or "-"),
        ("replaced by", ", ".join(f"{k} -> {v}" for k, v in summary.replacements.items()) or "-"),
        ("kill to down on every survivor", _seconds(summary.detect_seconds)),
        ("kill to replacement in the pool", _seconds(summary.heal_seconds)),
        ("requests served", str(summary.requests_served)),
        ("requests routed to the dead node after detection",
         str(summary.requests_after_detection_to_dead_node)),
        ("inserts acknowledged", str(summary.inserts_acked)),
        ("inserts readable after healing", str(summary.inserts_readable)),
        ("inserts lost", str(summary.inserts_lost)),
        ("kill to data re-replicated", _seconds(summary.data_heal_seconds)),
    ]
    for problem in summary.problems:
        rows.append(("[red]problem[/red]", problem))
    for name, value in rows:
        table.add_row(name, value)
    return table


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"
