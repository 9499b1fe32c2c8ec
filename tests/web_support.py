"""What the web-tier tests share: a zone with a proxy driving HAProxy, and a bounded HTTP load.

``web_zone`` writes the cluster: one proxy whose ``haproxy-socket`` is the test's HAProxy, web
nodes serving ``tests.web_apps:app`` on free loopback ports, and spares ready to serve it too.
``HttpLoad`` is the load generator: a bounded loop of urllib3 requests (keep-alive pools, a
few threads) that records, per request, when it was sent, what answered (the port in the body)
or that it failed; it stops by itself after ``limit`` requests or ``seconds``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import urllib3

WEB_SETTINGS = ('"app=tests.web_apps:app" "listen=127.0.0.1:0" "health-url=http://{name}/health" '
                '"announce-ms=200" "load-window-ms=500" "slow-ms=40" "fast-ms=15" "drain-ms=1500"')


def web_zone(path: Path, haproxy_socket: str | None, *, web: int = 3, spares: int = 0,
             intent: str | None = None, web_app: str = "tests.web_apps:app",
             cluster_extra: str = "", web_extra: str = "") -> Path:
    webs = [f"web-{i:02d}" for i in range(1, web + 1)]
    spare = [f"spare-{i:02d}" for i in range(1, spares + 1)]
    lines = [
        "$ORIGIN web.test.", "$TTL 5",
        "@ IN SOA ns.web.test. hostmaster.web.test. ( 1 60 30 600 5 )", "  IN NS ns",
        "ns IN A 127.0.0.1",
        f'_cluster IN TXT "proxy=1" "{intent or f"web={web}"}" "heartbeat-ms=100" '
        f'"failure-timeout-ms=500"' + (f' "spares={",".join(spare)}"' if spare else "")
        + (f" {cluster_extra}" if cluster_extra else ""),
        f'_nodes IN TXT "{" ".join(["proxy-01", *webs, *spare])}"',
        'proxy-01 IN TXT "role=proxy"' + (f' "haproxy-socket={haproxy_socket}" "haproxy-sync-ms=200"'
                                          if haproxy_socket else ""),  # None: no HAProxy
    ]
    settings = WEB_SETTINGS.replace("tests.web_apps:app", web_app) + (
        f" {web_extra}" if web_extra else "")
    lines += [f'{name} IN TXT "role=web" {settings.format(name=name)}' for name in webs]
    lines += [f"{name} IN TXT {settings.format(name=name)}" for name in spare]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class HttpLoad:
    """A bounded HTTP load on ``url``: ``threads`` loops, at most ``limit`` requests in all."""

    url: str
    threads: int = 2
    limit: int = 20_000
    seconds: float = 20.0
    pause: float = 0.0  # between one thread's requests: a light load, when not 0
    results: list[tuple[float, str | None]] = field(default_factory=list)  # (sent at, port or None)
    errors: list[str] = field(default_factory=list)  # what each failed request got
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> HttpLoad:
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, name=f"http-load-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def _run(self) -> None:
        pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=1, read=5))
        deadline = time.monotonic() + self.seconds
        while not self._stop.is_set() and time.monotonic() < deadline and len(self.results) < self.limit:
            sent = time.monotonic()
            try:
                answer = pool.request("GET", self.url + "/")
                served = answer.data.decode() if answer.status == 200 else None
                if served is None:
                    self.errors.append(f"HTTP {answer.status}: {answer.data[:200]!r}")
            except urllib3.exceptions.HTTPError as error:
                served = None
                self.errors.append(repr(error))
            self.results.append((sent, served))
            if self.pause:
                self._stop.wait(self.pause)

    def stop(self) -> HttpLoad:
        self._stop.set()
        for worker in self._workers:
            worker.join(10)
        return self

    def served_by(self, since: float = 0.0) -> Counter[str | None]:
        return Counter(port for sent, port in list(self.results) if sent >= since)

    def failures(self, since: float = 0.0) -> int:
        return sum(1 for sent, port in list(self.results) if sent >= since and port is None)
