"""The round trip's latency tail, judged in every one of several runs, one with a busy neighbour.

``bench_round_trip_tail(n, runs)``: a counting node process and raw pika request/reply
(``RawRpc``) stay open for the whole benchmark; each run times ``n`` cellframe round trips
(``(ping)`` -> ``(pong ...)``, see ``pipeline.pinging``) and ``n`` raw ones, interleaved in
blocks so both see the same moments of a shared machine's load, and takes the ratio of the
p99s. One run (``burner_run``) has a CPU burner process spinning on the other core (pinned to
the last CPU this process may use), started before the run and killed after it; it also stops
itself after ``burner_seconds``. The figure judged is the worst run's ratio.

Where the tail comes from, measured with timestamps along the path (2,000 pings, 2 shared
cores, load 1.2 to 5): each broker leg, from our ``send()`` to the receiver's socket turning
readable, takes about 300 us at the median (raw pika's whole round trip: 300 to 550 us), and
holds most of the p99 once the machine is loaded; the three thread hand-offs (the client's
I/O thread to its caller, the node's I/O thread to the cell and back) cost 50 to 120 us
each at the median and up to 2 to 3 ms at the p99 in the run with the burner; evaluating
``(ping)`` costs about 40 us. The node spends about 500 us of CPU on a round trip and the
client about 450 us, against 220 us for both ends of raw pika. Two AmqpTransports alone
(``bench_transport_rpc``: confirms, envelopes, I/O threads) already had twice raw pika's p50.
With the burner on, raw pika's own p50 falls (0.33 against 0.55 ms: a busy core never sleeps),
so that run's ratio is usually the worst.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from typing import Any

from ..transports.amqp import DEFAULT_URL
from .amqp import RawRpc, _latency
from .burners import cpu_burners, other_cpu
from .pipeline import pinging

__all__ = ["bench_round_trip_tail"]

_WARM_UP = 300
#: Blocks of each kind per run: load that comes and goes within a run falls on both sides.
_BLOCKS = 5


def bench_round_trip_tail(n: int = 2_000, runs: int = 5, *, burner_run: int = 2,
                          burner_seconds: float = 60.0, warm_up: int = _WARM_UP,
                          url: str = DEFAULT_URL) -> dict[str, Any]:
    """``runs`` runs of ``n`` round trips each, cellframe and raw pika interleaved, after
    ``warm_up`` of each; run ``burner_run`` (0-based) with one CPU burner. ``ratio`` is the
    worst run's p99 ratio; ``ratio_runs``, ``p99_ms_runs`` and the like give every run's."""
    started = time.perf_counter()
    results, burner = [], {}
    with RawRpc(url) as raw, pinging(url) as ours:
        raw.round_trips(warm_up)
        ours(warm_up)
        for run in range(runs):
            with ExitStack() as stack:
                if run == burner_run:
                    cpu = other_cpu()
                    burners = stack.enter_context(
                        cpu_burners(1, seconds=burner_seconds, cpus=[cpu]))
                ours_s, raw_s = _interleaved(ours, raw.round_trips, n)
            if run == burner_run:
                burner = {"pid": burners.pids[0], "cpu": cpu, "cpu_s": burners.cpu_seconds}
            results.append(_run_figures(ours_s, raw_s))
    ratios = [figures["ratio"] for figures in results]
    # Flat lists, one entry a run in the order they ran: they print compactly in the table.
    per_run = {f"{key}_runs": [figures[key] for figures in results]
               for key in ("p50_ms", "p99_ms", "raw_p50_ms", "raw_p99_ms", "max_ms")}
    return {"bench": "round_trip_tail", "n_per_run": n, "ratio": max(ratios),
            "ratio_runs": ratios, **per_run, "burner_run": burner_run, "burner": burner,
            "seconds": round(time.perf_counter() - started, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def _interleaved(ours: Any, raw: Any, n: int) -> tuple[list[float], list[float]]:
    ours_s: list[float] = []
    raw_s: list[float] = []
    for block in range(_BLOCKS):
        size = n // _BLOCKS + (1 if block < n % _BLOCKS else 0)
        raw_s += raw(size)
        ours_s += ours(size)
    return ours_s, raw_s


def _run_figures(ours: list[float], raw: list[float]) -> dict[str, Any]:
    mine, theirs = _latency("round_trip", ours), _latency("raw_rpc", raw)
    return {"p50_ms": mine["p50_ms"], "p99_ms": mine["p99_ms"], "max_ms": mine["max_ms"],
            "raw_p50_ms": theirs["p50_ms"], "raw_p99_ms": theirs["p99_ms"],
            "ratio": round(mine["p99_ms"] / theirs["p99_ms"], 3)}
