"""Shared helpers for the data-layer tests: child processes, crash injection, segments."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

from cellframe.store import compaction
from cellframe.store.segment import HEADER_SIZE, SegmentFile, scan

__all__ = [
    "SimulatedCrash",
    "crash_at",
    "first_log_with_records",
    "flip_byte",
    "frame_ends",
    "log_segments",
    "read_lines_until",
    "spawn_python",
]


def spawn_python(code: str, *args: str) -> subprocess.Popen[str]:
    """Run ``code`` in a child interpreter with ``args``; its stdout is a text pipe."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def read_lines_until(proc: subprocess.Popen[str], count: int,
                     timeout: float = 30.0) -> list[str]:
    """Read ``count`` lines from the child's stdout (fails if it dies or takes too long)."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"child printed {len(lines)} of {count} lines in {timeout} s")
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"child exited early: {proc.stderr.read() if proc.stderr else ''}")
        lines.append(line.strip())
    return lines


class SimulatedCrash(BaseException):
    """Raised at a compaction step to stand for the process dying there."""


@contextmanager
def crash_at(step: str, monkeypatch: pytest.MonkeyPatch,
             steps: ModuleType = compaction) -> Iterator[None]:
    """Make compaction (or the module ``steps``: ``checkpoint``) stop dead at ``step`` (see
    its ``STEPS``)."""
    def fault(name: str) -> None:
        if name == step:
            raise SimulatedCrash(step)

    with monkeypatch.context() as patch:
        patch.setattr(steps, "fault_point", fault)
        yield


def log_segments(directory: Path) -> list[Path]:
    """The store's shared-log segment files, oldest first."""
    return sorted(directory.glob("log-*.seg"))


def frame_ends(path: Path) -> list[tuple[int, int, bytes]]:
    """(start, end, digest) of every frame in a segment file, in file order."""
    segment = SegmentFile.open(path)
    try:
        spans = []
        frames = list(scan(segment, tolerate_torn_tail=False))
        for i, (offset, _, record) in enumerate(frames):
            end = frames[i + 1][0] if i + 1 < len(frames) else segment.size
            spans.append((offset, end, record.digest))
        return spans
    finally:
        segment.close()


def flip_byte(path: Path, offset: int) -> None:
    """Corrupt one byte of a file in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def first_log_with_records(directory: Path) -> Path:
    """The oldest log segment that holds at least one frame."""
    for path in log_segments(directory):
        if path.stat().st_size > HEADER_SIZE:
            return path
    raise AssertionError(f"no log segment with records in {directory}")

