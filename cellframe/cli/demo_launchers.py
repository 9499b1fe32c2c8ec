"""Where the demo's cluster runs: in this process (embedded) or as node processes (AMQP)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ..client import Client
from ..errors import ClusterError
from ..node.children import terminate_all
from ..node.cluster import LocalCluster
from ..wire.keys import dump_keys, new_key
from ..wire.signing import Signer

__all__ = ["EmbeddedLauncher", "ProcessLauncher"]


class EmbeddedLauncher:
    """The whole cluster in this process, on one MemoryBroker (nothing else installed)."""

    def __init__(self, zone: str | Path, *, workdir: str | Path | None = None):
        # An ephemeral node key: the demo is signed with no set-up.
        self.signer = Signer(new_key("demo", kind="node"))
        self.cluster = LocalCluster(zone, workdir=workdir, signer=self.signer)

    def start(self) -> list[str]:
        self.cluster.start()
        return list(self.cluster.names)

    def kill(self, name: str) -> float:
        return self.cluster.kill(name)

    def client(self) -> Client:
        return Client(self.cluster.broker.connect(name="demo-observer"), signer=self.signer)

    def stop(self) -> None:
        self.cluster.stop()


class ProcessLauncher:
    """One ``cellframe node`` process per node on RabbitMQ, on a topology of its own."""

    def __init__(self, amqp: str, *, zone: str | None = None, dns: str | None = None,
                 domain: str | None = None, names: list[str] | None = None,
                 workdir: str | Path | None = None):
        from ..config.resolvers import resolver_from_options

        self.amqp, self.zone, self.dns, self.domain = amqp, zone, dns, domain
        self.token = uuid.uuid4().hex[:8]
        self.exchange = f"cellframe-demo.{self.token}"
        self.prefix = f"cellframe-demo.{self.token}."
        resolver = resolver_from_options(zone_file=zone, dns=dns, domain=domain)
        self.names = names or _playable(resolver)
        resolver.close()
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="cellframe-demo-"))
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.transports: list[Any] = []
        # Ephemeral keys, readable by this user alone, gone with the demo's folder.
        key = new_key("demo", kind="node")
        self.key_file = self.workdir / "demo.keys"
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(dump_keys([key]))
        self.signer = Signer(key, exchange=self.exchange)

    def _command(self, name: str) -> list[str]:
        # Data (the log sump's files, a shard's store) in the demo's folder, not the user's.
        command = [sys.executable, "-m", "cellframe", "node", name, "--amqp", self.amqp,
                   "--exchange", self.exchange, "--queue-prefix", self.prefix,
                   "--data-dir", str(self.workdir / "data"), "--keys", str(self.key_file)]
        if self.dns:
            command += ["--dns", self.dns, "--domain", self.domain or ""]
        elif self.zone:
            command += ["--zone", self.zone]
        return command

    def start(self) -> list[str]:
        for name in self.names:
            log = open(self.workdir / f"demo-{self.token}-{name}.log", "wb")  # noqa: SIM115
            self.processes[name] = subprocess.Popen(self._command(name), stdout=log, stderr=log,
                                                   cwd=self.workdir)
        self._wait_ready(30.0)
        return list(self.names)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.names)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                log = self.workdir / f"demo-{self.token}-{name}.log"
                if b"ready as" in log.read_bytes():
                    pending.discard(name)
                elif self.processes[name].poll() is not None:
                    raise ClusterError(f"node {name} exited early; see {log}")
            time.sleep(0.05)
        if pending:
            raise ClusterError(f"nodes {sorted(pending)} did not start within {timeout} s")

    def kill(self, name: str) -> float:
        killed_at = time.time()
        os.kill(self.processes[name].pid, signal.SIGKILL)
        self.processes[name].wait(10)
        return killed_at

    def client(self) -> Client:
        from ..transports.amqp import AmqpTransport
        from ..transports.topology import amqp_topology

        transport = AmqpTransport(self.amqp, name="demo-observer", **amqp_topology(self.exchange))
        self.transports.append(transport)
        return Client(transport, queue_prefix=self.prefix, signer=self.signer)

    def stop(self) -> None:
        terminate_all(self.processes.values())
        for transport in self.transports:
            transport.close()
        self._delete_topology()

    def _delete_topology(self) -> None:
        """Remove this run's exchange and durable queues: the broker is shared."""
        import pika

        from ..transports.topology import amqp_topology

        names = amqp_topology(self.exchange)
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.amqp))
        except pika.exceptions.AMQPError:
            return
        try:
            channel = connection.channel()
            for role in ("proxy", "web", "shard", "logsump", "keepalive"):
                channel.queue_delete(f"{self.prefix}role.{role}")
            channel.queue_delete(names["dead_letter_queue"])
            channel.exchange_delete(names["exchange"])
            channel.exchange_delete(names["dead_letter_exchange"])
        finally:
            connection.close()


def _playable(resolver: Any) -> list[str]:
    """The zone's nodes whose role a node process can play (spares included), minus those
    whose records carry warnings (the zone's deliberately broken example)."""
    from ..roles import default_registry

    roles = default_registry()
    names = []
    for name in resolver.node_names():
        config = resolver.node_config(name)
        if config.role is None or (not config.warnings and config.role in roles):
            names.append(name)
    return names
