"""CPU burners for benchmarks that measure cellframe on a machine whose cores are taken.

A burner is a separate Python process spinning in a loop: the load another program puts on
the machine, which the GIL of the process under test does not see. Each one is bounded twice:
it stops itself after ``seconds`` (so a benchmark killed before its clean-up leaves no spinner
behind), and ``cpu_burners`` kills and reaps it on the way out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Burners", "cpu_burners", "cpu_seconds", "other_cpu"]

# The child pins itself before spinning, so the pin holds from its first loop on.
_SPIN = """
import os, sys, time
cpu = int(sys.argv[2])
if cpu >= 0 and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {cpu})
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    pass
"""


@dataclass
class Burners:
    """The burners started by ``cpu_burners``: their process ids, the CPU each was pinned to
    (-1: none), and, once stopped, the CPU seconds they burned (evidence that they ran)."""

    pids: list[int] = field(default_factory=list)
    cpus: list[int] = field(default_factory=list)
    cpu_seconds: float = 0.0


@contextmanager
def cpu_burners(count: int, *, seconds: float, cpus: list[int] | None = None) -> Iterator[Burners]:
    """Keep ``count`` processes spinning while inside (at most ``seconds``); ``cpus`` pins
    burner i to ``cpus[i]`` (Linux), else the scheduler places them."""
    burners = Burners(cpus=[(cpus[i] if cpus else -1) for i in range(count)])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for cpu in burners.cpus:
            procs.append(subprocess.Popen([sys.executable, "-c", _SPIN, str(seconds), str(cpu)]))
            burners.pids.append(procs[-1].pid)
        yield burners
    finally:
        burners.cpu_seconds = round(sum(cpu_seconds(proc.pid) for proc in procs), 2)
        for proc in procs:
            proc.kill()
            proc.wait()


def other_cpu() -> int:
    """The CPU for a single burner: the last one this process may run on (-1 if it may run on
    only one). The benchmark's own processes stay unpinned: on 2 cores the scheduler then
    runs them beside the burner on the other core, the case of a busy neighbour."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return allowed[-1] if len(allowed) > 1 else -1


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used (0 off Linux or once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
