"""Cells: pykka actors whose mailboxes feed declarative state machines.

``Cell`` is what users subclass; ``transition`` and ``on`` declare its machine; ``CellHost`` is
what a cell may ask of the node hosting it, and ``StandaloneHost`` what a cell started alone
gets; the ``Outbox`` is where its messages go, and ``RecordingOutbox`` keeps them for a test.
"""

from __future__ import annotations

from .cell import Cell, CellCounters
from .dedup import DedupMemory
from .host import CellHost, StandaloneHost
from .outbox import Outbox, RecordingOutbox
from .statemachine import on, transition

__all__ = [
    "Cell",
    "CellCounters",
    "CellHost",
    "DedupMemory",
    "Outbox",
    "RecordingOutbox",
    "StandaloneHost",
    "on",
    "transition",
]
