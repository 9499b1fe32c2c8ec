"""The cluster as an operator needs to see it, merged from the nodes' ``(status)`` answers.

Pure data, no I/O: ``ClusterPicture.from_statuses(answers)`` lists every member that any
answering node's membership view knows (a node that did not answer is still listed, as
down, left, suspect or silent, with whose view says so and for how long), and compares the
DNS intent with the roles actually held: ``web 2/3``, what is missing, and which role the
next free spare takes and why (the reconciler's own rule, ``short_slots``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..healing.reconciler import LiveMember, short_slots, shortfall

__all__ = ["ClusterPicture", "MemberRow", "RoleRow"]

#: Worst first: a member's health is the worst any view reports for it.
_SEVERITY = ("down", "left", "suspect", "held", "alive")
_LIVE = ("alive", "suspect")  # as the reconciler counts: a held node is not live yet


@dataclass(frozen=True)
class MemberRow:
    """One node as the cluster sees it: what it said itself (if it answered) and what the
    others' views say of it."""

    name: str
    role: str | None
    answered: bool
    health: str  # alive, suspect, held, down, left; "silent": heard alive, but no answer
    evidence: tuple[str, ...] = ()  # the nodes whose views report ``health``
    heartbeat_lag: float | None = None  # the freshest heartbeat another node heard, in s
    status: Mapping[str, Any] | None = None  # its own answer

    @property
    def live(self) -> bool:
        """Live as the reconciler counts it: a silent node is still heard, so it holds its role."""
        return self.health in _LIVE or self.health == "silent"


@dataclass(frozen=True)
class RoleRow:
    """A role's intent against the live nodes that hold it."""

    role: str
    wanted: int
    holders: tuple[str, ...]

    @property
    def missing(self) -> int:
        return max(0, self.wanted - len(self.holders))


@dataclass(frozen=True)
class ClusterPicture:
    """Every member, every role, and what the healing will do next."""

    members: tuple[MemberRow, ...]
    roles: tuple[RoleRow, ...] = ()
    intent_known: bool = False
    next_steps: tuple[str, ...] = field(default=())

    @classmethod
    def from_statuses(cls, statuses: Sequence[Mapping[str, Any]]) -> ClusterPicture:
        views = {s["node"]: _view_of(s) for s in statuses}
        answered = {s["node"]: s for s in statuses}
        names = sorted({*answered, *(m["name"] for v in views.values() for m in v)})
        members = tuple(_member(name, answered.get(name), views) for name in names)
        intent = _intent(statuses)
        if intent is None:
            return cls(members)
        live = [m for m in members if m.live]
        roles = tuple(RoleRow(role, wanted, tuple(m.name for m in live if m.role == role))
                      for role, wanted in sorted(intent.items()))
        return cls(members, roles, True, _next_steps(intent, live))

    @property
    def answered(self) -> int:
        return sum(m.answered for m in self.members)

    def as_dict(self) -> dict[str, Any]:
        """The picture for ``--json`` (the answers themselves are listed separately)."""
        return {
            "members": [{"name": m.name, "role": m.role, "answered": m.answered,
                         "health": m.health, "evidence": list(m.evidence),
                         "heartbeat_lag": m.heartbeat_lag} for m in self.members],
            "roles": [{"role": r.role, "wanted": r.wanted, "holders": list(r.holders),
                       "missing": r.missing} for r in self.roles] if self.intent_known else None,
            "next": list(self.next_steps),
        }


def _view_of(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The membership cell's view in a node's answer ([] if it hosts none). Past what
    ``decode_status`` checks, an answer holds whatever its node put there (another version,
    a forged reply, an "unwritable: ..." value): one member named 5 or [] ended `cellframe
    status` in a traceback for the whole cluster, so each field is read for what it must be."""
    for cell in status.get("cells", []):
        if "healing" in cell and isinstance(cell.get("members"), list):
            return [m for m in cell["members"] if isinstance(m, dict) and isinstance(m.get("name"), str)]
    return []


def _member(name: str, own: Mapping[str, Any] | None,
            views: Mapping[str, list[dict[str, Any]]]) -> MemberRow:
    # Only the others' views: a node's view of itself always says alive, 0 s ago.
    seen = [(owner, m) for owner, view in views.items() if owner != name
            for m in view if m["name"] == name]
    statuses = [str(m.get("status", "?")) for _, m in seen]
    # No other view knows it: it answered (else it would not be listed), so it is alive.
    health = next((s for s in _SEVERITY if s in statuses), "alive")
    if own is None and health == "alive":
        health = "silent"  # the others still hear it, yet it did not answer in the window
    evidence = tuple(sorted(owner for owner, m in seen if m.get("status") == health))
    lags = [m["silence"] for _, m in seen if isinstance(m.get("silence"), int | float)]
    role = own.get("role") if own is not None else next(
        (m.get("role") for _, m in seen if m.get("role")), None)
    return MemberRow(name, role if isinstance(role, str) and role else None, own is not None, health, evidence,
                     min(lags) if lags else None, own)


def _intent(statuses: Sequence[Mapping[str, Any]]) -> dict[str, int] | None:
    for status in statuses:
        for cell in status.get("cells", []):
            if isinstance(cell.get("intent"), dict):
                return {k: v for k, v in cell["intent"].items()
                        if isinstance(k, str) and type(v) is int and v >= 0}
    return None


def _next_steps(intent: Mapping[str, int], live: Sequence[MemberRow]) -> tuple[str, ...]:
    """What the reconciler will do: free spares take the short slots, the most depleted role
    first (held/wanted ascending, then the role's name), spares in name order."""
    members = [LiveMember(m.name, m.role) for m in live]
    slots = short_slots(intent, members, at_most=len(live) + 1)
    if not slots:
        return ("every role has what the intent asks",)
    spares = sorted(m.name for m in live if m.role is None)
    held = {role: sum(m.role == role for m in live) for role in intent}
    steps = [f"{spare} takes {role} ({role} {held[role]}/{intent[role]}: the most depleted "
             f"role first)" for spare, role in zip(spares, slots, strict=False)]
    unfilled = slots[len(spares):]
    if unfilled:
        short = ", ".join(f"{role} {held[role]}/{intent[role]}" for role in dict.fromkeys(unfilled))
        more = sum(shortfall(intent, members).values()) - min(len(spares), len(slots))
        steps.append(f"no spare left for {more} more ({short}): start nodes, or "
                     f"list more spares in DNS")
    return tuple(steps)
