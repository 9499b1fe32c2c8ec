"""MemoryTransport benchmarks: deliveries per second end to end inside one process.

Each function returns a dict of figures; ``python -m cellframe.benchmarks.memory`` prints them
all as JSON. A delivery counts once its handler has acked it. ``cpu_us_per_delivery`` is the
process CPU time per delivery: on a shared machine it says more than the wall-clock rate,
which falls whenever other processes take the cores.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from ..transports.base import Delivery
from ..transports.memory import MemoryBroker
from ..wire.envelope import Envelope

__all__ = ["bench_delivery", "main"]


def bench_delivery(n: int = 200_000, *, queues: int = 1, consumers: int = 1,
                   prefetch: int = 256, size: int = 16) -> dict[str, Any]:
    """One publisher thread; ``queues`` queues bound to its key, ``consumers`` on each."""
    broker = MemoryBroker()
    total = n * queues
    done = threading.Event()
    lock = threading.Lock()
    count = 0

    def handler(delivery: Delivery) -> None:
        nonlocal count
        delivery.ack()
        with lock:
            count += 1
            if count == total:
                done.set()

    transports = [broker.connect(name="publisher")]
    for i in range(queues):
        transports[0].declare_queue(f"q{i}", durable=True)
        transports[0].bind(f"q{i}", "role.#")
        for _ in range(consumers):
            transports.append(broker.connect())
            transports[-1].consume(f"q{i}", handler, prefetch=prefetch)
    envelope = Envelope(b"x" * size, headers={"sig": "0" * 16})
    try:
        return _timed(transports[0], envelope, n, total, done)
    finally:
        for transport in transports:
            transport.close()


def _timed(publisher: Any, envelope: Envelope, n: int, total: int,
           done: threading.Event) -> dict[str, Any]:
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(n):
        publisher.publish("role.web", envelope)
    published = time.perf_counter() - start
    if not done.wait(300):
        raise TimeoutError("the consumers did not ack every delivery within 300 s")
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "deliveries": total,
        "seconds": round(elapsed, 3),
        "deliveries_per_s": round(total / elapsed),
        "publishes_per_s": round(n / published),
        "cpu_us_per_delivery": round(cpu / total * 1e6, 2),
    }


def main() -> None:
    figures = {
        "one_queue_one_consumer": bench_delivery(),
        "one_queue_two_consumers": bench_delivery(consumers=2),
        "fanout_three_queues": bench_delivery(100_000, queues=3),
        "prefetch_1": bench_delivery(20_000, prefetch=1),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
