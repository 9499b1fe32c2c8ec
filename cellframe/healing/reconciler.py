"""Healing: the reconciler that compares DNS intent with live membership, and the claim protocol.

Every node runs the same pure function over its own membership view, every reconcile tick:

1. **Count.** For each role the intent names (and the registry can play), the live holders
   sorted by ``(role_since, name)``: the oldest keep the role.
2. **Step down.** Holders past the wanted count are excess; an excess node differentiates
   into a spare. The newest steps down first, which is how a returning node whose DNS role
   was refilled meanwhile becomes a spare.
3. **Short slots.** ``wanted - held`` slots per role, the most depleted role first
   (``held / wanted`` ascending, then role name).
4. **Assign.** Slots already claimed by another node (a claim we heard) are taken out; the
   free spares (live members with no role that have not claimed) sorted by name; spare
   ``i`` takes slot ``i``. Views converge on every live node, so this choice is the same
   everywhere without a coordinator.
5. **Claim.** A spare assigned a slot broadcasts ``(claim :node N :role R ...)`` and waits a
   claim window ``W``. A claim heard before one's own is respected (rule 4); claims made
   concurrently are resolved by name: if more nodes claim ``R`` than ``R`` is short, the
   lowest names win and the others withdraw. A winner still needed when ``W`` has passed
   differentiates.

Views can disagree for a moment (a heartbeat or claim not yet arrived). If every message
arrives within ``W/2``, two concurrent claimants hear each other before either decides, so no
two spares ever take one slot. A longer delay can put two nodes in one slot; rule 2 then
steps the newer one down on the first reconcile tick after its heartbeat arrives. Everything
here takes ``now`` as an argument: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Assignment",
    "Claim",
    "ClaimDecision",
    "LiveMember",
    "Reconciler",
    "assign",
    "short_slots",
    "shortfall",
]


@dataclass(frozen=True, slots=True)
class LiveMember:
    """What the reconciler needs to know of one live member."""

    name: str
    role: str | None
    role_since: float = 0.0
    load: float | None = None  # what its heartbeat last said (``Cell.cell_load``)


@dataclass(frozen=True, slots=True)
class Claim:
    """A spare's announced intention to take ``role``; ``heard_at`` is local time."""

    node: str
    role: str
    incarnation: int
    heard_at: float


@dataclass(frozen=True, slots=True)
class Assignment:
    """What the view asks of one node: keep going, take a role, or step down to spare."""

    take: str | None = None
    step_down: bool = False
    short: Mapping[str, int] = field(default_factory=dict)


def _holders(intent: Mapping[str, int], live: Sequence[LiveMember]) -> dict[str, list[LiveMember]]:
    holders: dict[str, list[LiveMember]] = {role: [] for role in intent}
    for member in live:
        if member.role in holders:
            holders[member.role].append(member)
    for members in holders.values():
        members.sort(key=lambda m: (m.role_since, m.name))
    return holders


def short_slots(intent: Mapping[str, int], live: Sequence[LiveMember], *,
                at_most: int | None = None) -> list[str]:
    """One entry per missing cell, the most depleted role first (deterministic); at most
    ``at_most`` entries for each role (no more spares than that can take one: an intent of
    999,999,999 cells, which DNS allows, built a list of that many entries on every tick)."""
    holders = _holders(intent, live)
    short = [(len(holders[role]) / want, role, want - len(holders[role]))
             for role, want in intent.items() if want > len(holders[role])]
    cap = at_most if at_most is not None else max((count for _, _, count in short), default=0)
    return [role for _, role, count in sorted(short) for _ in range(min(count, cap))]


def shortfall(intent: Mapping[str, int], live: Sequence[LiveMember]) -> dict[str, int]:
    """How many cells each role lacks (roles that lack none are left out)."""
    holders = _holders(intent, live)
    return {role: want - len(holders[role]) for role, want in intent.items()
            if want > len(holders[role])}


def assign(
    intent: Mapping[str, int],
    live: Sequence[LiveMember],
    me: str,
    claims: Mapping[str, str] | None = None,
    unable: Mapping[str, Collection[str]] | None = None,
) -> Assignment:
    """The step the view asks of node ``me`` (rules 1 to 4 of the module doc).

    ``claims`` maps other nodes to the role they claimed: a slot already claimed is not
    offered again, and the claimants are not counted among the free spares. ``unable`` maps
    nodes to roles whose cells failed to start there: those slots go to the next spare.
    """
    claims = claims or {}
    holders = _holders(intent, live)
    short = shortfall(intent, live)
    mine = next((m for m in live if m.name == me), None)
    if mine is not None and mine.role in holders:
        excess = holders[mine.role][intent[mine.role]:]
        return Assignment(step_down=any(m.name == me for m in excess), short=short)
    if mine is not None and mine.role is not None:
        return Assignment(short=short)  # a role the intent does not count: left alone
    slots = short_slots(intent, live, at_most=len(live) + 1)  # every spare, and me
    for role in claims.values():
        if role in slots:
            slots.remove(role)
    spares = sorted({m.name for m in live if m.role is None and m.name not in claims} | {me})
    return Assignment(take=_match(slots, spares, unable or {}).get(me), short=short)


def _match(slots: list[str], spares: list[str],
           unable: Mapping[str, Collection[str]]) -> dict[str, str]:
    """Each slot in order to the first spare by name still free that can play it (with no
    ``unable``, spare ``i`` takes slot ``i``)."""
    taken: dict[str, str] = {}
    for role in slots:
        for spare in spares:
            if spare not in taken and role not in unable.get(spare, ()):
                taken[spare] = role
                break
    return taken


@dataclass(frozen=True, slots=True)
class ClaimDecision:
    """What the reconciler wants done this tick (the membership cell does it)."""

    send_claim: str | None = None  # broadcast a claim for this role
    withdraw: str | None = None  # announce we stand down from this role's claim
    differentiate: str | None = None  # become this role now
    step_down: bool = False  # become a spare now
    reason: str = ""


@dataclass
class Reconciler:
    """One node's claim state: what it claimed, when, and the claims it heard from others.

    ``claim_window``: how long a claim waits for competing claims before acting.
    ``claim_ttl``: how long a heard claim counts if its claimant says nothing more.
    """

    me: str
    claim_window: float
    claim_ttl: float
    claiming: str | None = None
    claimed_at: float = 0.0
    heard: dict[str, Claim] = field(default_factory=dict)
    unable: dict[tuple[str, str], float] = field(default_factory=dict)  # (node, role) -> until

    def cannot_play(self, node: str, role: str, until: float) -> None:
        """``node`` failed to start ``role``'s cells: offer its slots to others until ``until``."""
        self.unable[(node, role)] = until

    def _unable(self, now: float) -> dict[str, set[str]]:
        for key in [k for k, until in self.unable.items() if until <= now]:
            del self.unable[key]
        found: dict[str, set[str]] = {}
        for node, role in self.unable:
            found.setdefault(node, set()).add(role)
        return found

    def hear_claim(self, claim: Claim) -> None:
        """Record another node's claim (idempotent: the latest claim of a node replaces it)."""
        if claim.node != self.me:
            self.heard[claim.node] = claim

    def forget(self, node: str, role: str | None = None) -> None:
        """Drop ``node``'s claim (it withdrew, took a role, or went down)."""
        claim = self.heard.get(node)
        if claim is not None and (role is None or claim.role == role):
            del self.heard[node]

    def active_claims(self, now: float) -> list[Claim]:
        for node in [n for n, c in self.heard.items() if now - c.heard_at > self.claim_ttl]:
            del self.heard[node]
        return list(self.heard.values())

    def tick(self, now: float, intent: Mapping[str, int],
             live: Sequence[LiveMember]) -> ClaimDecision:
        """Run one reconcile step for ``self.me`` over the view ``live``."""
        claims = self.active_claims(now)
        if self.claiming is not None:
            return self._confirm(now, intent, live, claims)
        wanted = assign(intent, live, self.me, {c.node: c.role for c in claims},
                        self._unable(now))
        if wanted.step_down:
            return ClaimDecision(step_down=True, reason="role over-filled; the newest steps down")
        if wanted.take is None:
            return ClaimDecision()
        self.claiming, self.claimed_at = wanted.take, now
        return ClaimDecision(send_claim=wanted.take, reason="assigned a short slot")

    def _confirm(self, now: float, intent: Mapping[str, int], live: Sequence[LiveMember],
                 claims: list[Claim]) -> ClaimDecision:
        """Keep, win or lose the claim in progress: concurrent claims resolve by name."""
        role = self.claiming
        assert role is not None
        competitors = sorted({self.me} | {c.node for c in claims if c.role == role})
        short = shortfall(intent, live).get(role, 0)
        if competitors.index(self.me) >= short:
            self.claiming = None
            why = "no longer short" if short == 0 else f"lost to {', '.join(competitors[:short])}"
            return ClaimDecision(withdraw=role, reason=f"claim for {role} {why}")
        if now - self.claimed_at >= self.claim_window:
            self.claiming = None
            return ClaimDecision(differentiate=role, reason="claim confirmed")
        return ClaimDecision()
