"""``cellframe node`` processes on the real RabbitMQ, for the tests that need real processes.

A ``ProcessCluster`` gives its nodes a topology of their own on the shared broker (control
exchange ``cf-test.<token>.control``, queues prefixed ``cf-test.<token>.``), a cluster secret,
and the test cells of ``tests/process_cells.py`` (``--plugin tests.process_cells:ROLES``, with
the repository on ``PYTHONPATH``). ``start`` launches
several nodes at once and waits for each one's ``node NAME ready`` line; ``close`` kills what is
still running and deletes the topology. Connections are killed broker-side by name, and each
node's connection is named ``NAME@HOST:PID``, so a test only ever touches its own.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellframe.cli.status import decode_status
from cellframe.client import Client
from cellframe.language.symbols import Symbol
from cellframe.testing import AmqpNames, wait_for
from cellframe.transports.amqp import AmqpTransport
from cellframe.wire.signing import Signer
from tests.node_support import replies_matching
from tests.process_cells import ROLES, TALLY_DIR

__all__ = [
    "REPO",
    "NodeProcess",
    "ProcessCluster",
    "Stream",
    "child_env",
]

REPO = Path(__file__).resolve().parent.parent
#: Long enough for several interpreters starting at once on two busy cores.
READY_TIMEOUT = 60.0


def child_env(**variables: str) -> dict[str, str]:
    """The environment of a child ``python -m cellframe``: this one, with the repository on
    ``PYTHONPATH`` so that ``--plugin tests.process_cells:ROLES`` imports."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **variables)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@dataclass
class NodeProcess:
    """One ``python -m cellframe node`` process and the file its output goes to."""

    name: str
    popen: subprocess.Popen[bytes]
    output: Path

    @property
    def connection_name(self) -> str:
        """The name its broker connection carries (see ``cellframe node``)."""
        return f"{self.name}@{socket.gethostname()}:{self.popen.pid}"

    def text(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")

    def is_ready(self) -> bool:
        """True once the node printed its ready line; AssertionError if it exited first."""
        text = self.text()
        if f"node {self.name} ready" in text:
            return True
        if self.popen.poll() is not None:
            raise AssertionError(f"node {self.name} exited with {self.popen.returncode} before "
                                 f"it was ready:\n{text[-3000:]}")
        return False


@dataclass
class ProcessCluster:
    """Node processes sharing one test topology on ``url`` (``names``, an AmqpNames);
    ``close()`` removes everything."""

    url: str
    workdir: Path
    dns: Any = None  # a cellframe.testing.BindServer the nodes read their config from
    nodes: dict[str, NodeProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.names = AmqpNames(self.url)
        for role in ROLES:  # the nodes' durable role queues, deleted by close()
            self.names.queue(f"role.{role}")
        self.secret = secrets.token_hex(16).encode()
        self.secret_file = self.workdir / "cluster.secret"
        self.secret_file.write_bytes(self.secret)
        self.secret_file.chmod(0o600)  # else each node warns that others may read it
        self.tally_dir = self.workdir / "tallies"
        self.tally_dir.mkdir(exist_ok=True)
        self.signer = Signer(self.secret, exchange=self.names.exchange)

    @property
    def exchange(self) -> str:
        return self.names.exchange

    @property
    def prefix(self) -> str:
        return self.names.queue_prefix

    # -- node processes -----------------------------------------------------------------------

    def command(self, name: str, *args: str) -> list[str]:
        """The command line of node ``name`` on this cluster's topology."""
        where = (["--dns", f"{self.dns.address}:{self.dns.port}", "--domain", self.dns.zone]
                 if self.dns is not None else [] if "--zone" in args else ["--example"])
        return [sys.executable, "-m", "cellframe", "node", name, "--amqp", self.url, *where,
                "--secret-file", str(self.secret_file), "--exchange", self.exchange,
                "--queue-prefix", self.prefix, "--plugin", "tests.process_cells:ROLES", *args]

    def launch(self, name: str, *args: str) -> NodeProcess:
        """Start node ``name`` without waiting for it."""
        output = self.workdir / f"{name}.{len(self.nodes)}.out"
        env = child_env(**{TALLY_DIR: str(self.tally_dir)})
        with output.open("wb") as out:
            popen = subprocess.Popen(self.command(name, *args), stdout=out,
                                     stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
        self.nodes[name] = NodeProcess(name, popen, output)
        return self.nodes[name]

    def start(self, names: Iterable[str], *args: str) -> list[NodeProcess]:
        """Start several nodes at once (each with ``args``) and wait until all are ready."""
        return self.wait_ready([self.launch(name, *args) for name in names])

    def wait_ready(self, nodes: list[NodeProcess]) -> list[NodeProcess]:
        """Wait until every one of ``nodes`` printed its ready line."""
        wait_for(lambda: all(node.is_ready() for node in nodes), READY_TIMEOUT,
                 interval=0.05, what=f"nodes {[n.name for n in nodes]} ready")
        return nodes

    def terminate(self, name: str, timeout: float = 20.0) -> int:
        """SIGTERM node ``name`` and return its exit code."""
        node = self.nodes[name]
        node.popen.send_signal(signal.SIGTERM)
        return node.popen.wait(timeout)

    def kill(self, name: str) -> None:
        """SIGKILL node ``name``: nothing it holds is flushed, no goodbye is said."""
        node = self.nodes[name]
        node.popen.send_signal(signal.SIGKILL)
        node.popen.wait(10)

    # -- this test's side of the wire ---------------------------------------------------------

    def connect(self, label: str = "client") -> AmqpTransport:
        """A transport of the test's own on the cluster's topology (closed by ``close``)."""
        return self.names.connect(name=f"cf-test-{self.names.token}-{label}-"
                                  f"{uuid.uuid4().hex[:6]}", connect_timeout=10.0,
                                  op_timeout=20.0)

    def client(self, label: str = "client", *, signed: bool = True) -> Client:
        """A client that signs with the cluster secret and collects call-backs."""
        return Client(self.connect(label), signer=self.signer if signed else None,
                      queue_prefix=self.prefix)

    def status(self, client: Client, node: str, timeout: float = 30.0) -> dict[str, Any]:
        """Ask node ``node`` for ``(status)`` and return its decoded call-back."""
        first = len(client.replies)
        client.send(f"node.{node}", [Symbol("status")])
        found = replies_matching(client, "node-status", 1, timeout, since=first)
        return decode_status(found[0])

    def cell(self, client: Client, node: str, cell: str | None = None) -> dict[str, Any]:
        """The snapshot of cell ``cell`` (default: the node's own role cell) from its status."""
        wanted = cell or node
        cells = [c for c in self.status(client, node)["cells"] if c["name"] == wanted]
        assert cells, f"node {node} hosts no cell {wanted}"
        return cells[0]

    def close(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL), close transports, delete the topology."""
        running = [n for n in self.nodes.values() if n.popen.poll() is None]
        for node in running:
            node.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for node in running:
            try:
                node.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.popen.kill()
                node.popen.wait(5)
        self.names.cleanup()


class Stream:
    """Sends ``(add 1)`` to ``target`` from a thread, about ``rate`` a second, until stopped;
    ``ids`` holds the id of every message sent (each confirmed or resent by the transport)."""

    def __init__(self, client: Client, target: str, rate: int = 1000, batch: int = 10) -> None:
        self.client, self.target = client, target
        self.every, self.batch = batch / rate, batch
        self.ids: list[str] = []
        self._until: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stream-{target}", daemon=True)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._until = len(self.ids)
        self._stop.set()
        self._thread.join(10)

    def finish(self, more: int) -> list[str]:
        """Send ``more`` messages after this call, then stop; return every id sent."""
        self._until = len(self.ids) + more
        self._thread.join(60)
        assert not self._thread.is_alive(), "the stream did not finish"
        return list(self.ids)

    def _run(self) -> None:
        add = [Symbol("add"), 1]
        while self._until is None or len(self.ids) < self._until:
            for _ in range(self.batch):
                self.ids.append(self.client.send(self.target, add, expect_reply=False))
            if self._stop.wait(self.every):
                return
