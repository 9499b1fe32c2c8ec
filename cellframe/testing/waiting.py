"""Asserting that something stays true: ``holds_for``, the counterpart of ``wait_for``.

``wait_for`` itself lives in ``cellframe.node.cluster`` (library code waits with it, and a
module there may not import ``cellframe.testing``); ``cellframe.testing`` exports both.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["holds_for"]


def holds_for(predicate: Callable[[], object], duration: float) -> bool:
    """True if ``predicate`` stays truthy for ``duration`` seconds: for "nothing else arrives"."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.005)
    return bool(predicate())
