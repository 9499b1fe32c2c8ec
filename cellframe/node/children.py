"""Child ``cellframe node`` processes: start them by name, SIGKILL one, stop them all (SIGTERM
to all, a shared grace period, then SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["NodeProcesses", "terminate_all"]


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


class NodeProcesses:
    """``python -m cellframe [CLI_OPTIONS] node NAME [OPTIONS]`` processes by name, each writing
    its output to ``LOGDIR/NAME.out`` (benchmarks and tests start clusters with it)."""

    def __init__(self, logdir: Path, options: Sequence[str] = (), *,
                 cli_options: Sequence[str] = (), cwd: Path | None = None) -> None:
        self.logdir, self.options, self.cli_options, self.cwd = logdir, options, cli_options, cwd
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *options: str) -> subprocess.Popen[bytes]:
        """Start node ``name`` (with ``options`` after the common ones) without waiting."""
        with (self.logdir / f"{name}.out").open("ab") as out:  # the child keeps its own copy
            proc = subprocess.Popen(
                [sys.executable, "-m", "cellframe", *self.cli_options, "node", name,
                 *self.options, *options],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd,
                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> float:
        """SIGKILL node ``name``: nothing it holds is flushed. Returns the wall time just
        before the signal."""
        proc = self.procs.pop(name)
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        return killed_at

    def close(self) -> None:
        """Stop every node still running (SIGTERM, then SIGKILL after the grace period)."""
        terminate_all(self.procs.values())
        self.procs.clear()
