"""Waiting in tests without fixed sleeps: ``wait_for`` until something is true, and
``holds_for``, that it stays true.

``wait_for`` is defined in ``cellframe.node.cluster``, the floor of ``LocalCluster``: library
code waits with it too, and may not import ``cellframe.testing``. It is re-exported here, so
there is one ``wait_for``, failing one way.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..node.cluster import wait_for

__all__ = ["holds_for", "wait_for"]


def holds_for(predicate: Callable[[], object], duration: float) -> bool:
    """True if ``predicate`` stays truthy for ``duration`` seconds: for "nothing else arrives"."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.005)
    return bool(predicate())
