"""``cellframe logs``: the cluster's log records, from the sump and live.

Without ``--data-dir`` it asks the log sump (``(logs-query ...)`` to ``role.logsump``) for
the newest records that match, prints them oldest first, and with ``--follow`` goes on
printing the batches the nodes ship (its reply queue is bound to ``log.*.records`` too), so a
record is shown as soon as its batch leaves the node. With ``--data-dir`` it reads a sump's
files directly (the folder that holds ``records.jsonl``), and ``--follow`` then reads the
file as it grows.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..client import Client, Reply
from ..errors import ConfigError
from ..language.plist import from_plist
from ..language.symbols import Keyword, Symbol
from ..roles.logfiles import RECORDS_FILE, RecordFilter, read_records
from ..roles.logsump import LOG_PAGE_VERB, LOG_QUERY_VERB, LOG_RECORDS_VERB
from .times import moment

__all__ = ["LogQuery", "format_record", "parse_since"]

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)([smhd])\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: ``30s``, ``10m``, ``2h``, ``1d`` ago, or an ISO 8601 time (UTC if it
    names no zone); seconds since the epoch."""
    now = time.time() if now is None else now
    relative = _RELATIVE.match(text.strip())
    if relative:
        return now - float(relative.group(1)) * _UNITS[relative.group(2)]
    try:
        given = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"--since {text!r}: give 30s, 10m, 2h, 1d or an ISO 8601 time") from None
    if given.tzinfo is None:
        given = given.replace(tzinfo=UTC)
    return given.timestamp()


def format_record(record: dict[str, Any]) -> str:
    """One record as a terminal line: time, level, where, logger, message (and exception)."""
    stamp = moment(record.get("time"))
    when = stamp.isoformat(timespec="milliseconds") if stamp is not None else "?"
    where = "/".join(str(record[k]) for k in ("node", "role", "cell") if record.get(k))
    trace = f" trace={record['trace_id']}" if record.get("trace_id") else ""
    line = (f"{when} {str(record.get('level', '?')).upper():8} {where or '?'} "
            f"{record.get('logger', '?')}: {record.get('message', '')}{trace}")
    if record.get("exception"):
        line += "\n" + "\n".join("    " + part for part in str(record["exception"]).rstrip().splitlines())
    return line


def _records_of(expr: Any, verb: str) -> list[dict[str, Any]] | None:
    """The records in a ``(log-page ...)`` or ``(log-records ...)`` expression, or None."""
    if not (isinstance(expr, list) and expr and expr[0] == Symbol(verb)):
        return None
    try:
        fields = from_plist(expr[1:])
    except Exception:
        return None
    found = []
    for text in fields.get("records") or []:
        try:
            record = json.loads(text)
        except (TypeError, ValueError):
            continue
        if isinstance(record, dict):
            found.append(record)
    return found


class LogQuery:
    """Ask the sump for the newest matching records, and follow new ones, through a Client."""

    def __init__(self, client: Client, wanted: RecordFilter, *, limit: int = 1000,
                 show: Callable[[dict[str, Any]], None]) -> None:
        self.client = client
        self.wanted = wanted
        self.limit = limit
        self.show = show
        self.following = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        client.on_reply = self._on_reply

    def ask(self, timeout: float) -> bool:
        """Send the query and print its answer; False if no sump answered in time."""
        query: list[Any] = [Symbol(LOG_QUERY_VERB), Keyword("limit"), self.limit]
        for key in ("node", "role", "level", "since"):
            value = getattr(self.wanted, key)
            if value is not None:
                query += [Keyword(key), value]
        self.client.send("role.logsump", query)
        return self._done.wait(timeout)

    def follow(self, queue_bind: Callable[[str], None]) -> None:
        """Also print every batch the nodes ship from now on (``queue_bind`` binds the
        client's queue to a pattern)."""
        with self._lock:
            self.following = True
        queue_bind("log.*.records")

    def _on_reply(self, reply: Reply) -> None:
        page = _records_of(reply.expr, LOG_PAGE_VERB)
        if page is not None:
            self._print(page)
            fields = from_plist(reply.expr[1:]) if isinstance(reply.expr, list) else {}
            if fields.get("last"):
                self._done.set()
            return
        shipped = _records_of(reply.expr, LOG_RECORDS_VERB)
        if shipped is not None and self.following:
            self._print([r for r in shipped if self.wanted.matches(r)])
        elif isinstance(reply.expr, list) and reply.expr and reply.expr[0] == Symbol("error"):
            self.show({"level": "error", "logger": "cellframe.logs", "message": reply.text})
            self._done.set()

    def _print(self, records: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            for record in records:
                self.show(record)


def read_folder(folder: Path, wanted: RecordFilter, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` matching records of a sump's folder, oldest first."""
    if not (folder / RECORDS_FILE).exists():
        raise ConfigError(f"{folder} holds no {RECORDS_FILE}: is it a log sump's folder?")
    from collections import deque

    return list(deque(read_records(folder, wanted), maxlen=limit))


def follow_file(path: Path, wanted: RecordFilter, show: Callable[[dict[str, Any]], None],
                stop: threading.Event, interval: float = 0.2) -> None:
    """Print records appended to ``path`` from now on, until ``stop`` is set (a rotation
    starts it over from the new file)."""
    handle = path.open("rb")
    handle.seek(0, 2)
    inode = path.stat().st_ino
    try:
        while not stop.is_set():
            start = handle.tell()
            line = handle.readline()
            if line.endswith(b"\n"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and wanted.matches(record):
                    show(record)
                continue
            handle.seek(start)  # nothing new, or half a line: read it again later
            if path.exists() and path.stat().st_ino != inode:
                handle.close()
                handle = path.open("rb")
                inode = path.stat().st_ino
            stop.wait(interval)
    finally:
        handle.close()
