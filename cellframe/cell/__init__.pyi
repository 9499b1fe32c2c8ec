# The names this package re-exports, read by type checkers and by lazy_loader (see __init__.py).
from .cell import Cell as Cell
from .cell import CellCounters as CellCounters
from .dedup import DedupMemory as DedupMemory
from .durable import CellJournal as CellJournal
from .fence import PauseFence as PauseFence
from .host import CellHost as CellHost
from .host import StandaloneHost as StandaloneHost
from .outbox import Outbox as Outbox
from .outbox import RecordingOutbox as RecordingOutbox
from .statemachine import on as on
from .statemachine import transition as transition

__all__ = [
    "Cell",
    "CellCounters",
    "CellHost",
    "CellJournal",
    "DedupMemory",
    "Outbox",
    "PauseFence",
    "RecordingOutbox",
    "StandaloneHost",
    "on",
    "transition",
]
