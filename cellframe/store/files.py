"""Small file-system helpers the store needs: directory fsync and the one-writer lock."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import StoreError

__all__ = ["DirectoryLock", "fsync_directory"]


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Make file creations, renames and deletions in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectoryLock:
    """An exclusive ``flock`` on ``<directory>/LOCK``: one open Store per directory.

    The kernel drops the lock when the process dies, so a killed writer never leaves a
    stale lock behind.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "LOCK"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._fd)
            raise StoreError(f"{directory} is already open in another Store") from exc

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
