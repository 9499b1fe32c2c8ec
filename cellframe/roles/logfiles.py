"""The log sump's files: lines appended to a file that rotates by size, and reading records back.

``RotatingLines`` appends whole lines and flushes each write; once the file passes
``max_bytes`` it is renamed ``NAME.1`` (``NAME.1`` becomes ``NAME.2``... up to ``keep``, the
oldest removed) and a new one begun, so the sump's disk use is bounded at about
``(keep + 1) * max_bytes`` per file. ``read_records`` reads a folder's records back, oldest
first, for ``(logs-query ...)`` and for ``cellframe logs --data-dir``; ``matches`` is the one
filter both use.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["LEVELS", "RECORDS_FILE", "EVENTS_FILE", "RecordFilter", "RotatingLines", "read_records"]

RECORDS_FILE = "records.jsonl"
EVENTS_FILE = "events.log"
#: Levels from least to most severe; a filter's level keeps that one and the ones after it.
LEVELS = ("debug", "info", "warning", "error", "critical")


class RotatingLines:
    """Appends lines to ``path``, rotating it past ``max_bytes`` and keeping ``keep`` old ones."""

    def __init__(self, path: Path, *, max_bytes: int = 64 * 2**20, keep: int = 5) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.rotations = 0
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._size = 0

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._size = self._file.tell()

    def write(self, lines: list[str]) -> None:
        """Append ``lines`` (each ending in a newline) and flush; OSError if it cannot."""
        with self._lock:
            if self._file is None:
                raise OSError(f"{self.path} is closed")
            text = "".join(lines)
            self._file.write(text)
            self._file.flush()
            self._size += len(text.encode("utf-8")) if not text.isascii() else len(text)
            if self._size >= self.max_bytes:
                self._rotate()

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        for index in range(self.keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if index == self.keep:
                older.unlink(missing_ok=True)
            elif older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.keep > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self.rotations += 1
        self._file = self.path.open("a", encoding="utf-8")
        self._size = 0

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


@dataclass(frozen=True)
class RecordFilter:
    """Which records to show: from a node, of a role, at a level or above, since a time."""

    node: str | None = None
    role: str | None = None
    level: str | None = None
    since: float | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        if self.node is not None and record.get("node") != self.node:
            return False
        if self.role is not None and record.get("role") != self.role:
            return False
        if self.since is not None and not (isinstance(record.get("time"), int | float)
                                           and record["time"] >= self.since):
            return False
        if self.level is not None:
            level = record.get("level")
            if level not in LEVELS or LEVELS.index(level) < LEVELS.index(self.level):
                return False
        return True


def _files_oldest_first(path: Path) -> list[Path]:
    rotated = sorted(path.parent.glob(f"{path.name}.*"),
                     key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else -1, reverse=True)
    return [p for p in rotated if p.suffix[1:].isdigit()] + ([path] if path.exists() else [])


def read_records(folder: Path, wanted: RecordFilter = RecordFilter()) -> Iterator[dict[str, Any]]:
    """Every record in ``folder``'s records files that ``wanted`` matches, oldest first; a
    line that is not a JSON object is skipped."""
    for path in _files_oldest_first(folder / RECORDS_FILE):
        try:
            handle = path.open(encoding="utf-8", errors="replace")
        except FileNotFoundError:  # rotated away while we looked
            continue
        with handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and wanted.matches(record):
                    yield record
