"""What importing cellframe costs, against importing pykka, each in a fresh interpreter.

"Warm" means the files are in the page cache and compiled: each statement runs once before
the timed runs. Each run times only the import statement, inside the new process, so the
interpreter's own start-up is left out of both sides.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from typing import Any

__all__ = ["STATEMENTS", "bench_imports", "time_import"]

#: The statements measured: the baseline, the package, and what a cell's module imports.
STATEMENTS = {
    "pykka": "import pykka",
    "cellframe": "import cellframe",
    "cell_and_node": "from cellframe import Cell, Node, on, transition",
}

_PROBE = "import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"


def time_import(statement: str, runs: int) -> list[float]:
    """Milliseconds ``statement`` took in each of ``runs`` new interpreters, after one warm-up."""
    times = []
    for _ in range(runs + 1):
        result = subprocess.run([sys.executable, "-c", _PROBE.format(statement=statement)],
                                capture_output=True, text=True, timeout=60, check=True)
        times.append(float(result.stdout) * 1000)
    return times[1:]


def bench_imports(runs: int = 7) -> dict[str, Any]:
    """Median milliseconds of each statement; ``ratio``: ``import cellframe`` over ``import pykka``."""
    medians = {name: round(statistics.median(time_import(statement, runs)), 2)
               for name, statement in STATEMENTS.items()}
    return {**{f"{name}_ms": ms for name, ms in medians.items()},
            "ratio": round(medians["cellframe"] / medians["pykka"], 2)}


if __name__ == "__main__":
    print(bench_imports())
