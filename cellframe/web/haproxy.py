"""HAProxy's runtime API: one command a line on its admin socket, answers parsed into values.

Measured on HAProxy 2.6 (Debian): a server added at runtime starts in maintenance and does not
inherit ``default-server``, so ``add_server`` passes its check settings itself and then enables
health checks and the server. ``del server`` is refused until the server is in maintenance and
has no connections, so ``delete_server`` disables it first. Every command opens its own
connection (the socket closes after one answer unless put in interactive mode): about 0.1 ms on
loopback, far below anything a weight change needs. Socket errors are translated here, once,
into ``HaproxyError``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from ..errors import HaproxyError, HaproxyUnreachableError

__all__ = [
    "SERVER_OPTIONS", "HaproxyError", "HaproxyRuntime", "HaproxyUnreachableError", "ServerState",
]

#: What a server added at runtime is given. It inherits no ``default-server``, and measured
#: here, without ``pool-max-conn`` and ``pool-purge-delay`` HAProxy 2.6 kept no idle connection
#: to it: every request opened a new one (50 requests, 50 connects, 0 reuses; with them, 1 and
#: 49), which halved the requests per second through it to a Python server. Idle connections
#: also keep ``del server`` refused ("still has connections attached") until purged, so the
#: purge delay is short: 1 s, and a removed server is gone from HAProxy within about that.
SERVER_OPTIONS = "check inter 100 fall 2 rise 1 pool-max-conn 100 pool-purge-delay 1s"

#: Answers that mean the command did what it was asked (HAProxy answers an empty line too).
_DONE = ("", "New server registered.", "Server deleted.")


#: Admin-state bits that mean maintenance (forced, inherited, by configuration, DNS, health).
_MAINTENANCE = 0x01 | 0x02 | 0x04 | 0x20 | 0x40


@dataclass(frozen=True, slots=True)
class ServerState:
    """One server of a backend as ``show servers state`` and ``show stat`` tell it."""

    name: str
    address: str
    port: int
    weight: int
    operational: int  # 0 stopped (down), 1 starting, 2 running, 3 stopping
    admin: int  # bits: 0x01 forced maintenance, 0x08 forced drain, ... (0: ready)

    @property
    def up(self) -> bool:
        return self.operational == 2 and self.admin & _MAINTENANCE == 0

    @property
    def draining(self) -> bool:
        return bool(self.admin & 0x08)


class HaproxyRuntime:
    """A client of one HAProxy's admin socket (``stats socket PATH level admin``)."""

    def __init__(self, socket_path: str, *, timeout: float = 1.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def command(self, line: str) -> str:
        """Send one command and return HAProxy's answer (HaproxyError if it cannot be sent)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path)
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise HaproxyUnreachableError(f"HAProxy at {self.socket_path} did not answer {line!r}: {exc}") from exc
        return b"".join(chunks).decode(errors="replace").strip()

    def _expect_done(self, line: str) -> None:
        answer = self.command(line)
        if answer not in _DONE:
            raise HaproxyError(f"HAProxy refused {line!r}: {answer}")

    def add_server(self, backend: str, name: str, address: str, port: int, weight: int, *,
                   options: str = SERVER_OPTIONS) -> None:
        """Add ``backend/name`` and put it in service; its health checks use the backend's
        ``option httpchk`` (one request line per backend in HAProxy 2.6)."""
        self._expect_done(f"add server {backend}/{name} {address}:{port} weight {weight} {options}")
        if "check" in options.split():
            self._expect_done(f"enable health {backend}/{name}")
        self._expect_done(f"enable server {backend}/{name}")

    def set_weight(self, backend: str, name: str, weight: int) -> None:
        self._expect_done(f"set weight {backend}/{name} {weight}")

    def drain(self, backend: str, name: str) -> None:
        """No new requests to ``name``; those in progress finish."""
        self._expect_done(f"set server {backend}/{name} state drain")

    def ready(self, backend: str, name: str) -> None:
        self._expect_done(f"set server {backend}/{name} state ready")

    def delete_server(self, backend: str, name: str) -> None:
        """Put ``name`` in maintenance, close what it still holds, and delete it."""
        self._expect_done(f"disable server {backend}/{name}")
        self.command(f"shutdown sessions server {backend}/{name}")
        self._expect_done(f"del server {backend}/{name}")

    def servers(self, backend: str) -> dict[str, ServerState]:
        """``show servers state``: every server of ``backend`` by name."""
        answer = self.command(f"show servers state {backend}")
        if not answer.startswith("1"):
            raise HaproxyError(f"HAProxy has no backend {backend!r}: {answer}")
        found: dict[str, ServerState] = {}
        for row in answer.splitlines()[2:]:
            fields = row.split()
            if len(fields) < 19:
                continue
            found[fields[3]] = ServerState(
                name=fields[3], address=fields[4], port=int(fields[18]),
                weight=int(fields[7]), operational=int(fields[5]), admin=int(fields[6]))
        return found

    def request_totals(self, backend: str) -> dict[str, int]:
        """Requests each server of ``backend`` has been sent (``show stat``, column stot)."""
        lines = self.command("show stat").splitlines()
        if not lines:
            raise HaproxyError("HAProxy's show stat was empty")
        header = lines[0].lstrip("# ").split(",")
        name, server, total = header.index("pxname"), header.index("svname"), header.index("stot")
        totals: dict[str, int] = {}
        for row in lines[1:]:
            fields = row.split(",")
            if len(fields) > total and fields[name] == backend and fields[server] not in (
                    "BACKEND", "FRONTEND"):
                totals[fields[server]] = int(fields[total] or 0)
        return totals

    def pid(self) -> int:
        """The HAProxy process's id (``show info``): a new one means HAProxy restarted."""
        for line in self.command("show info").splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
        raise HaproxyError("HAProxy's show info named no Pid")
