"""Keep-majority: may a node act on its view, or is it on the smaller side of a partition?

A split in which both sides keep a broker lets each side find the other down and refill its
roles. Only the side holding more than half of the cluster may (Akka's keep-majority); an
even split goes to the side holding the lowest node name, so that exactly one side acts.
Membership counts the cluster as the live members of its view and those found down by
silence alone recently (docs/healing.md, "Partitions"). Pure: names in, a verdict out.
"""

from __future__ import annotations

from collections.abc import Collection

__all__ = ["holds_majority"]


def holds_majority(me: str, live: Collection[str], unreachable: Collection[str]) -> bool:
    """Whether ``me`` and the ``live`` members (``me`` not among them) are the larger side
    of a cluster that also holds the ``unreachable`` members, the lowest name breaking a tie."""
    side = 1 + len(live)
    if side * 2 != side + len(unreachable):
        return side * 2 > side + len(unreachable)
    return min(me, min(live, default=me)) < min(unreachable, default=me)
