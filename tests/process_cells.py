"""The cells that ``cellframe node`` processes host in the process tests (``--plugin``).

``python -m cellframe node NAME --plugin process_cells:ROLES`` (with tests/ on PYTHONPATH)
registers ``Tally`` under every test role. A tally adds numbers (and ``(look-up KEY)`` raises
a ``KeyError``, a bug for the tests of what a node logs) and, when
``$CELLFRAME_TALLY_DIR`` is set, appends the id of every message it applies to
``<dir>/<cell>.<pid>.ids``, one per line, flushed at once: the file survives the process
(even a SIGKILL), so a test can check across processes that nothing was lost and nothing
applied twice. With ``$CELLFRAME_TALLY_TIMES`` set as well, each line of
``<dir>/<cell>.<pid>.times`` is ``ID WALL-TIME``, for tests that ask *when* a node applied.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import IO, Any

from cellframe import Cell, Symbol, transition

__all__ = ["CHAT_LINE", "ROLES", "Chatter", "Echo", "Relay", "Tally", "applied_ids"]

TALLY_DIR = "CELLFRAME_TALLY_DIR"
TALLY_TIMES = "CELLFRAME_TALLY_TIMES"


class Tally(Cell):
    """Adds numbers; its snapshot (so ``(status)``) shows the total and its DNS settings."""

    states = ("empty", "counting")
    initial = "empty"
    role = "tally"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.total = 0
        self._ids: IO[str] | None = None
        self._times: IO[str] | None = None
        directory = os.environ.get(TALLY_DIR)
        if directory:
            path = Path(directory) / f"{self.cell_name}.{os.getpid()}.ids"
            self._ids = path.open("a", buffering=1, encoding="utf-8")  # a line at a time
            if os.environ.get(TALLY_TIMES):
                self._times = path.with_suffix(".times").open("a", buffering=1, encoding="utf-8")

    @transition("add", target="counting")
    def add(self, n: int, note: str = "") -> None:
        self.total += n
        if self._ids is not None and self.cell_message is not None:
            self._ids.write(self.cell_message.id + "\n")
        if self._times is not None and self.cell_message is not None:
            self._times.write(f"{self.cell_message.id} {time.time():.6f}\n")

    @transition("total")
    def report(self) -> None:
        self.cell_reply([Symbol("total"), self.total, self.cell_name])

    @transition("look-up")
    def look_up(self, key: str) -> None:
        """A bug on purpose: a ``KeyError``, whose traceback the node must log."""
        self.cell_reply({}[key])

    def on_stop(self) -> None:
        for file in (self._ids, self._times):
            if file is not None:
                file.close()

    def cell_snapshot(self) -> dict[str, Any]:
        snapshot = super().cell_snapshot()
        snapshot["total"] = self.total
        # Pairs, not a property list: a DNS key may hold a space, which no keyword can.
        snapshot["settings"] = sorted([key, value] for key, value in self.cell_settings.items())
        return snapshot


class Chatter(Cell):
    """Logs ``(chatter N)`` lines at INFO, about 5,000 a second, each ``line I of CELL``; with
    ``$CELLFRAME_TALLY_DIR`` set, a thread writes to ``<dir>/<cell>.confirmed`` the largest
    line number the node's log shipping saw the broker confirm (a file survives a SIGKILL)."""

    states = ("idle",)
    initial = "idle"
    role = "chatter"

    @transition("chatter")
    def chatter(self, count: int) -> None:
        directory = os.environ.get(TALLY_DIR)
        if directory:
            threading.Thread(target=self._watch_confirms, args=(Path(directory), count),
                             daemon=True).start()
        for index in range(count):
            chat_log.info("line %d of %s", index, self.cell_name)
            if index % 50 == 49:
                time.sleep(0.01)

    def _watch_confirms(self, directory: Path, count: int) -> None:
        from cellframe.node.logship import SumpHandler

        [handler] = [h for h in logging.getLogger().handlers if isinstance(h, SumpHandler)]
        path = directory / f"{self.cell_name}.confirmed"
        best = -1
        while best < count - 1:
            record = handler.last_confirmed
            found = CHAT_LINE.fullmatch(record["message"]) if record else None
            if found and found.group(2) == self.cell_name and int(found.group(1)) > best:
                best = int(found.group(1))
                temporary = path.with_suffix(".tmp")
                temporary.write_text(str(best))
                os.replace(temporary, path)  # whole, even under a SIGKILL
            time.sleep(0.002)


class Relay(Cell):
    """``(relay CELL TEXT)``: sends ``(echo TEXT)`` to cell CELL, which calls back the sender."""

    role = "relay"

    @transition("relay")
    def relay(self, cell: str, text: str) -> None:
        reply_to = self.cell_message.reply_to if self.cell_message is not None else None
        self.cell_send(f"cell.{cell}", [Symbol("echo"), text], reply_to=reply_to)


class Echo(Cell):
    """``(echo TEXT)``: calls back ``(echoed TEXT CELL)``."""

    role = "echo"

    @transition("echo")
    def echo(self, text: str) -> None:
        self.cell_reply([Symbol("echoed"), text, self.cell_name])


chat_log = logging.getLogger("tests.chatter")
CHAT_LINE = re.compile(r"line (\d+) of (\S+)")

#: Every role the process tests use, all played by a Tally but the chatter.
ROLES: dict[str, type[Cell]] = {
    role: Tally for role in ("tally", "other", "scribe", "steady", "drain", "crash", "quorate")}
ROLES.update(chatter=Chatter, relay=Relay, echo=Echo)


def applied_ids(directory: Path, cell: str | None = None) -> list[str]:
    """Every id the tallies (or the tally ``cell``) recorded in ``directory``, in file order."""
    ids: list[str] = []
    for path in sorted(directory.glob(f"{cell or '*'}.*.ids")):
        ids += path.read_text(encoding="utf-8").split()
    return ids
