"""Hostile timing trials on real node processes (issue 21, items 6 and 7): a node frozen with
SIGSTOP and resumed, and a broker that stops and starts again, while a stream of ``(add 1)``
goes to a role queue played by ``Tally`` cells.

One trial returns its figures as a dict; the tests run one trial each and assert on it, and
``python -m tests.hostile_timing_figures`` runs many and prints the table (docs/healing.md).
Each trial has a topology of its own (``AmqpNames``) and at most four node processes.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellframe.client import Client
from cellframe.testing import AmqpNames, wait_for
from tests.process_cells import TALLY_DIR, TALLY_TIMES, applied_ids
from tests.process_support import READY_TIMEOUT, REPO, Stream, child_env

__all__ = ["RING_SETTINGS", "Trial", "broker_kill_trial", "broker_kills", "broker_restart_trial", "cluster_up",
           "cold_start_cluster", "node_kill_trial", "node_names", "pause_trial", "stop_cluster"]

CLUSTER_URLS = [f"amqp://guest:guest@127.0.0.1:{port}/%2F" for port in (5701, 5702, 5703)]
#: ``../shared/tools`` beside the repository (a worktree sits one folder deeper; a CI clone
#: elsewhere on the machine finds the workplace's own ``/work/shared/tools``).
RMQC = Path(os.environ.get("CELLFRAME_SHARED_TOOLS") or next(
    (tools for tools in (REPO.parent / "shared" / "tools", REPO.parent.parent / "shared" / "tools",
                         Path("/work/shared/tools"))
     if (tools / "rabbitmq-cluster").exists()), REPO.parent / "shared" / "tools"))
#: Where the script keeps the nodes' data (its ``$RMQC_BASE``).
RMQC_BASE = Path(os.environ.get("RMQC_BASE", "/tmp/cf-rmqc"))
CLUSTER_NODES = ("cf1@localhost", "cf2@localhost", "cf3@localhost")


def cluster_up() -> bool:
    """Whether cf1's AMQP port answers."""
    try:
        socket.create_connection(("127.0.0.1", 5701), timeout=1).close()
        return True
    except OSError:
        return False


def _leftover_cluster_vms() -> list[int]:
    """The pids of Erlang VMs running one of the cluster's nodes (named in their environment:
    RabbitMQ passes the node name there, not on the command line)."""
    wanted = {f"RABBITMQ_NODENAME={node}".encode() for node in CLUSTER_NODES}
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "beam.smp":
                continue
            if wanted & set((proc / "environ").read_bytes().split(b"\0")):
                pids.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


def stop_cluster() -> None:
    """Kill every VM running one of the cluster's nodes and remove their data: quick whatever
    state the nodes are in (the script's ``stop`` asks each node and can wait minutes)."""
    for pid in _leftover_cluster_vms():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(RMQC_BASE, ignore_errors=True)


def cold_start_cluster(timeout: float = 240.0) -> None:
    """Start the 3-node cluster from nothing.

    A cluster a session left behind is dead (its VMs end with the session) but its data
    remains, and a node restarted on that data waits five times 30 s for the peers it was
    clustered with, which the script starts only after it: ``start`` then fails with "cf1 did
    not start". So first kill any VM still running one of its nodes (``stop`` took minutes on
    a node stuck in that wait) and remove the data (``stop_cluster``), then ``start``.
    """
    stop_cluster()
    script = RMQC / "rabbitmq-cluster"
    result = subprocess.run([str(script), "start"], cwd="/", timeout=timeout,
                            capture_output=True, text=True)
    if result.returncode != 0:
        logs = sorted(RMQC_BASE.glob("cf*/log/*.log"))
        tails = "\n".join(f"--- {log}\n{log.read_text(errors='replace')[-1500:]}" for log in logs)
        raise RuntimeError(f"{script} start exited {result.returncode}: "
                           f"{result.stderr.strip() or result.stdout.strip()}\n{tails}")


#: The ``_cluster`` settings of every trial: 100 ms heartbeats, the default acceptable pause.
BASE_SETTINGS = {"heartbeat-ms": "100", "failure-timeout-ms": "500"}
#: The settings of the 30-node trials (issue 16): the watch ring (each node hears 3 heartbeats
#: an interval, whatever n is), and an acceptable pause of 10 s: during a cold start of 30
#: processes beside two CPU burners on 2 cores (load average 25 to 35) the log sump went 8.7 s
#: without a tick and was found down by its silence with 5 s; 2 s gave 12 to 97 false downs a
#: run. A SIGKILLed node is still found in under a second: the raw phi suspects it after about
#: 0.25 s of silence whatever the pause, and the broker's evidence (its exclusive queue gone,
#: its broker node up) declares it down without waiting for the phi threshold. The queue must
#: stay gone one interval, not three: the wait was for a node failing over from a dead broker
#: node, which the broker check now tells apart (``cellframe.healing.brokercheck``); with three,
#: "down everywhere" took 1.02 s median in one of two runs at load 30.
RING_SETTINGS = {"healing.watchers": "3", "failure-timeout-ms": "10000",
                 "healing.broker-confirm-ms": "100"}


def node_names(count: int) -> list[str]:
    """The nodes of a trial of ``count``: the log sump, the tally role's one holder, spares."""
    return ["logsump-01", "tally-01", *(f"spare-{i:02d}" for i in range(1, count - 1))]


@contextmanager
def broker_kills(index: int) -> Iterator[Callable[[], None]]:
    """A callable that SIGKILLs broker node ``index`` (1 to 3) of the cluster; on leaving, the
    node is restarted if it was killed (restarting a running node would fail and take its
    pid file with it)."""
    script = str(RMQC / "rabbitmq-cluster")
    killed = []

    def kill() -> None:
        subprocess.run([script, "kill", str(index)], check=True, cwd="/", timeout=60,
                       capture_output=True)
        killed.append(index)

    try:
        yield kill
    finally:
        if killed:
            subprocess.run([script, "restart", str(index)], cwd="/", timeout=180,
                           capture_output=True)


def _zone(path: Path, log_file: Path, *, tally: int, nodes: list[str],
          settings: dict[str, str]) -> Path:
    roles = {n: n.split("-")[0] for n in nodes}
    records = "\n".join(
        f'{n:<12} IN TXT  "role={r}"' + (f' "log-file={log_file}"' if r == "logsump" else "")
        if r != "spare" else f'{n:<12} IN TXT  "rack=r1"' for n, r in roles.items())
    given = " ".join(f'"{key}={value}"' for key, value in {**BASE_SETTINGS, **settings}.items())
    path.write_text(f"""$ORIGIN cluster.test.
$TTL 5
@           IN SOA  ns.cluster.test. hostmaster.cluster.test. ( 1 60 30 600 5 )
            IN NS   ns
ns          IN A    127.0.0.1
_cluster    IN TXT  "tally={tally}" "logsump=1"
_cluster    IN TXT  {given}
_nodes      IN TXT  {' '.join(f'"{n}"' for n in nodes)}
{records}
""", encoding="utf-8")
    return path


@dataclass
class Trial:
    """Node processes of one trial on ``url`` (one broker address, or several), a log sump
    writing events to ``workdir/events.log``, tallies recording when they applied what.
    ``settings`` are ``_cluster`` settings over ``BASE_SETTINGS``."""

    url: str | list[str]
    workdir: Path
    settings: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        first = self.url if isinstance(self.url, str) else self.url[0]
        self.names = AmqpNames(first)
        for role in ("tally", "logsump"):
            self.names.queue(f"role.{role}")
        self.log_file = self.workdir / "events.log"
        self.tally_dir = self.workdir / "tallies"
        self.tally_dir.mkdir(exist_ok=True)
        #: node -> the index in ``url`` of the broker it connects to first.
        self.first_broker: dict[str, int] = {}

    def start(self, nodes: list[str], tally: int, *, spread: bool = False,
              options: tuple[str, ...] = (), listed: list[str] | None = None) -> None:
        """Start ``nodes``, and wait until each has seen every running node up: the role
        holders one after another (the log sump first: events sent before it binds are lost),
        then the spares all at once (a spare started first would claim a role whose holder is
        still starting: seen with 30 nodes). ``listed``: the zone's nodes, if more than these
        (a trial that grows). ``spread``: the ``i``-th listed node gets the broker URLs rotated
        by ``i``, so the nodes connect to the brokers in turn."""
        listed = listed or nodes
        zone = _zone(self.workdir / "cluster.zone", self.log_file, tally=tally, nodes=listed,
                     settings=self.settings)
        given = [self.url] if isinstance(self.url, str) else self.url
        for name in [n for n in nodes if not n.startswith("spare")]:
            self._launch(name, zone, given, listed.index(name) if spread else 0, options)
            self._wait_ready([name])
        spares = [n for n in nodes if n.startswith("spare")]
        for name in spares:
            self._launch(name, zone, given, listed.index(name) if spread else 0, options)
        self._wait_ready(spares)
        running = self.running()
        # Every node has heard every other (an 'up' from each observer about each member).
        wait_for(lambda: self._ups_complete(running), 30 + len(running), interval=0.1,
                 what="every node to see every other up",
                 show=lambda: self._ups_missing(running)[:10])

    def _launch(self, name: str, zone: Path, given: list[str], turn: int,
                options: tuple[str, ...]) -> None:
        """Start node ``name`` connecting first to broker ``turn`` of ``given``."""
        turn %= len(given)
        self.first_broker[name] = turn
        urls = given[turn:] + given[:turn]
        env = child_env(**{TALLY_DIR: str(self.tally_dir), TALLY_TIMES: "1"})
        with (self.workdir / f"{name}.out").open("ab") as out:
            command = [sys.executable, "-m", "cellframe", "node", name,
                       *[arg for url in urls for arg in ("--amqp", url)],
                       "--zone", str(zone), "--exchange", self.names.exchange,
                       "--queue-prefix", self.names.queue_prefix,
                       "--plugin", "tests.process_cells:ROLES", "--insecure", *options]
            self.procs[name] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                                env=env, cwd=str(REPO))

    def running(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is None]

    def _wait_ready(self, nodes: list[str]) -> None:
        def ready() -> bool:
            for name in nodes:
                text = (self.workdir / f"{name}.out").read_text(errors="replace")
                if f"node {name} ready" not in text:
                    if self.procs[name].poll() is not None:
                        raise AssertionError(f"{name} exited:\n{text[-2000:]}")
                    return False
            return True
        # Thirty interpreters starting at once on two busy cores take their time.
        wait_for(ready, READY_TIMEOUT + 2 * len(nodes), interval=0.05, what=f"nodes {nodes} ready")

    def _ups_missing(self, nodes: list[str]) -> list[tuple[str, str]]:
        """(observer, member) pairs of ``nodes`` with no 'up' event yet."""
        seen = {(e["node"], e.get("member")) for e in self.events("up")}
        return [(a, b) for a in nodes for b in nodes if a != b and (a, b) not in seen]

    def _ups_complete(self, nodes: list[str]) -> bool:
        return not self._ups_missing(nodes)

    def client(self) -> Client:
        urls = self.url
        transport = self.names.connect(urls, name=f"cf-test-{self.names.token}-client",
                                       connect_timeout=10.0, op_timeout=30.0)
        return Client(transport, queue_prefix=self.names.queue_prefix)

    def events(self, kind: str) -> list[dict[str, Any]]:
        """The log sump's events of ``kind``, as dicts of their string and number fields."""
        found = []
        if not self.log_file.exists():
            return found
        for line in self.log_file.read_text(encoding="utf-8").splitlines():
            if f':kind "{kind}"' not in line:
                continue
            fields = dict(re.findall(r':([a-z-]+) "([^"]*)"', line))
            fields.update((k, float(v)) for k, v in re.findall(r':([a-z-]+) (-?[0-9.]+(?:e[+-]?\d+)?)[ )]', line))
            found.append(fields)
        return found

    def applications(self) -> dict[str, list[tuple[str, float]]]:
        """``node -> [(message id, wall time applied)]`` from every tally's times file."""
        by_node: dict[str, list[tuple[str, float]]] = collections.defaultdict(list)
        for path in self.tally_dir.glob("*.times"):
            node = path.name.split(".")[0]
            for line in path.read_text(encoding="utf-8").splitlines():
                ident, stamp = line.split()
                by_node[node].append((ident, float(stamp)))
        return by_node

    def membership_heard(self, nodes: list[str]) -> dict[str, tuple[int, int, float]]:
        """``node -> (heartbeats, announces, its clock then)``: the membership messages its
        membership cell has received, from each node's ``(status)``."""
        from cellframe.cli.status import decode_status
        from cellframe.language.symbols import Symbol
        from tests.node_support import replies_matching

        client = self.client()
        try:
            for name in nodes:
                client.send(f"node.{name}", [Symbol("status")])
            found = {}
            for reply in replies_matching(client, "node-status", len(nodes), 30.0):
                status = decode_status(reply)
                cell = next(c for c in status["cells"] if c["name"].endswith("-membership"))
                heard = cell["heard"]
                found[status["node"]] = (heard["heartbeat"], heard["announce"],
                                         float(cell["heard_at"]))
            return found
        finally:
            client.close()

    def signal(self, name: str, sig: int) -> float:
        now = time.time()
        self.procs[name].send_signal(sig)
        return now

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.names.cleanup()


@contextmanager
def trial(url: str | list[str], workdir: Path,
          settings: dict[str, str] | None = None) -> Iterator[Trial]:
    t = Trial(url, workdir, settings or {})
    try:
        yield t
    finally:
        t.close()


def _max_concurrent_appliers(apps: dict[str, list[tuple[str, float]]], after: float,
                             window: float = 0.2) -> int:
    """The most nodes that applied tally messages within one ``window`` after ``after``."""
    buckets: dict[int, set[str]] = collections.defaultdict(set)
    for node, rows in apps.items():
        for _, stamp in rows:
            if stamp >= after:
                buckets[int(stamp / window)].add(node)
    return max((len(b) for b in buckets.values()), default=0)


def _exactly_once(t: Trial, sent: list[str]) -> tuple[int, int]:
    """(lost, applied twice) over the ids ``sent``."""
    counts = collections.Counter(applied_ids(t.tally_dir))
    lost = sum(1 for i in sent if counts[i] == 0)
    twice = sum(1 for i in sent if counts[i] > 1)
    return lost, twice


def pause_trial(url: str, workdir: Path, *, pause: float = 3.0) -> dict[str, Any]:
    """SIGSTOP tally-01 for ``pause`` seconds under a stream to ``role.tally`` (two slots, one
    spare): the figures of issue 21, item 6."""
    nodes = ["logsump-01", "tally-01", "tally-02", "spare-01"]
    with trial(url, workdir) as t:
        t.start(nodes, tally=2)
        client = t.client()
        with Stream(client, "role.tally", rate=200) as stream:
            wait_for(lambda: len(stream.ids) > 100, 30, what="the stream to run")
            stopped = t.signal("tally-01", signal.SIGSTOP)
            wait_for(lambda: _downs_of(t, "tally-01"), 30, interval=0.05,
                     what="tally-01 declared down", show=lambda: t.events("down"))
            time.sleep(max(0.0, stopped + pause - time.time()))  # the scenario: a pause this long
            resumed = t.signal("tally-01", signal.SIGCONT)
            settled = _wait_settled(t, nodes, tally=2)
            sent = stream.finish(200)
        wait_for(lambda: _exactly_once(t, sent)[0] == 0, 30, interval=0.2,
                 what="every message sent applied", show=lambda: _exactly_once(t, sent))
        lost, twice = _exactly_once(t, sent)
        downs = t.events("down")
        declared = min(e["time"] for e in downs if e.get("member") == "tally-01")
        apps = t.applications()
        late = [stamp for _, stamp in apps.get("tally-01", []) if stamp > declared]
        roles = settled
        return {
            "pause": round(resumed - stopped, 3),
            "detected_after": round(declared - stopped, 3),
            "healthy_declared_down": sum(1 for e in downs if e.get("member") != "tally-01"),
            "paused_node_downs_by_it": sum(1 for e in downs if e.get("node") == "tally-01"),
            "served_after_declared_down": len(late),
            "max_tally_appliers": _max_concurrent_appliers(apps, stopped),
            "tally_holders_after": sorted(n for n, r in roles.items() if r == "tally"),
            "fenced": _fenced_count(t, "tally-01"),
            "sent": len(sent), "lost": lost, "applied_twice": twice,
            "refuted": len([e for e in t.events("refuted") if e.get("node") == "tally-01"]),
        }


def broker_restart_trial(urls: list[str], workdir: Path, *, outage: float = 4.8,
                         stop: Callable[[], None], start: Callable[[], None]) -> dict[str, Any]:
    """Stop the broker for ``outage`` seconds under a stream to ``role.tally`` (one slot, two
    spares): the figures of issue 21, item 7."""
    nodes = ["logsump-01", "tally-01", "spare-01", "spare-02"]
    with trial(urls, workdir) as t:
        t.start(nodes, tally=1)
        client = t.client()
        with Stream(client, "role.tally", rate=100) as stream:
            wait_for(lambda: len(stream.ids) > 50, 30, what="the stream to run")
            began = time.time()
            stop()
            time.sleep(max(0.0, began + outage - time.time()))  # the scenario: an outage this long
            start()
            back = time.time()
            settled = _wait_settled(t, nodes, tally=1, since=back)
            sent = stream.finish(100)
        wait_for(lambda: _exactly_once(t, sent)[0] == 0, 60, interval=0.2,
                 what="every message sent applied", show=lambda: _exactly_once(t, sent))
        lost, twice = _exactly_once(t, sent)
        apps = t.applications()
        return {
            "outage": round(back - began, 3),
            "declared_down": len(t.events("down")),
            "claims": len(t.events("claimed")), "differentiated":
                len([e for e in t.events("differentiated") if e.get("time", 0) > began]),
            "max_tally_appliers": _max_concurrent_appliers(apps, began),
            "tally_holders_after": sorted(n for n, r in settled.items() if r == "tally"),
            "doubting": len([e for e in t.events("doubting") if e.get("reason") == "broker"]),
            "sent": len(sent), "lost": lost, "applied_twice": twice,
        }


def broker_kill_trial(urls: list[str], workdir: Path, *, nodes: int = 3, messages: int = 5000,
                      kill: Callable[[], None],
                      settings: dict[str, str] | None = None) -> dict[str, Any]:
    """``nodes`` node processes (``node_names``) spread over a 3-node cluster, a third
    connected first to each broker node (tally-01, the role's only holder, to the second);
    quorum role queues; SIGKILL the second broker node (``kill``) in the middle of a stream of
    ``messages`` confirmed ``(add 1)`` to ``role.tally`` (issue 16, item 4)."""
    names = node_names(nodes)
    with trial(urls, workdir, settings) as t:
        t.start(names, tally=1, spread=True, options=("--quorum",))
        client = t.client()
        with Stream(client, "role.tally", rate=500) as stream:
            wait_for(lambda: len(stream.ids) > messages // 5, 30, what="the stream to run")
            killed = time.time()
            kill()
            sent = stream.finish(max(0, messages - len(stream.ids)))
        confirmed = client.transport.flush(60)
        wait_for(lambda: _exactly_once(t, sent)[0] == 0, 60, interval=0.2,
                 what="every message sent applied", show=lambda: _exactly_once(t, sent))
        cut_off = sorted(n for n in names if t.first_broker[n] == 1)
        # Each of them reconnected: its membership says how long it was blind ('doubting').
        wait_for(lambda: set(_reconnected(t, killed)) >= set(cut_off), 30, interval=0.2,
                 what=f"{cut_off} reconnected", show=lambda: _reconnected(t, killed))
        settled = _wait_settled(t, names, tally=1)
        lost, twice = _exactly_once(t, sent)
        return {
            "nodes": nodes, "sent": len(sent), "confirmed": confirmed, "lost": lost,
            "applied_twice": twice,
            "declared_down": len(t.events("down")),
            "down_members": sorted({e.get("member", "?") for e in t.events("down")}),
            "cut_off": cut_off,
            "reconnected_after": _reconnected(t, killed),
            "max_tally_appliers": _max_concurrent_appliers(t.applications(), killed),
            "tally_holders_after": sorted(n for n, r in settled.items() if r == "tally"),
        }


def _reconnected(t: Trial, since: float) -> dict[str, float]:
    """``node -> seconds blind`` for each node that lost its broker after ``since`` and got a
    connection back (its first 'doubting :reason broker' event)."""
    found: dict[str, float] = {}
    for event in t.events("doubting"):
        if event.get("reason") == "broker" and event.get("time", 0) >= since:
            found.setdefault(event["node"], round(event["seconds"], 3))
    return found


def node_kill_trial(urls: list[str], workdir: Path, *, nodes: int = 30, first: int = 10,
                    kills: int = 3, window: float = 4.0,
                    settings: dict[str, str] | None = None) -> dict[str, Any]:
    """``first`` node processes spread over the 3-node cluster, then ``nodes`` in all; each
    node's membership messages per second at both sizes; then ``kills`` spares SIGKILLed one
    after another, one connected to each broker node, each once every survivor found it down
    (issue 16, item 4: the cost per node flat in n, detection under 1 s median)."""
    names = node_names(nodes)
    with trial(urls, workdir, RING_SETTINGS if settings is None else settings) as t:
        rates, phases, began = {}, {}, time.monotonic()
        t.start(names[:first], tally=1, spread=True, options=("--quorum",), listed=names)
        phases[f"start_{first}"] = time.monotonic() - began
        rates[first] = _membership_rates(t, window)
        phases[f"start_{nodes}"] = time.monotonic() - began
        t.start(names[first:], tally=1, spread=True, options=("--quorum",), listed=names)
        phases[f"started_{nodes}"] = time.monotonic() - began
        rates[nodes] = _membership_rates(t, window)
        phases["kills"] = time.monotonic() - began
        victims = [next(n for n in reversed(names) if t.first_broker[n] == b)
                   for b in range(kills)]
        verdicts = {victim: _kill_and_time(t, victim) for victim in victims}
        everywhere = sorted(max(v.values()) for v in verdicts.values())
        each = sorted(s for v in verdicts.values() for s in v.values())
        downs = t.events("down")
        return {
            "nodes": nodes, "first": first,
            "msgs_per_node_s": {n: r["mean"] for n, r in rates.items()},
            "msgs_per_node_s_max": {n: r["max"] for n, r in rates.items()},
            "killed": victims,
            "down_everywhere_after": [round(s, 3) for s in everywhere],
            "down_everywhere_median": round(statistics.median(everywhere), 3),
            "verdict_median": round(statistics.median(each), 3),
            "verdict_p99": round(each[min(len(each) - 1, int(0.99 * len(each)))], 3),
            "verdicts": len(each),
            "evidence": dict(collections.Counter(e.get("evidence", "?") for e in downs
                                                 if e.get("member") in victims)),
            "false_downs": sum(1 for e in downs if e.get("member") not in victims),
            "phases_s": {k: round(v, 1) for k, v in phases.items()},
        }


def _kill_and_time(t: Trial, victim: str) -> dict[str, float]:
    """SIGKILL ``victim``; once every other running node found it down, return ``node ->
    seconds`` from the kill to that node's verdict."""
    survivors = [n for n in t.running() if n != victim]
    killed = t.signal(victim, signal.SIGKILL)
    t.procs[victim].wait(10)
    wait_for(lambda: set(_downs_by(t, victim)) >= set(survivors), 30, interval=0.05,
             what=f"every survivor to find {victim} down",
             show=lambda: sorted(set(survivors) - set(_downs_by(t, victim))))
    return {node: stamp - killed for node, stamp in _downs_by(t, victim).items()}


def _downs_by(t: Trial, member: str) -> dict[str, float]:
    """``observer -> wall time`` of the first 'down' of ``member`` each observer emitted."""
    found: dict[str, float] = {}
    for event in t.events("down"):
        if event.get("member") == member:
            found.setdefault(event["node"], event["time"])
    return found


def _membership_rates(t: Trial, window: float) -> dict[str, float]:
    """Membership messages (heartbeats and announces) each running node received per second
    over ``window`` seconds of its own clock, once the news of the last joins has stopped
    (no node heard an announce between two readings): the mean and the most."""
    nodes = t.running()
    readings = [t.membership_heard(nodes)]

    def quiet() -> bool:
        readings.append(t.membership_heard(nodes))
        return all(readings[-1][n][1] == readings[-2][n][1] for n in nodes)

    wait_for(quiet, 30, interval=0.5, what="the announces of the joins to stop",
             show=lambda: {n: readings[-1][n][1] - readings[-2][n][1] for n in nodes})
    before = readings[-1]
    time.sleep(window)  # the measuring window
    after = t.membership_heard(nodes)
    rates = [(sum(after[n][:2]) - sum(before[n][:2])) / (after[n][2] - before[n][2])
             for n in nodes]
    return {"mean": round(statistics.fmean(rates), 2), "max": round(max(rates), 2)}


def _downs_of(t: Trial, member: str) -> list[dict[str, Any]]:
    return [e for e in t.events("down") if e.get("member") == member]


def _fenced_count(t: Trial, node: str) -> int:
    """How many deliveries ``node`` gave back unapplied (its status counter ``fenced``)."""
    from cellframe.cli.status import decode_status
    from cellframe.language.symbols import Symbol
    from tests.node_support import replies_matching

    client = t.client()
    try:
        client.send(f"node.{node}", [Symbol("status")])
        status = decode_status(replies_matching(client, "node-status", 1, 10.0)[0])
        return int(status["counters"].get("fenced", -1))
    finally:
        client.close()


def _wait_settled(t: Trial, nodes: list[str], *, tally: int,
                  since: float | None = None) -> dict[str, str | None]:
    """Wait until every node's membership view agrees on the roles, ``tally`` nodes play the
    tally role, and every node sees every other alive; return ``node -> role``."""
    client = t.client()

    def views() -> dict[str, dict[str, tuple[str | None, str]]] | None:
        from cellframe.language.symbols import Keyword, Symbol

        first = len(client.replies)
        for name in nodes:
            client.send(f"cell.{name}-membership", [Symbol("members")])
        try:
            client.wait_for_replies(first + len(nodes), 2.0 + len(nodes) / 10)
        except Exception:
            return None
        out = {}
        for reply in client.replies[first:]:
            expr = reply.expr
            node = expr[expr.index(Keyword("node")) + 1]
            rows = expr[expr.index(Keyword("view")) + 1][1]
            # Suspected is alive (only probed): 30 nodes on two busy cores always have one.
            out[node] = {row[0]: (row[1], "alive" if row[2] == "suspect" else row[2])
                         for row in rows}
        return out if len(out) == len(nodes) else None

    def agreed() -> dict[str, str | None] | None:
        seen = views()
        if seen is None:
            return None
        first = next(iter(seen.values()))
        if any(v != first for v in seen.values()):
            return None
        if any(status != "alive" for _, status in first.values()):
            return None
        roles = {n: r for n, (r, _) in first.items()}
        return roles if sum(1 for r in roles.values() if r == "tally") == tally else None

    try:
        return wait_for(agreed, 30, interval=0.3, what="the views to agree and settle",
                        show=views)
    finally:
        client.close()
