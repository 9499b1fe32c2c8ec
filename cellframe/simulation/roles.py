"""Who holds each role over a simulated run: the ledger behind "roles held twice, and for
how long" (issue 16), read after a partition heals."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["RoleLedger"]


@dataclass
class RoleLedger:
    """Every change of a role's holders, in virtual time, against the count wanted."""

    wanted: Mapping[str, int]
    holders: dict[str, set[str]] = field(default_factory=dict)
    changes: list[tuple[float, str, int]] = field(default_factory=list)  # (time, role, held)
    moves: list[tuple[float, str, str | None, str | None]] = field(default_factory=list)

    def move(self, now: float, node: str, before: str | None, after: str | None) -> None:
        """``node`` stopped holding ``before`` and holds ``after`` from ``now``."""
        if before == after:
            return
        self.moves.append((now, node, before, after))
        for role, add in ((before, False), (after, True)):
            if role is None:
                continue
            held = self.holders.setdefault(role, set())
            (held.add if add else held.discard)(node)
            self.changes.append((now, role, len(held)))

    def held(self, role: str) -> int:
        return len(self.holders.get(role, ()))

    def _history(self, role: str, since: float) -> tuple[int, list[tuple[float, int]]]:
        """The count of ``role`` at ``since`` and its changes after."""
        count, after = 0, []
        for when, name, held in self.changes:
            if name != role:
                continue
            if when <= since:
                count = held
            else:
                after.append((when, held))
        return count, after

    def overheld(self, since: float, until: float) -> dict[str, float]:
        """Seconds each role was held by more nodes than wanted between ``since`` and
        ``until`` (roles never over-held left out)."""
        found: dict[str, float] = {}
        for role, want in self.wanted.items():
            count, after = self._history(role, since)
            seconds, last = 0.0, since
            for when, held in [*after, (until, 0)]:
                when = min(when, until)
                if count > want:
                    seconds += when - last
                count, last = held, when
            if seconds > 0:
                found[role] = round(seconds, 3)
        return found

    def exact_from(self, since: float) -> float | None:
        """How long after ``since`` every role came to be held exactly as wanted, for good;
        None if some role is not so held now."""
        latest = since
        for role, want in self.wanted.items():
            if self.held(role) != want:
                return None
            count, after = self._history(role, since)
            if count != want or after:
                latest = max(latest, after[-1][0] if after else since)
        return round(latest - since, 3)
