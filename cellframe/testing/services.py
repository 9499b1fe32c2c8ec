"""What a test does when a real service it needs is missing: skip, or fail under CI.

Outside CI a missing RabbitMQ or BIND 9 skips the tests that need it, so the suite runs on a
laptop with what is there. Under ``CI=true`` it fails them instead: CI is responsible for
starting every service, and a suite that skipped its broker tests would prove nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

__all__ = ["amqp_address", "in_ci", "missing", "port_open", "require_amqp", "require_named"]

#: Where ``named`` is when it is not on PATH (Debian puts it in /usr/sbin).
NAMED_FALLBACK = "/usr/sbin/named"


def in_ci() -> bool:
    """Is this a CI run (``CI=true``)? Read at each call, so a test may set it."""
    return os.environ.get("CI", "").lower() == "true"


def missing(what: str) -> NoReturn:
    """Fail under CI, skip elsewhere: ``what`` is not available."""
    if in_ci():
        pytest.fail(f"{what} is not available, and CI=true requires it", pytrace=False)
    pytest.skip(f"{what} is not available")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def amqp_address(url: str) -> tuple[str, int]:
    """The host and port an AMQP URL points at (5672, or 5671 for ``amqps``, by default)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname or "localhost", port or (5671 if parts.scheme == "amqps" else 5672)


def require_amqp(url: str) -> str:
    """``url``, if a broker listens where it points; otherwise skip (fail under CI)."""
    host, port = amqp_address(url)
    if not port_open(host, port):
        missing(f"RabbitMQ at {host}:{port}")
    return url


def require_named() -> str:
    """The path of BIND 9's ``named``; skip (fail under CI) if it is not installed."""
    path = shutil.which("named") or (NAMED_FALLBACK if os.path.exists(NAMED_FALLBACK) else None)
    if path is None:
        missing("BIND 9 (named)")
    return path
