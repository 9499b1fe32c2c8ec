"""Capacity that follows load: how many cells a role with a range (``web=3..6``) wants now.

The reconciler fills short slots from the spares and steps the newest holder of an
over-filled role down to a spare; this module only moves the count it works to. For every
role the intent gives as ``MIN..MAX``, ``CapacityPlanner.plan`` reads the load the holders
report in their heartbeats (``Cell.cell_load``: 1.0 at the threshold their settings give) and:

- **out**: the holders' mean load above ``scale-out-load`` (0.8) for ``scale-out-hold-ms``
  (2000) raises the count by one, up to MAX;
- **in**: the mean below ``scale-in-load`` (0.3) for ``scale-in-hold-ms`` (5000) lowers it by
  one, down to MIN. The newest holder steps down; a web cell drains before it stops.

Hysteresis: the two thresholds are apart, each must hold for its time, and both clocks restart
after every move and while the role is not yet filled to its count, so one burst moves one
step. A count that cannot be filled (no spare left) falls back to the holders there are.
Every move is a ``ScaleDecision`` with its reason, for an event. Pure: ``now`` is an argument,
so every node computes the same count from the same heartbeats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError
from .reconciler import LiveMember

__all__ = ["CapacityPlanner", "ScaleDecision", "ScaleSettings", "capacity_lines"]


@dataclass(frozen=True, slots=True)
class ScaleSettings:
    """Thresholds (load, 1.0 at a cell's own threshold) and hold times (seconds)."""

    out_load: float = 0.8
    in_load: float = 0.3
    out_hold: float = 2.0
    in_hold: float = 5.0

    @classmethod
    def from_settings(cls, settings: Mapping[str, str]) -> ScaleSettings:
        """From ``_cluster``'s ``scale-out-load``, ``scale-in-load``, ``scale-out-hold-ms``,
        ``scale-in-hold-ms``; ConfigError if one is not a number or in-load >= out-load."""
        values = {}
        for key, name, unit in (("scale-out-load", "out_load", 1.0), ("scale-in-load", "in_load", 1.0),
                                ("scale-out-hold-ms", "out_hold", 0.001),
                                ("scale-in-hold-ms", "in_hold", 0.001)):
            if key in settings:
                try:
                    values[name] = float(settings[key]) * unit
                except ValueError:
                    raise ConfigError(f"{key}={settings[key]!r} is not a number") from None
                if not math.isfinite(values[name]) or values[name] < 0:
                    raise ConfigError(f"{key}={settings[key]!r} must be a finite number >= 0")
        found = cls(**values)
        if found.in_load >= found.out_load:
            raise ConfigError(f"scale-in-load ({found.in_load}) must be below scale-out-load "
                              f"({found.out_load})")
        return found


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    """One move of a role's count, and why."""

    role: str
    before: int
    after: int
    load: float
    reason: str


@dataclass
class CapacityPlanner:
    """The count each ranged role wants now; ``plan`` is called every reconcile tick."""

    settings: ScaleSettings = field(default_factory=ScaleSettings)
    want: dict[str, int] = field(default_factory=dict)
    loads: dict[str, float] = field(default_factory=dict)  # the last mean load per role
    _above: dict[str, float] = field(default_factory=dict)
    _below: dict[str, float] = field(default_factory=dict)

    def plan(self, now: float, roles: Mapping[str, int], ranges: Mapping[str, tuple[int, int]],
             live: Sequence[LiveMember]) -> tuple[dict[str, int], list[ScaleDecision]]:
        """The intent with each ranged role's count as load has moved it, and the moves."""
        wanted = dict(roles)
        decisions = []
        spares = sum(1 for m in live if m.role is None)
        for role, (low, high) in ranges.items():
            if role not in wanted:
                continue
            want = min(high, max(low, self.want.get(role, low)))
            holders = [m for m in live if m.role == role]
            if len(holders) < want and spares == 0:
                want = max(low, len(holders))  # nobody to fill it with: count what there is
            decision = self._step(now, role, want, low, high, holders)
            if decision is not None:
                decisions.append(decision)
                want = decision.after
            self.want[role] = wanted[role] = want
        return wanted, decisions

    def _step(self, now: float, role: str, want: int, low: int, high: int,
              holders: list[LiveMember]) -> ScaleDecision | None:
        loads = [m.load for m in holders if m.load is not None]
        if len(holders) != want or not loads:
            self._above.pop(role, None)  # still filling or emptying: judge the new count later
            self._below.pop(role, None)
            return None
        mean = sum(loads) / len(loads)
        self.loads[role] = mean
        s = self.settings
        if mean > s.out_load and want < high:
            since = self._above.setdefault(role, now)
            if now - since >= s.out_hold:
                self._above.pop(role)
                return ScaleDecision(role, want, want + 1, mean, f"mean load {mean:.2f} above "
                                     f"{s.out_load} for {now - since:.1f} s")
        else:
            self._above.pop(role, None)
        if mean < s.in_load and want > low:
            since = self._below.setdefault(role, now)
            if now - since >= s.in_hold:
                self._below.pop(role)
                return ScaleDecision(role, want, want - 1, mean, f"mean load {mean:.2f} below "
                                     f"{s.in_load} for {now - since:.1f} s")
        else:
            self._below.pop(role, None)
        return None


def capacity_lines(rows: Mapping[str, Mapping[str, object]]) -> list[str]:
    """``web 4/3..6`` per ranged role (held / min..max), from a membership snapshot's
    ``capacity`` entry; the wanted count follows when it differs (``web 3/3..6 -> 4``)."""
    lines = []
    for role, row in sorted(rows.items()):
        line = f"{role} {row['held']}/{row['min']}..{row['max']}"
        if row.get("want") != row["held"]:
            line += f" -> {row['want']}"
        lines.append(line)
    return lines
