"""A real HAProxy on a loopback port, with its runtime API, for tests of the web tier.

``run_haproxy()`` starts a private ``HaproxyProcess`` (an HTTP frontend, an empty backend
``web`` that the proxy cell fills at runtime, health checks on ``/health``, an admin socket),
yields it and removes it afterwards. Skips the test (fails it under CI) if ``haproxy`` is not
installed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..web.launch import HaproxyProcess, find_haproxy
from .services import missing

__all__ = ["require_haproxy", "run_haproxy"]


def require_haproxy() -> str:
    """The path of ``haproxy``; skip (fail under CI) if it is not installed."""
    path = find_haproxy()
    if path is None:
        missing("HAProxy (haproxy)")
    return path


@contextlib.contextmanager
def run_haproxy(**options: Any) -> Iterator[HaproxyProcess]:
    """A started private HAProxy (``options`` as for ``HaproxyProcess``), removed afterwards."""
    require_haproxy()
    with HaproxyProcess(**options) as haproxy:
        yield haproxy
