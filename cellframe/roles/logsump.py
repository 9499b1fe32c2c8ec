"""The log sump: only receives. It binds ``event.#`` and ``log.#`` and appends one line per
message to a file; it never replies and never fails on what it is sent.

Line format (UTF-8, one message per line, flushed as written)::

    RECEIVED<TAB>SENDER<TAB>MESSAGE-ID<TAB>EXPRESSION

``RECEIVED`` is the UTC time the sump applied the message, ISO 8601 with microseconds
(``2025-01-31T12:00:00.123456+00:00``); ``SENDER`` the sending node or cell (``-`` if none);
``EXPRESSION`` the message in canonical s-expression text, which has no raw newline or tab
(the printer escapes them), so a line is always one record. A healing event reads
``(event :kind "down" :node OBSERVER :time T :member LOST ...)``.

The file is ``log-file`` from the node's settings, else ``logsump-<node>.log`` in the
working directory; ``LogSumpCell.writing_to(path)`` fixes it in code.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar

from ..cell.cell import Cell
from ..errors import LanguageError
from ..language.printer import write
from ..wire.envelope import Message

__all__ = ["LogSumpCell", "format_line"]

log = logging.getLogger(__name__)


def format_line(message: Message, received: float) -> str:
    """One line of the sump's file for ``message``, applied at ``received`` (epoch seconds)."""
    stamp = datetime.fromtimestamp(received, tz=UTC).isoformat(timespec="microseconds")
    try:
        text = write(message.expr)
    except LanguageError as error:  # not expected for anything read off the wire; still a line
        text = write(f"unwritable message: {error}")
    sender = (message.sender or "-").replace("\t", " ").replace("\n", " ")
    return f"{stamp}\t{sender}\t{message.id}\t{text}\n"


class LogSumpCell(Cell):
    """Appends every event and log record it hears to a file, one line each; never replies."""

    role = "logsump"
    states = ("recording",)
    initial = "recording"
    bindings = ("event.#", "log.#")
    log_path: ClassVar[str | None] = None

    @classmethod
    def writing_to(cls, path: str | Path) -> type[LogSumpCell]:
        """A LogSumpCell class that writes to ``path`` whatever the settings say."""
        return type("LogSumpCell", (cls,), {"log_path": str(path), "__module__": cls.__module__})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        node = self.cell_host.name
        chosen = self.log_path or self.cell_settings.get("log-file") or f"logsump-{node}.log"
        self.path = Path(chosen)
        self.lines = 0
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    def on_start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def on_stop(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def cell_handle(self, message: Message) -> None:
        """Record ``message`` whatever it says: no verbs, no evaluation, no reply."""
        counters = self.cell_counters
        counters.received += 1
        if self.cell_dedup.seen(message.id):
            counters.duplicates += 1
            return
        line = format_line(message, datetime.now(UTC).timestamp())
        try:
            with self._lock:
                if self._file is None:
                    raise OSError("the sump's file is closed")
                self._file.write(line)
                self._file.flush()
        except OSError as error:
            counters.errors += 1
            log.warning("%s: could not write to %s: %s", self.cell_name, self.path, error)
            return
        self.lines += 1
        counters.applied += 1

    def cell_snapshot(self) -> dict[str, Any]:
        snapshot = super().cell_snapshot()
        snapshot.update(path=str(self.path), lines=self.lines)
        return snapshot
