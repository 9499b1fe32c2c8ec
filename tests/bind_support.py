"""A real BIND 9 serving a copy of ``examples/cluster.zone``, for the tests of DNS behaviour.

``bind_server`` (module scope: every test module gets a fresh zone, since the registration tests
change it) starts ``named -g`` on a free loopback port, waits until it answers, yields a
``BindServer``, and stops it afterwards. The zone takes dynamic updates signed with a TSIG key
generated for the run, and refuses zone transfers.
"""

from __future__ import annotations

import base64
import doctest
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import pytest
from services import require_named

__all__ = [
    "DOCS",
    "BindServer",
    "DocBlock",
    "ZONE_FILE",
    "bind_server",
    "doc_blocks",
    "run_doc_block",
    "run_named",
    "wait_for",
]

ROOT = Path(__file__).resolve().parent.parent
ZONE_FILE = ROOT / "examples" / "cluster.zone"
DOCS = ROOT / "docs" / "dns.md"
ZONE = "cluster.test."
KEY_NAME = "cellframe-update"
DEFAULT_PORT = 10053


@dataclass(frozen=True)
class BindServer:
    """Where the test BIND listens, what it serves, and the key that may update it."""

    address: str
    port: int
    zone: str
    directory: Path
    zone_path: Path
    key_name: str
    key_secret: str


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.01) -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


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
        return sock.getsockname()[1]


def _named_conf(directory: Path, port: int, key_secret: str) -> str:
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
zone "{ZONE}" {{
    type primary;
    file "{directory}/cluster.zone";
    allow-update {{ key "{KEY_NAME}"; }};
    allow-transfer {{ none; }};
}};
"""


def _answers(port: int) -> bool:
    query = dns.message.make_query(ZONE, "SOA")
    try:
        return bool(dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2).answer)
    except (OSError, dns.exception.DNSException):
        return False


def _prepare_directory(zone_text: str) -> tuple[Path, str]:
    directory = Path(tempfile.mkdtemp(prefix="cellframe-named-"))
    (directory / "cluster.zone").write_text(zone_text)
    key_secret = base64.b64encode(secrets.token_bytes(32)).decode()
    if os.geteuid() == 0:  # named drops to user bind, which must write the journal here
        for path in (directory, *directory.iterdir()):
            shutil.chown(path, "bind", "bind")
    return directory, key_secret


def _start(named: str, directory: Path, port: int, key_secret: str) -> subprocess.Popen | None:
    conf = directory / "named.conf"
    conf.write_text(_named_conf(directory, port, key_secret))
    user = ["-u", "bind"] if os.geteuid() == 0 else []
    log = open(directory / "named.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen([named, "-c", str(conf), "-g", *user], stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process.poll() is None:
        if _answers(port):
            return process
        time.sleep(0.01)
    _stop(process)
    return None


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def run_named(zone_text: str | None = None) -> Iterator[BindServer]:
    """Start BIND on 10053 (another free port if that is taken), yield it, stop it."""
    named = require_named()
    directory, key_secret = _prepare_directory(zone_text or ZONE_FILE.read_text())
    ports = [DEFAULT_PORT] if _port_free(DEFAULT_PORT) else []
    ports += [_free_port(), _free_port()]
    process = None
    for port in ports:
        process = _start(named, directory, port, key_secret)
        if process is not None:
            break
    if process is None:
        log = (directory / "named.log").read_text(errors="replace")
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(f"named did not answer on any of ports {ports}:\n{log[-2000:]}")
    try:
        yield BindServer(
            "127.0.0.1", port, ZONE, directory, directory / "cluster.zone", KEY_NAME, key_secret
        )
    finally:
        _stop(process)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def bind_server() -> Iterator[BindServer]:
    """A fresh BIND serving ``examples/cluster.zone`` for the tests of one module."""
    yield from run_named()


@dataclass(frozen=True)
class DocBlock:
    """One fenced code block of a Markdown page: its language, text, first line, and needs."""

    language: str
    text: str
    line: int
    needs: str | None


_FENCE = re.compile(
    r"(?:<!-- needs: (?P<needs>[\w-]+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)^```$",
    re.S | re.M,
)


def doc_blocks(path: Path = DOCS) -> list[DocBlock]:
    """Every fenced block of ``path``; ``<!-- needs: X -->`` just above one marks what it needs."""
    text = path.read_text()
    return [
        DocBlock(m["lang"], m["body"], text.count("\n", 0, m.start("body")) + 1, m["needs"])
        for m in _FENCE.finditer(text)
    ]


def run_doc_block(block: DocBlock, globs: dict[str, object], path: Path = DOCS) -> None:
    """Run one ``pycon`` block as a doctest (ELLIPSIS on) and fail the test on any mismatch.

    ``globs`` is shared: names a block defines are seen by the blocks after it.
    """
    test = doctest.DocTestParser().get_doctest(
        block.text, globs, f"{path.name}:{block.line}", str(path), block.line - 1
    )
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    runner.run(test, out=report.append, clear_globs=False)
    globs.update(test.globs)  # DocTest works on a copy: carry names on to the next block
    if runner.failures:
        pytest.fail("".join(report), pytrace=False)
