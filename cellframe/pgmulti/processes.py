"""Running pgbouncer and private PostgreSQL servers on loopback addresses, for tests, demos and
``cellframe bench``.

Both refuse to run as root, so when this process is root they run as ``postgres`` (pgbouncer
with its own ``-u``, PostgreSQL through ``runuser``), in folders that user owns. The servers
are made from one ``initdb`` copied per server (1.1 s for initdb here, 0.3 s for a copy);
each listens on its own loopback address (127.0.0.2, 127.0.0.3...) on one shared port, with
the same database name, which is the layout pgbouncer's round-robin host list needs (see
``bouncer``). Linux routes all of 127.0.0.0/8 to the loopback device, so no set-up is needed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, StoreError
from .bouncer import ADMIN_DATABASE, BouncerSettings, bouncer_ini, write_file_atomically
from .layout import Endpoint, PgLayout

__all__ = ["BouncerProcess", "LocalServer", "free_port", "local_servers", "run_bouncer"]

_SERVICE_USER = "postgres"
_START_TIMEOUT = 30.0


def _as_service_user() -> bool:
    return os.geteuid() == 0


def _hand_over(path: Path) -> None:
    """Let the service user own ``path`` when we are root (it refuses to run as root)."""
    if _as_service_user():
        entry = pwd.getpwnam(_SERVICE_USER)
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def free_port(hosts: tuple[str, ...] = ("127.0.0.1",)) -> int:
    """A TCP port free on every one of ``hosts`` at the time of asking."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        if all(_bindable(host, port) for host in hosts[1:]):
            return port
    raise ConfigError(f"no port is free on all of {', '.join(hosts)}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _wait_port(host: str, port: int, what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StoreError(f"{what} exited with {process.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise StoreError(f"{what} did not listen on {host}:{port} within {_START_TIMEOUT:g} s: {_tail(log)}")


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-1500:]
    except OSError:
        return "(no log)"


# -- pgbouncer -------------------------------------------------------------------------------


@dataclass
class BouncerProcess:
    """A running pgbouncer: its configuration file, its port, and its admin console."""

    folder: Path
    settings: BouncerSettings
    process: subprocess.Popen[bytes]

    @property
    def config_path(self) -> Path:
        return self.folder / "pgbouncer.ini"

    @property
    def log_path(self) -> Path:
        return self.folder / "pgbouncer.log"

    def conninfo(self, dbname: str, **extra: Any) -> str:
        """A connection string for database ``dbname`` of this pgbouncer."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=self.settings.listen_addr, port=self.settings.listen_port,
                             dbname=dbname, user=self.settings.admin_users[0], **extra)

    @property
    def admin_conninfo(self) -> str:
        return self.conninfo(ADMIN_DATABASE)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if found is None:
        raise ConfigError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    return found


@contextlib.contextmanager
def run_bouncer(layout: PgLayout, settings: BouncerSettings | None = None, *,
                folder: str | os.PathLike[str] | None = None) -> Iterator[BouncerProcess]:
    """Start pgbouncer for ``layout`` on a free loopback port (or ``settings.listen_port``),
    with a trust ``auth_file`` naming every user of the layout; stop it on the way out."""
    binary = _pgbouncer_binary()
    owned = folder is None
    work = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="cf-pgbouncer-"))
    settings = settings or BouncerSettings(listen_port=free_port())
    settings = replace(settings, auth_file=str(work / "userlist.txt"))
    users = {settings.admin_users[0], layout.read.user, *(m.endpoint.user for m in layout.masters)}
    (work / "userlist.txt").write_text("".join(f'"{user}" ""\n' for user in sorted(users)))
    write_file_atomically(work / "pgbouncer.ini", bouncer_ini(layout, settings))
    _hand_over(work)
    log = work / "pgbouncer.log"
    command = [binary, *(["-u", _SERVICE_USER] if _as_service_user() else []), str(work / "pgbouncer.ini")]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    bouncer = BouncerProcess(work, settings, process)
    try:
        _wait_port(settings.listen_addr, settings.listen_port, "pgbouncer", process, log)
        yield bouncer
    finally:
        bouncer.stop()
        if owned:
            shutil.rmtree(work, ignore_errors=True)


# -- private PostgreSQL servers ----------------------------------------------------------------


@dataclass
class LocalServer:
    """One private PostgreSQL server on a loopback address."""

    data: Path
    endpoint: Endpoint
    bindir: Path
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.data.parent / f"{self.data.name}.log"

    def _ctl(self, *args: str) -> None:
        command = [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]
        if _as_service_user():
            command = ["runuser", "-u", _SERVICE_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise StoreError(f"pg_ctl {' '.join(args)} on {self.endpoint.describe()} failed:"
                             f" {done.stderr.strip() or done.stdout.strip()} {_tail(self.log)}")

    def start(self) -> None:
        self._ctl("-w", "-t", str(int(_START_TIMEOUT)), "-l", str(self.log), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean), or ``immediate``, a crash that recovery repairs."""
        self._ctl("-w", "-m", mode, "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


def _bindir() -> Path:
    config = shutil.which("pg_config")
    if config:
        done = subprocess.run([config, "--bindir"], capture_output=True, text=True, timeout=10)
        candidate = Path(done.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise ConfigError("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
    return found[-1].parent


def _server_settings(host: str, port: int) -> str:
    # Small and private: no Unix socket in a shared /tmp, few connections, little memory.
    # fsync and synchronous_commit stay on, so an acknowledged insert survives a crash.
    return "\n".join([
        f"listen_addresses = '{host}'", f"port = {port}", "unix_socket_directories = ''",
        "max_connections = 60", "shared_buffers = 16MB", "logging_collector = off", "",
    ])


@contextlib.contextmanager
def local_servers(count: int, *, dbname: str = "cellframe", first_host: int = 2,
                  folder: str | os.PathLike[str] | None = None) -> Iterator[list[LocalServer]]:
    """``count`` private servers on 127.0.0.<first_host>, 127.0.0.<first_host + 1>... sharing
    one free port, each with an empty database ``dbname``; stopped and removed afterwards."""
    bindir = _bindir()
    hosts = tuple(f"127.0.0.{first_host + i}" for i in range(count))
    port = free_port(hosts)
    work = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="cf-pgservers-"))
    _hand_over(work)
    servers: list[LocalServer] = []
    try:
        template = work / "template"
        _initdb(bindir, template)
        for index, host in enumerate(hosts):
            data = work / f"server-{index}"
            shutil.copytree(template, data, symlinks=True)
            with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.write(_server_settings(host, port))
            _hand_over(data)
            servers.append(LocalServer(data, Endpoint(host, dbname, port), bindir))
        for server in servers:
            server.start()
        for server in servers:
            _create_database(server.endpoint)
        yield servers
    finally:
        for server in servers:
            if server.running():
                with contextlib.suppress(StoreError):
                    server.stop("immediate")
        shutil.rmtree(work, ignore_errors=True)


def _initdb(bindir: Path, data: Path) -> None:
    command = [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", _SERVICE_USER,
               "-E", "UTF8", "--no-sync", "--no-instructions"]
    if _as_service_user():
        command = ["runuser", "-u", _SERVICE_USER, "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise StoreError(f"initdb failed: {done.stderr.strip()[-1500:]}")


def _create_database(endpoint: Endpoint) -> None:
    import psycopg

    try:
        with psycopg.connect(replace(endpoint, dbname="postgres").conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{endpoint.dbname}"')
    except psycopg.Error as exc:
        raise StoreError(f"creating {endpoint.describe()}: {exc}") from exc
