"""The log sump: only receives (and answers queries about what it received). It binds
``event.#`` and ``log.#`` and keeps two files in its folder, each rotated by size:

* ``records.jsonl``: the nodes' Python log records, one JSON object a line (time, node, role,
  cell, level, logger, message, exception, trace id), as ``cellframe.node.logship`` ships
  them in ``(log-records :node N :dropped D :records ("{json}" ...))`` batches;
* ``events.log``: every other message (healing events, hand-written ``log.*`` messages), one
  line each::

      RECEIVED<TAB>SENDER<TAB>MESSAGE-ID<TAB>EXPRESSION

  ``RECEIVED`` is the UTC time the sump applied the message, ISO 8601 with microseconds
  (``2025-01-31T12:00:00.123456+00:00``); ``SENDER`` the sending node or cell (``-`` if
  none); ``EXPRESSION`` the message in canonical s-expression text, which has no raw newline
  or tab (the printer escapes them), so a line is always one record. A healing event reads
  ``(event :kind "down" :node OBSERVER :time T :member LOST ...)``.

The folder, never the working directory: ``data-dir`` from the node's DNS record
(``<data-dir>/logsump``), else ``$CELLFRAME_DATA_DIR/<node>/logsump`` (``cellframe node
--data-dir``), else ``$XDG_STATE_HOME/cellframe/<node>/logsump`` (``~/.local/state/...``). A
``log-file`` setting, or ``LogSumpCell.writing_to(path)`` in code, pins the events file, with
``records.jsonl`` beside it. ``logsump.max-bytes`` (64 MiB) and ``logsump.keep`` (5) bound
each file.

``(logs-query :since T :node N :role R :level L :limit K)`` is answered with
``(log-page :from SUMP :records ("{json}" ...) :last BOOL)`` call-backs holding the newest
``K`` (1,000) matching records, oldest first: what ``cellframe logs`` shows. Drops that nodes
report are summed in ``dropped`` (the sump's snapshot) and written as a warning record.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from ..cell import nodeverbs
from ..cell.cell import Cell
from ..config.txtconfig import int_setting
from ..errors import CellframeError, ConfigError, LanguageError
from ..language.plist import from_plist
from ..language.printer import write
from ..language.symbols import Keyword, Symbol
from ..wire.envelope import Message
from .logfiles import EVENTS_FILE, LEVELS, RECORDS_FILE, RecordFilter, RotatingLines, read_records

__all__ = [
    "LOG_PAGE_VERB",
    "LOG_QUERY_VERB",
    "LOG_RECORDS_VERB",
    "MAX_PAGE_BYTES",
    "LogSumpCell",
    "format_line",
    "pages",
    "sump_folder",
]

log = logging.getLogger(__name__)

#: A batch of shipped log records; a query; a page of its answer.
LOG_RECORDS_VERB = "log-records"
LOG_QUERY_VERB = "logs-query"
LOG_PAGE_VERB = "log-page"
# Only nodes ship records, each its own (the sump reads every message itself, with no
# transitions, so it declares here rather than in node_verbs).
nodeverbs.declare("LogSumpCell", {LOG_RECORDS_VERB: "node"})
#: A batch or a page stays this far under a node's 64 KiB message limit.
MAX_PAGE_BYTES = 60_000
_DATA_DIR_ENV = "CELLFRAME_DATA_DIR"


def format_line(message: Message, received: float) -> str:
    """One line of the sump's events file for ``message``, applied at ``received``."""
    stamp = datetime.fromtimestamp(received, tz=UTC).isoformat(timespec="microseconds")
    try:
        text = write(message.expr)
    except LanguageError as error:  # not expected for anything read off the wire; still a line
        text = write(f"unwritable message: {error}")
    sender = (message.sender or "-").replace("\t", " ").replace("\n", " ")
    return f"{stamp}\t{sender}\t{message.id}\t{text}\n"


def sump_folder(node: str, settings: dict[str, str]) -> Path:
    """Where the sump of ``node`` keeps its files (see the module doc): never the CWD."""
    if settings.get("data-dir"):
        return Path(settings["data-dir"]) / "logsump"
    if os.environ.get(_DATA_DIR_ENV):
        return Path(os.environ[_DATA_DIR_ENV]) / node / "logsump"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "cellframe" / node / "logsump"


def pages(texts: list[str], head: list[Any]) -> list[list[Any]]:
    """``head`` + ``:records (texts...)``, split into expressions under MAX_PAGE_BYTES."""
    expr = [*head, Keyword("records"), texts]
    if len(texts) <= 1 or len(write(expr).encode()) <= MAX_PAGE_BYTES:
        return [expr]
    half = len(texts) // 2
    return pages(texts[:half], head) + pages(texts[half:], head)


class LogSumpCell(Cell):
    """Keeps every log record and event it hears, in rotated files; answers log queries."""

    role = "logsump"
    states = ("recording",)
    initial = "recording"
    bindings = ("event.#", "log.#")
    log_path: ClassVar[str | None] = None

    @classmethod
    def writing_to(cls, path: str | Path) -> type[LogSumpCell]:
        """A LogSumpCell class whose events file is ``path`` (records beside it), whatever the
        settings say."""
        return type("LogSumpCell", (cls,), {"log_path": str(path), "__module__": cls.__module__})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pinned = self.log_path or self.cell_settings.get("log-file")
        if pinned:
            self.path = Path(pinned)
            self.folder = self.path.parent
        else:
            self.folder = sump_folder(self.cell_host.name, self.cell_settings)
            self.path = self.folder / EVENTS_FILE
        limits = {"max_bytes": int_setting(self.cell_settings, "logsump.max-bytes", 64 * 2**20,
                                           minimum=4096),
                  "keep": int_setting(self.cell_settings, "logsump.keep", 5)}
        self._events = RotatingLines(self.path, **limits)
        self._records = RotatingLines(self.folder / RECORDS_FILE, **limits)
        self.lines = 0
        self.records = 0
        self.unreadable = 0
        self.dropped_by_node: dict[str, int] = {}

    @property
    def dropped(self) -> int:
        """Log records the nodes say they dropped (their queues were full), all nodes."""
        return sum(self.dropped_by_node.values())

    def on_start(self) -> None:
        self._events.open()
        self._records.open()
        log.info("%s: log records to %s, events to %s", self.cell_name, self._records.path, self.path)

    def on_stop(self) -> None:
        self._events.close()
        self._records.close()

    def cell_handle(self, message: Message) -> None:
        """Record ``message`` whatever it says; answer a query. Never evaluates, never fails."""
        counters = self.cell_counters
        counters.received += 1
        if self.cell_dedup.seen(message.id):
            counters.duplicates += 1
            return
        expr = message.expr
        verb = expr[0].name if isinstance(expr, list) and expr and isinstance(expr[0], Symbol) else None
        try:
            if verb == LOG_RECORDS_VERB:
                self._store_records(expr[1:])
            elif verb == LOG_QUERY_VERB:
                self.cell_message = message
                try:
                    self._answer(expr[1:])
                finally:
                    self.cell_message = None
            else:
                self._events.write([format_line(message, datetime.now(UTC).timestamp())])
                self.lines += 1
        except OSError as error:
            counters.errors += 1
            log.warning("%s: could not write to %s: %s", self.cell_name, self.folder, error)
            return
        counters.applied += 1

    # -- records ------------------------------------------------------------------------

    def _store_records(self, fields: list[Any]) -> None:
        batch = _plist(fields)
        node: str = batch["node"] if isinstance(batch.get("node"), str) else "?"
        texts: list[Any] = batch["records"] if isinstance(batch.get("records"), list) else []
        lines = []
        for text in texts:
            if isinstance(text, str) and "\n" not in text and _is_object(text):
                lines.append(text + "\n")
            else:
                self.unreadable += 1
        dropped = batch.get("dropped")
        if isinstance(dropped, int) and dropped > self.dropped_by_node.get(node, 0):
            lines.append(self._drop_record(node, dropped - self.dropped_by_node.get(node, 0)))
            self.dropped_by_node[node] = dropped
        if lines:
            self._records.write(lines)
            self.records += len(lines)

    def _drop_record(self, node: str, more: int) -> str:
        return json.dumps({
            "time": datetime.now(UTC).timestamp(), "node": node, "role": None, "cell": self.cell_name,
            "level": "warning", "logger": "cellframe.logsump",
            "message": f"{node} dropped {more} log records (its queue was full: the broker was slow or gone)",
        }) + "\n"

    # -- queries ------------------------------------------------------------------------

    def _answer(self, fields: list[Any]) -> None:
        try:
            wanted, limit = _query(_plist(fields))
        except ConfigError as error:
            self.cell_reply([Symbol("error"), Keyword("cell"), self.cell_name,
                             Keyword("reason"), str(error)])
            return
        newest: deque[dict[str, Any]] = deque(read_records(self.folder, wanted), maxlen=limit)
        texts = [json.dumps(record, ensure_ascii=False) for record in newest]
        answer = pages(texts, [Symbol(LOG_PAGE_VERB), Keyword("from"), self.cell_name])
        for index, page in enumerate(answer):
            self.cell_reply([*page, Keyword("last"), index == len(answer) - 1])

    def cell_snapshot(self) -> dict[str, Any]:
        snapshot = super().cell_snapshot()
        snapshot.update(path=str(self.path), folder=str(self.folder), lines=self.lines,
                        records=self.records, dropped=self.dropped, unreadable=self.unreadable)
        return snapshot


def _plist(fields: list[Any]) -> dict[str, Any]:
    try:
        return from_plist(fields)
    except (CellframeError, TypeError, ValueError, IndexError):
        return {}


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _query(fields: dict[str, Any]) -> tuple[RecordFilter, int]:
    """A query's filter and limit, or ConfigError naming the bad field."""
    for key in ("node", "role", "level"):
        if fields.get(key) is not None and not isinstance(fields[key], str):
            raise ConfigError(f":{key} must be a string, got {fields[key]!r}")
    level = fields.get("level")
    if level is not None and level not in LEVELS:
        raise ConfigError(f":level must be one of {', '.join(LEVELS)}, got {level!r}")
    since = fields.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int | float)):
        raise ConfigError(f":since must be a time in seconds since the epoch, got {since!r}")
    limit = fields.get("limit", 1000)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
        raise ConfigError(f":limit must be a whole number from 1 to 100000, got {limit!r}")
    return RecordFilter(fields.get("node"), fields.get("role"), level, since), limit
