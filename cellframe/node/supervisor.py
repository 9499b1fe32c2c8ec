"""The supervisor of a node's cells: restarts a crashed cell with backoff, bounds how often,
and escalates past that bound, in the manner of an Erlang/OTP supervisor.

A cell *crashes* when an action raises a ``BaseException`` that is not an ``Exception``
(``SystemExit``, ``GeneratorExit``, one of the user's own) or when its actor dies of anything
(a bug outside any action). An ``Exception`` an action raises is not a crash: the message is
undone, reported and counted, and the cell goes on (``cellframe.cell.cell``).

On a crash, in the crashed cell's thread:

1. the cell rolls the message back and the node marks it ``restarting`` (under the node's
   intake lock, so no delivery is handed to the dying actor from then on: they are held);
2. the node emits ``event.cell-crashed.<node>`` (cell, verb, exception, message id) and
   dead-letters the message that crashed it, reason ``cell crashed: ...``: requeued, it
   would crash the next cell as well;
3. the actor stops; what its mailbox still held is handed back to the node, ahead of what
   was held meanwhile.

Then, on a timer thread, after the backoff (``backoff * 2**(n-1)``, at most ``max_backoff``, n
the crashes within ``period``), a new instance of the class is started under the same name,
and the held messages are told to it in the order they arrived. Past ``max_restarts``
crashes within ``period`` the cell is ``failed``: held role messages are requeued for another
node, node messages dead-lettered, ``event.cell-failed.<node>`` emitted, and a node playing a
role steps down from it and will not take it again for ``quarantine`` seconds, so that the
reconciler gives it to a spare. Strategy ``one-for-all`` restarts every role cell of the node
when one of them crashes (they first apply what their mailboxes hold).

Watchers (``Cell.cell_monitor``, of this node or another: ``cellframe.node.monitors``) hear
``(cell-down :cell C :node N :condition C :reason R)`` when a cell crashes or fails; a cell may
declare a ``cell-down`` transition to act on it, or ignore it.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError

__all__ = ["RestartIntensity", "SupervisionPolicy"]

log = logging.getLogger(__name__)

Strategy = Literal["one-for-one", "one-for-all"]

#: DNS setting -> field of SupervisionPolicy.
_SETTING_KEYS = {
    "supervision.max-restarts": "max_restarts",
    "supervision.period": "period",
    "supervision.backoff": "backoff",
    "supervision.max-backoff": "max_backoff",
    "supervision.quarantine": "quarantine",
    "supervision.strategy": "strategy",
}


@dataclass(frozen=True, slots=True)
class SupervisionPolicy:
    """How a node restarts its cells: at most ``max_restarts`` within ``period`` seconds, after
    ``backoff`` doubling up to ``max_backoff`` seconds; ``strategy`` among a role's cells."""

    max_restarts: int = 3
    period: float = 5.0
    backoff: float = 0.05
    max_backoff: float = 2.0
    quarantine: float = 60.0
    strategy: Strategy = "one-for-one"

    @classmethod
    def from_settings(cls, *layers: Mapping[str, str]) -> SupervisionPolicy:
        """The policy DNS sets (``supervision.*``, later layers win); ConfigError if bad."""
        values: dict[str, Any] = {}
        for settings in layers:
            for key, name in _SETTING_KEYS.items():
                if key in settings:
                    values[name] = _parse(key, name, settings[key])
        policy = cls(**values)
        policy.check()
        return policy

    def check(self) -> None:
        if self.max_restarts < 0 or self.period <= 0:
            raise ConfigError("supervision: max-restarts must be >= 0 and period > 0")
        if not 0 <= self.backoff <= self.max_backoff or self.quarantine < 0:
            raise ConfigError("supervision: need 0 <= backoff <= max-backoff, quarantine >= 0")
        if self.strategy not in ("one-for-one", "one-for-all"):
            raise ConfigError(f"supervision.strategy: one-for-one or one-for-all, not {self.strategy!r}")


def _parse(key: str, name: str, text: str) -> Any:
    if name == "strategy":
        return text.strip()
    try:
        value = int(text) if name == "max_restarts" else float(text)
    except ValueError:
        raise ConfigError(f"{key}: not a number: {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: not a finite number: {text!r}")
    return value


@dataclass(slots=True)
class RestartIntensity:
    """The crashes of one cell within the policy's period: pure, it reads no clock (``now``
    is passed in), so a test drives it with any times."""

    policy: SupervisionPolicy
    crashes: deque[float] = field(default_factory=deque)

    def crash(self, now: float) -> float | None:
        """Record a crash at ``now``; the backoff before the restart, or None: past the
        intensity, do not restart (escalate)."""
        crashes = self.crashes
        crashes.append(now)
        while crashes and crashes[0] <= now - self.policy.period:
            crashes.popleft()
        if len(crashes) > self.policy.max_restarts:
            return None
        return min(self.policy.max_backoff, self.policy.backoff * 2 ** (len(crashes) - 1))
