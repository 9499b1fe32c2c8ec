"""The cells that ``cellframe node`` processes host in the process tests (``--plugin``).

``python -m cellframe node NAME --plugin process_cells:ROLES`` (with tests/ on PYTHONPATH)
registers ``Tally`` under every test role. A tally adds numbers and, when
``$CELLFRAME_TALLY_DIR`` is set, appends the id of every message it applies to
``<dir>/<cell>.<pid>.ids``, one per line, flushed at once: the file survives the process
(even a SIGKILL), so a test can check across processes that nothing was lost and nothing
applied twice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

from cellframe import Cell, Symbol, transition

__all__ = ["ROLES", "Tally", "applied_ids"]

TALLY_DIR = "CELLFRAME_TALLY_DIR"


class Tally(Cell):
    """Adds numbers; its snapshot (so ``(status)``) shows the total and its DNS settings."""

    states = ("empty", "counting")
    initial = "empty"
    role = "tally"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.total = 0
        self._ids: IO[str] | None = None
        directory = os.environ.get(TALLY_DIR)
        if directory:
            path = Path(directory) / f"{self.cell_name}.{os.getpid()}.ids"
            self._ids = path.open("a", buffering=1, encoding="utf-8")  # a line at a time

    @transition("add", target="counting")
    def add(self, n: int, note: str = "") -> None:
        self.total += n
        if self._ids is not None and self.cell_message is not None:
            self._ids.write(self.cell_message.id + "\n")

    @transition("total")
    def report(self) -> None:
        self.cell_reply([Symbol("total"), self.total, self.cell_name])

    def on_stop(self) -> None:
        if self._ids is not None:
            self._ids.close()

    def cell_snapshot(self) -> dict[str, Any]:
        snapshot = super().cell_snapshot()
        snapshot["total"] = self.total
        # Pairs, not a property list: a DNS key may hold a space, which no keyword can.
        snapshot["settings"] = sorted([key, value] for key, value in self.cell_settings.items())
        return snapshot


#: Every role the process tests use, all played by a Tally.
ROLES = {role: Tally for role in ("tally", "other", "scribe", "steady", "drain", "crash",
                                  "quorate")}


def applied_ids(directory: Path, cell: str | None = None) -> list[str]:
    """Every id the tallies (or the tally ``cell``) recorded in ``directory``, in file order."""
    ids: list[str] = []
    for path in sorted(directory.glob(f"{cell or '*'}.*.ids")):
        ids += path.read_text(encoding="utf-8").split()
    return ids
