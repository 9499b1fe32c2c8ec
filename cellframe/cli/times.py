"""Times that came over the wire, shown to an operator: a message's send time, a log record's.

Such a time is whatever its sender wrote, and anyone who may publish can write ``nan`` or
``1e300`` into a message's ``x-cf-ts`` header or a shipped record. ``time.localtime`` and
``datetime.fromtimestamp`` raise on those (``ValueError``, ``OverflowError``), which ended
``cellframe dead-letters`` in a traceback, after ``--take`` had removed the letters it was
about to show. So every command shows a wire time through ``moment``, which says "no time"
instead of raising.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

__all__ = ["moment", "shown"]


def moment(stamp: object, *, local: bool = False) -> datetime | None:
    """``stamp`` (seconds since the epoch) as an aware datetime, in UTC or ``local`` time;
    None when it names no time a calendar holds (not a number, NaN, infinite, past year 9999)."""
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        return None
    try:
        if not math.isfinite(stamp):
            return None
        found = datetime.fromtimestamp(stamp, tz=UTC)
        return found.astimezone() if local else found
    except (OverflowError, ValueError, OSError):  # past what time_t or datetime holds
        return None


def shown(stamp: object) -> float | None:
    """``stamp`` for a JSON document: None when ``moment`` finds no time in it (JSON has no
    NaN or infinity, and ``json.dumps`` would write them anyway)."""
    return stamp if moment(stamp) is not None else None  # type: ignore[return-value]
