"""Starting a private HAProxy on loopback: for tests, the bench, and a node that runs its own.

``HaproxyProcess`` writes a configuration with one HTTP frontend on ``127.0.0.1:PORT``, one
backend (empty unless ``servers`` are given: the proxy cell fills it at runtime), health checks
on ``health_path``, and an admin socket for the runtime API, then runs ``haproxy -db`` (the
foreground) as a child process. ``restart()`` stops it and starts a fresh one from the same
file: the runtime changes are gone, as after any real restart. Failed connections are retried
on another server (``retry-on conn-failure`` with ``option redispatch``), so a backend that
dies between two health checks costs its in-flight requests, not new ones.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from ..errors import ConfigError
from .haproxy import SERVER_OPTIONS, HaproxyError, HaproxyRuntime

__all__ = ["HaproxyProcess", "find_haproxy", "free_port"]

#: HAProxy answered its socket 20-40 ms after start here; 10 s covers two busy cores.
START_TIMEOUT = 10.0


def find_haproxy() -> str | None:
    """The path of ``haproxy`` (Debian puts it in /usr/sbin), or None."""
    path = shutil.which("haproxy")
    if path is None and Path("/usr/sbin/haproxy").exists():
        path = "/usr/sbin/haproxy"
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(port: int, admin: Path, backend: str, health_path: str,
            servers: Iterable[tuple[str, str, int]]) -> str:
    static = "".join(f"    server {name} {host}:{sport} weight 10 {SERVER_OPTIONS}\n"
                     for name, host, sport in servers)
    return f"""global
    stats socket {admin} mode 600 level admin
    maxconn 4096
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
    http-reuse safe
frontend web_in
    bind 127.0.0.1:{port}
    default_backend {backend}
backend {backend}
    balance roundrobin
    option httpchk GET {health_path}
{static}"""


class HaproxyProcess:
    """A private HAProxy: frontend ``url``, admin socket ``socket_path``, backend ``backend``."""

    def __init__(self, *, backend: str = "web", health_path: str = "/health",
                 servers: Iterable[tuple[str, str, int]] = (), port: int | None = None) -> None:
        binary = find_haproxy()
        if binary is None:
            raise ConfigError("haproxy is not installed (Debian: apt-get install haproxy)")
        self.binary = binary
        self.directory = Path(tempfile.mkdtemp(prefix="cellframe-haproxy-"))
        self.socket_path = str(self.directory / "admin.sock")
        self.port = port or free_port()
        self.backend = backend
        self.config = self.directory / "haproxy.cfg"
        self.config.write_text(_config(self.port, Path(self.socket_path), backend, health_path,
                                       list(servers)))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def runtime(self) -> HaproxyRuntime:
        return HaproxyRuntime(self.socket_path)

    def start(self) -> HaproxyProcess:
        log = open(self.directory / "haproxy.log", "ab")  # noqa: SIM115 - the child keeps it
        with log:
            self.process = subprocess.Popen([self.binary, "-db", "-f", str(self.config)],
                                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        runtime = self.runtime()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(f"haproxy exited with {self.process.returncode}: {self.log()}")
            try:
                runtime.pid()
                return self
            except HaproxyError:
                time.sleep(0.01)
        self.stop()
        raise ConfigError(f"haproxy did not answer on {self.socket_path} in {START_TIMEOUT} s")

    def log(self) -> str:
        path = self.directory / "haproxy.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        Path(self.socket_path).unlink(missing_ok=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> HaproxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
