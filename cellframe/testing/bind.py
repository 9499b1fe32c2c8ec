"""A real BIND 9 on a loopback port, serving one zone, for tests of DNS behaviour.

``run_named(zone_text)`` starts ``named -g`` (the foreground, logging to a file) on a free
loopback port, waits until it answers, yields a ``BindServer`` and stops it afterwards. The
zone takes dynamic updates signed with a TSIG key made for this server (an address-only ACL
can be spoofed) and refuses zone transfers (BIND hands the whole zone to anyone otherwise).
Port 10053 is tried first, the default of ``DnsServerResolver``; never 5353, which mDNS uses.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import pytest

from ..config.resolvers import DnsServerResolver
from .services import require_named

__all__ = ["BindServer", "run_named", "zone_origin"]

DEFAULT_PORT = 10053
KEY_NAME = "cellframe-update"
#: named answered about 0.07 s after start here; 10 s covers two busy cores.
START_TIMEOUT = 10.0

_ORIGIN = re.compile(r"^\$ORIGIN\s+(\S+)", re.M)


@dataclass(frozen=True)
class BindServer:
    """Where the test BIND listens, what it serves, and the key that may update it."""

    address: str
    port: int
    zone: str
    directory: Path  # named.conf, the zone, its journal and named.log
    key_name: str
    key_secret: str

    def resolver(self, timeout: float = 2.0) -> DnsServerResolver:
        """A DnsServerResolver asking this server for its zone."""
        return DnsServerResolver(self.address, self.port, self.zone, timeout=timeout)


def zone_origin(zone_text: str) -> str:
    """The ``$ORIGIN`` of a zone's text (the zone BIND is told it serves)."""
    found = _ORIGIN.search(zone_text)
    if found is None:
        raise ValueError("the zone text has no $ORIGIN line: BIND needs to know its name")
    origin = found.group(1)
    return origin if origin.endswith(".") else origin + "."


@contextlib.contextmanager
def run_named(zone_text: str) -> Iterator[BindServer]:
    """Start BIND serving ``zone_text`` on 10053 (another free port if that is taken), yield
    it, stop it. Skips the test (fails it under CI) if ``named`` is not installed."""
    named = require_named()
    origin = zone_origin(zone_text)
    directory, key_secret = _prepare_directory(zone_text)
    ports = [DEFAULT_PORT] if _port_free(DEFAULT_PORT) else []
    ports += [_free_port(), _free_port()]
    process = port = None
    for port in ports:
        process = _start(named, directory, origin, port, key_secret)
        if process is not None:
            break
    if process is None or port is None:
        log = (directory / "named.log").read_text(errors="replace")
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(f"named did not answer on any of ports {ports}:\n{log[-2000:]}")
    try:
        yield BindServer("127.0.0.1", port, origin, directory, KEY_NAME, key_secret)
    finally:
        _stop(process)
        shutil.rmtree(directory, ignore_errors=True)


def _port_free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _named_conf(directory: Path, origin: str, port: int, key_secret: str) -> str:
    return f"""
key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{key_secret}"; }};
controls {{ }};
options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    session-keyfile "{directory}/session.key";
    managed-keys-directory "{directory}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    allow-query {{ any; }};
    allow-transfer {{ none; }};
    dnssec-validation no;
    notify no;
}};
zone "{origin}" {{
    type primary;
    file "{directory}/zone.db";
    allow-update {{ key "{KEY_NAME}"; }};
    allow-transfer {{ none; }};
}};
"""


def _answers(origin: str, port: int) -> bool:
    query = dns.message.make_query(origin, "SOA")
    try:
        return bool(dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2).answer)
    except (OSError, dns.exception.DNSException):
        return False


def _prepare_directory(zone_text: str) -> tuple[Path, str]:
    directory = Path(tempfile.mkdtemp(prefix="cellframe-named-"))
    (directory / "zone.db").write_text(zone_text)
    key_secret = base64.b64encode(secrets.token_bytes(32)).decode()
    if os.geteuid() == 0:  # named drops to user bind, which must write the journal here
        for path in (directory, *directory.iterdir()):
            shutil.chown(path, "bind", "bind")
    return directory, key_secret


def _start(named: str, directory: Path, origin: str, port: int,
           key_secret: str) -> subprocess.Popen[bytes] | None:
    conf = directory / "named.conf"
    conf.write_text(_named_conf(directory, origin, port, key_secret))
    user = ["-u", "bind"] if os.geteuid() == 0 else []
    with open(directory / "named.log", "wb") as log:  # named keeps its own copy open
        process = subprocess.Popen([named, "-c", str(conf), "-g", *user], stdout=log, stderr=log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        if _answers(origin, port):
            return process
        time.sleep(0.01)
    _stop(process)
    return None


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
