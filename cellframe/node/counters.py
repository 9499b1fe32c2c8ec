"""What a node did with deliveries before they reached any cell, and with its cells."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["NodeCounters"]


@dataclass(slots=True)
class NodeCounters:
    """What the node did with deliveries before they reached any cell."""

    delivered: int = 0
    rejected: int = 0
    unroutable: int = 0
    sent: int = 0
    #: RefusedError deliveries by reason (``wire.signing.REASONS``).
    refused: dict[str, int] = field(default_factory=dict)
    #: Cells that crashed, were restarted, or failed past their restart intensity.
    crashes: int = 0
    restarts: int = 0
    failures: int = 0
    #: Deliveries for role cells given back, never applied, because the node was paused.
    fenced: int = 0
    #: Redelivered role messages acknowledged unapplied: another instance of the role had
    #: applied them (``cellframe.node.siblings``).
    sibling_duplicates: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "rejected": self.rejected,
                "unroutable": self.unroutable, "sent": self.sent, "refused": dict(self.refused),
                "crashes": self.crashes, "restarts": self.restarts, "failures": self.failures,
                "fenced": self.fenced, "sibling_duplicates": self.sibling_duplicates}
