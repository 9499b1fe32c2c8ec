"""Stopping child node processes: SIGTERM to all, a shared grace period, then SIGKILL."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable

__all__ = ["terminate_all"]


def terminate_all(processes: Iterable[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    """Ask every process to stop (SIGTERM), wait up to ``grace`` seconds for all of them
    together, and kill whatever is still running."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in running:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
