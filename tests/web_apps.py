"""WSGI apps for the web-tier tests: one that answers which server served it, and can be slowed.

``app`` answers its server's port, so a client counts where each request went. A test slows
one server by ``slow(port, seconds)`` (every server: ``SLOW["*"]``): in this process through
``SLOW``, and across processes
through a file ``<CELLFRAME_TEST_WEB_SLOW>/<port>`` holding the seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

SLOW: dict[str, float] = {}
SLOW_DIR_VARIABLE = "CELLFRAME_TEST_WEB_SLOW"


def slow(port: int, seconds: float) -> None:
    """Make the server on ``port`` sleep ``seconds`` a request (0: fast again)."""
    SLOW[str(port)] = seconds
    folder = os.environ.get(SLOW_DIR_VARIABLE)
    if folder:
        path = Path(folder) / str(port)
        if seconds:
            path.write_text(str(seconds))
        else:
            path.unlink(missing_ok=True)


def _delay(port: str) -> float:
    if port in SLOW or "*" in SLOW:
        return SLOW.get(port, SLOW.get("*", 0.0))
    folder = os.environ.get(SLOW_DIR_VARIABLE)
    if folder:
        try:
            return float((Path(folder) / port).read_text())
        except (OSError, ValueError):
            return 0.0
    return 0.0


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    delay = _delay(environ["SERVER_PORT"])
    if delay:
        time.sleep(delay)
    body = environ["SERVER_PORT"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
