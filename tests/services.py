"""Where the real services are, and what a test does when one is missing.

Outside CI a missing service skips the tests that need it; under ``CI=true`` it fails them,
because ``.ci/run`` is responsible for starting everything and the suite must prove it did.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

AMQP_URL = os.environ.get("CELLFRAME_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
AMQP_HOST, AMQP_PORT = "127.0.0.1", 5672
POSTGRES_DSN = os.environ.get("CELLFRAME_TEST_POSTGRES", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
IN_CI = os.environ.get("CI", "").lower() == "true"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def missing(what: str) -> None:
    """Fail under CI, skip elsewhere: ``what`` is not available."""
    if IN_CI:
        pytest.fail(f"{what} is not available, and CI=true requires it", pytrace=False)
    pytest.skip(f"{what} is not available")


def require_amqp() -> str:
    if not port_open(AMQP_HOST, AMQP_PORT):
        missing(f"RabbitMQ on {AMQP_HOST}:{AMQP_PORT}")
    return AMQP_URL


def require_postgres() -> str:
    if not port_open(POSTGRES_HOST, POSTGRES_PORT):
        missing(f"PostgreSQL on {POSTGRES_HOST}:{POSTGRES_PORT}")
    return POSTGRES_DSN


def require_named() -> str:
    path = shutil.which("named") or ("/usr/sbin/named" if os.path.exists("/usr/sbin/named") else None)
    if path is None:
        missing("BIND 9 (named)")
    return path
