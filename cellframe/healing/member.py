"""One member as a node's membership sees it (``Member``), and the conditions it can be in."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .detector import PhiAccrual

__all__ = ["ALIVE", "DOWN", "HELD", "LEFT", "LIVE", "SUSPECT", "Member"]

ALIVE, SUSPECT, DOWN, LEFT, HELD = "alive", "suspect", "down", "left", "held"
#: The conditions of a member that is taken to be up.
LIVE = frozenset({ALIVE, SUSPECT})


@dataclass(slots=True)
class Member:
    """One node as this node sees it.

    Slotted, and with a detector only while this node judges it (all members without a watch
    ring, its ``k`` watched ones with one): every node holds an entry per member, so the
    simulator's 1,000 nodes hold 10**6 of them (about 1 KB each with a detector and a dict,
    1 GB; see docs/scale.md)."""

    name: str
    role: str | None
    incarnation: int
    status: str = ALIVE
    seq: int = -1
    role_since: float = 0.0
    last_seen: float = 0.0  # local monotonic time of the last heartbeat
    changed_at: float = 0.0  # local monotonic time of the last status change
    probed_at: float = -math.inf
    #: Not judged before this local time unless heard from first (this node was blind).
    doubted_until: float | None = None
    #: When a probe first came back unroutable (its queue gone) since it was last heard.
    gone_since: float | None = None
    detector: PhiAccrual | None = field(default=None, repr=False)
    load: float | None = None  # what its last heartbeat said its role cells' load was
    #: Found down because the broker said its queue was gone (evidence ``broker``), not only
    #: silent: a node cut off from the broker, which applies nothing from the role queues, not
    #: another side of a split. Keep-majority does not count it (see ``_sides``).
    queue_gone: bool = False
    #: ``host:port`` of the broker node its last heartbeat said it was connected to.
    broker: str | None = None
    #: One object in the views of many nodes (a simulation's converged start, see
    #: ``Membership.membership_adopt``): never changed, a node copies it first (``_own``).
    #: Always False in production, where every node is its own process.
    shared: bool = field(default=False, repr=False, compare=False)

    def public(self, now: float) -> dict[str, Any]:
        phi = self.detector.phi(now) if self.detector is not None else 0.0
        return {"name": self.name, "role": self.role, "status": self.status,
                "incarnation": self.incarnation, "seq": self.seq, "role_since": self.role_since,
                "silence": round(max(0.0, now - self.last_seen), 4),
                "phi": round(min(phi, 1e6), 3)}
