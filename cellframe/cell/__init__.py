"""Cells: pykka actors whose mailboxes feed declarative state machines.

``Cell`` is what users subclass; ``transition`` and ``on`` declare its machine; the ``Outbox`` is
where its messages go, and ``RecordingOutbox`` keeps them for a test.
"""

from __future__ import annotations

from .cell import Cell, CellCounters
from .dedup import DedupMemory
from .outbox import Outbox, RecordingOutbox
from .statemachine import on, transition

__all__ = [
    "Cell",
    "CellCounters",
    "DedupMemory",
    "Outbox",
    "RecordingOutbox",
    "on",
    "transition",
]
