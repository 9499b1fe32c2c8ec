"""HTTP through HAProxy to cellframe's web cells, against the same app behind the same HAProxy.

Both sides serve ``hello`` (a 13-byte answer) under waitress with 8 threads, in this process:
the baseline is plain waitress (``create_server``), the other a ``LocalCluster`` of a proxy node
driving its HAProxy through the runtime API and a web node whose cell serves the app through
its ``LoadMeter``, with membership heartbeats, weight decisions and announcements running
beside it. Each side has its own HAProxy of the same configuration (``HaproxyProcess``), the
baseline's server written in its file, cellframe's added at runtime. ``wrk`` (one thread, 16
connections) drives each in turn, rounds interleaved and the order swapped every round (on a
busy two-core machine the side measured first did up to 20% better, even plain against
plain); the ratio is the median of the rounds' ratios. The cluster keeps running during the
baseline's turns too (its control plane shares the process), so the ratio measures what the
cell adds to a request: the meter and the health path's routing.
"""

from __future__ import annotations

import logging
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["bench_web_through_haproxy", "hello"]

_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_ZONE = """$ORIGIN bench.test.
$TTL 5
@ IN SOA ns.bench.test. hostmaster.bench.test. ( 1 60 30 600 5 )
  IN NS ns
ns IN A 127.0.0.1
_cluster IN TXT "proxy=1" "web=1" "heartbeat-ms=100" "failure-timeout-ms=500"
_nodes IN TXT "proxy-01 web-01"
proxy-01 IN TXT "role=proxy" "haproxy-socket={socket}"
web-01 IN TXT "role=web" "app=cellframe.benchmarks.web:hello" "listen=127.0.0.1:0" "http-threads=8"
"""


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The benchmark's app: the smallest useful answer, so the serving path is what is measured."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world!"]


def _wrk(url: str, seconds: float, connections: int) -> float:
    done = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url + "/"],
                          capture_output=True, text=True, timeout=seconds + 30, check=True)
    found = _RATE.search(done.stdout)
    if found is None:
        raise RuntimeError(f"wrk printed no rate: {done.stdout[-500:]}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", done.stdout)
    if errors:
        raise RuntimeError(f"wrk saw errors: {errors.group(0)}")
    return float(found.group(1))


def bench_web_through_haproxy(seconds: float = 4.0, *, rounds: int = 3,
                              connections: int = 16) -> dict[str, Any]:
    """Requests per second through HAProxy: cellframe web cells vs plain waitress."""
    from ..web.launch import HaproxyProcess, find_haproxy

    if find_haproxy() is None or shutil.which("wrk") is None:
        return {"skipped": "haproxy or wrk is not installed (Debian: apt-get install haproxy wrk)"}
    try:
        from waitress.server import create_server
    except ImportError:
        return {"skipped": "waitress is not installed (pip install 'cellframe[web]')"}
    from ..node.cluster import LocalCluster, wait_for

    # waitress warns of every queued request once its threads are busy, as they are here.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    plain = create_server(hello, host="127.0.0.1", port=0, threads=8, ident="plain")
    plain_thread = threading.Thread(target=plain.run, name="http:plain", daemon=True)
    plain_thread.start()
    folder = Path(tempfile.mkdtemp(prefix="cellframe-bench-web-"))
    try:
        with HaproxyProcess(servers=[("plain", "127.0.0.1", int(plain.effective_port))]) as base, \
                HaproxyProcess() as front:
            (folder / "bench.zone").write_text(_ZONE.format(socket=front.socket_path))
            with LocalCluster(folder / "bench.zone", workdir=folder):
                runtime = front.runtime()
                wait_for(lambda: any(s.up for s in runtime.servers("web").values()), 10,
                         what="the web cell in HAProxy", show=lambda: runtime.servers("web"))
                _wrk(front.url, 1, connections)  # warm both paths before measuring
                _wrk(base.url, 1, connections)
                plain_rates, cell_rates = [], []
                for turn in range(rounds):
                    if turn % 2:
                        cell_rates.append(_wrk(front.url, seconds, connections))
                    plain_rates.append(_wrk(base.url, seconds, connections))
                    if not turn % 2:
                        cell_rates.append(_wrk(front.url, seconds, connections))
    finally:
        plain.close()
        plain_thread.join(5)
        shutil.rmtree(folder, ignore_errors=True)
    ratios = [c / p for c, p in zip(cell_rates, plain_rates, strict=True)]
    return {"ratio": round(statistics.median(ratios), 3),
            "cellframe_rps": round(statistics.median(cell_rates)),
            "plain_rps": round(statistics.median(plain_rates)),
            "rounds": rounds, "seconds": seconds, "connections": connections,
            "load_generator": "wrk -t1"}
