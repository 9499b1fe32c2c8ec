"""The control pipeline end to end, against raw pika doing the same traffic in the same run.

- ``bench_control_pipeline(n, size)``: a node hosting a counting cell (a ``cellframe node``
  process by default, or an in-process Node) and a client that sends ``n`` signed
  ``(add 1 "...")`` messages, each body padded to ``size`` bytes, to the cell's role queue.
  Every message is published with a confirm, verified (HMAC), read, evaluated and applied by
  the cell, and acked after it was applied; the clock stops when the cell calls back that it
  has applied all ``n``. The baseline is ``bench_raw_pika(n, size)``: a SelectConnection
  publisher with 1,000 confirms in flight and a consumer with prefetch 1,000 acking
  ``multiple`` every 100, same body size. For context, ``ratio_like_cellframe`` sets it
  against raw pika sending what a cellframe client sends (a signed envelope's properties and
  headers, ``mandatory``, a topic exchange): the goal stays with the bare ``ratio``.
- ``bench_round_trip(n)``: a client sends ``(ping)`` to a node and waits for the ``(pong ...)``
  call-back, one at a time; its p50/p99 against ``bench_raw_rpc(n)``, raw pika request/reply.

Each returns a dict of figures; ``python -m cellframe.benchmarks.pipeline`` prints both as
JSON with the machine's load average (the rates fall when other work takes the cores).
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cell.cell import Cell
from ..cell.statemachine import transition
from ..client import Client, Reply
from ..errors import BufferFullError, CellframeError
from ..language.printer import write
from ..language.reader import read
from ..language.symbols import Keyword, Symbol
from ..node.node import Node
from ..roles.registry import RoleRegistry
from ..transports.amqp import DEFAULT_URL, AmqpTransport
from ..wire.routing import cell_key, node_key, role_key
from ..wire.signing import Signer
from .amqp import _latency, bench_raw_pika, bench_raw_rpc

__all__ = ["PipelineCounter", "bench_control_pipeline", "bench_round_trip", "main", "pinging"]

ROLE = "pipeline-counter"
_WARM_UP = 500
_ZONE = """$ORIGIN bench.test.
$TTL 60
@ IN SOA ns.bench.test. hostmaster.bench.test. ( 1 60 30 600 60 )
  IN NS ns
ns IN A 127.0.0.1
"""


class PipelineCounter(Cell):
    """Counts ``(add N ...)``; ``(watch N)`` asks for a ``(reached N)`` call-back at N."""

    states = ("counting",)
    initial = "counting"
    role = ROLE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count = 0
        self.watch_for: tuple[int, str] | None = None

    @transition("add")
    def add(self, n: int, pad: str = "") -> None:
        self.count += n
        if self.watch_for is not None and self.count >= self.watch_for[0]:
            self._reached()

    @transition("watch")
    def watch(self, target: int) -> None:
        message = self.cell_message
        if message is None or not message.reply_to:
            return
        self.watch_for = (target, message.reply_to)
        if self.count >= target:
            self._reached()

    def _reached(self) -> None:
        assert self.watch_for is not None
        target, reply_to = self.watch_for
        self.watch_for = None
        self.cell_send(reply_to, [Symbol("reached"), target, Keyword("count"), self.count])


def bench_control_pipeline(n: int = 20_000, size: int = 100, *, url: str = DEFAULT_URL,
                           in_process: bool = False, via: str = "role",
                           traced: bool = False, sample: float = 1.0) -> dict[str, Any]:
    """Signed control messages end to end through a node, and raw pika in the same run.

    ``via="role"`` sends to the cell's role queue: a durable mailbox, so the messages are
    persistent (the broker writes them to disk). ``via="cell"`` sends to ``cell.<name>``,
    the node's own queue, with transient messages, the same delivery mode as the raw baseline.

    Raw pika runs just before and just after, and the ratio is taken to their mean: on a
    shared machine the load moves within seconds. ``read_us_per_msg`` is what reading one
    such body costs here, the largest single part of the node's ``node_cpu_us_per_msg``.

    ``traced``: with OpenTelemetry tracing on in the client and the node (``cellframe.wire.
    tracing``), every span exported in batches to a JSON-lines file, as ``cellframe
    --trace-file`` does; ``spans`` counts what reached the files. ``sample``: the
    share of messages whose traces are recorded (all carry their trace context).
    """
    raw_before = bench_raw_pika(n, size, url=url)
    spans = _Spans()
    with _traced(traced, sample, spans), _counting_node(url, in_process=in_process,
                                                         trace_dir=spans.folder, sample=sample) as bench:
        client = bench.client(on_reply=bench.on_reply)
        body = _padded_add(size)
        bench.deliver(client, _WARM_UP, body, via=via)  # parsers built, connections warm
        cpu_before = bench.node_cpu()
        start = time.perf_counter()
        reached_at = bench.deliver(client, n, body, via=via)
        elapsed = reached_at - start
        cpu_after = bench.node_cpu()
        node_cpu = cpu_after - cpu_before \
            if cpu_before is not None and cpu_after is not None else None
        per_s = n / elapsed
    raw_after = bench_raw_pika(n, size, url=url)
    raw = round((raw_before["end_to_end_per_s"] + raw_after["end_to_end_per_s"]) / 2)
    like = bench_raw_pika(n, size, url=url, like_cellframe=True)["end_to_end_per_s"]
    return {
        "bench": "control_pipeline", "n": n, "size": size,
        "node": "in-process" if in_process else "process", "via": via,
        "pipeline_per_s": round(per_s), "seconds": round(elapsed, 3),
        "node_cpu_us_per_msg": round(node_cpu / n * 1e6, 1) if node_cpu is not None else None,
        "read_us_per_msg": _read_cost(body),
        "raw_end_to_end_per_s": raw,
        "raw_runs_per_s": [raw_before["end_to_end_per_s"], raw_after["end_to_end_per_s"]],
        "ratio": round(per_s / raw, 3),
        "raw_like_cellframe_per_s": like,
        "ratio_like_cellframe": round(per_s / like, 3),
        **({"traced": True, "sample": sample, "spans": spans.count} if traced else {}),
        "load_average": _load(),
    }


@dataclass
class _Spans:
    """Where the spans of a traced run go, and how many got there in the end."""

    folder: Path | None = None
    count: int = 0


@contextmanager
def _traced(on: bool, sample: float, spans: _Spans) -> Iterator[None]:
    """Tracing on in this process (and, through ``spans.folder``, in the node) while inside;
    then ``spans.count`` is what the client and the node exported."""
    if not on:
        yield
        return
    from ..wire import tracing

    with tempfile.TemporaryDirectory(prefix="cf-bench-traces-") as folder:
        spans.folder = Path(folder)
        traced = tracing.enable_to_file(str(Path(folder, "client-{pid}.jsonl")), sample=sample)
        try:
            yield
        finally:
            tracing.disable()
            traced.shutdown()  # exports the client's last spans; the node's exit did its own
            spans.count = sum(len(path.read_bytes().splitlines())
                              for path in Path(folder).glob("*.jsonl"))
            spans.folder = None


def bench_round_trip(n: int = 2_000, *, url: str = DEFAULT_URL,
                     in_process: bool = False) -> dict[str, Any]:
    """``(ping)`` -> ``(pong ...)`` round trips, one at a time, against raw pika's p99 (the
    mean of a run just before and one just after)."""
    raw_before = bench_raw_rpc(n, url=url)
    with pinging(url, in_process=in_process) as round_trips:
        round_trips(_WARM_UP)
        latencies = round_trips(n)
    raw_after = bench_raw_rpc(n, url=url)
    raw = {key: round((raw_before[key] + raw_after[key]) / 2, 3) for key in ("p50_ms", "p99_ms")}
    figures = _latency("round_trip", latencies)
    figures.update({
        "node": "in-process" if in_process else "process",
        "raw_p50_ms": raw["p50_ms"], "raw_p99_ms": raw["p99_ms"],
        "raw_runs_p99_ms": [raw_before["p99_ms"], raw_after["p99_ms"]],
        "ratio_p99": round(figures["p99_ms"] / raw["p99_ms"], 3),
        "load_average": _load(),
    })
    return figures


@contextmanager
def pinging(url: str = DEFAULT_URL, *,
            in_process: bool = False) -> Iterator[Callable[[int], list[float]]]:
    """A counting node and a client for ``(ping)`` -> ``(pong ...)`` round trips: yields
    ``round_trips(n)``, the seconds of each of ``n`` sent one at a time, from the send to
    the call-back in hand."""
    with _counting_node(url, in_process=in_process) as bench:
        arrived: queue.SimpleQueue[Reply] = queue.SimpleQueue()
        # The raw baseline answers on pika's own thread; so does this client (inline).
        client = bench.client(on_reply=arrived.put, inline=True)
        target, ping = node_key(bench.name), [Symbol("ping")]

        def round_trips(n: int) -> list[float]:
            latencies = []
            for _ in range(n):
                started = time.perf_counter()
                client.send(target, ping)
                arrived.get(timeout=10)
                latencies.append(time.perf_counter() - started)
            return latencies

        yield round_trips


def main() -> None:
    """Run the benchmarks once (a node process; the pipeline via the role and the cell) and
    print the figures as JSON."""
    print(json.dumps([bench_control_pipeline(), bench_control_pipeline(via="cell"),
                      bench_round_trip()], indent=2))


# -- the node under test ---------------------------------------------------------------------


@dataclass
class _Bench:
    """A counting node on a topology of its own, and the benchmark's side of the wire."""

    url: str
    token: str
    signer: Signer
    name: str
    pid: int | None = None

    @property
    def exchange(self) -> str:
        return f"cf-bench-{self.token}.control"

    @property
    def prefix(self) -> str:
        return f"cf-bench-{self.token}."

    def transport(self) -> AmqpTransport:
        from ..transports.topology import amqp_topology

        transport = AmqpTransport(self.url, name=f"cf-bench-{self.token}-{uuid.uuid4().hex[:6]}",
                                  **amqp_topology(self.exchange))
        self._opened.append(transport)
        return transport

    def client(self, **options: Any) -> Client:
        return Client(self.transport(), signer=self.signer, queue_prefix=self.prefix, **options)

    def on_reply(self, reply: Reply) -> None:
        if isinstance(reply.expr, list) and reply.expr[:1] == [Symbol("reached")]:
            self.reached.put(time.perf_counter())

    def deliver(self, client: Client, n: int, body: list[Any], *, via: str = "role") -> float:
        """Send ``n`` adds to the role and return the time the cell called back at n more
        (``client`` must pass its call-backs to ``on_reply``)."""
        self.sent += n
        client.send(cell_key(self.name), [Symbol("watch"), self.sent])
        key, send = (role_key(ROLE) if via == "role" else cell_key(self.name)), client.send
        for _ in range(n):
            while True:
                try:
                    send(key, body, expect_reply=False)
                    break
                except BufferFullError:
                    client.transport.wait_for_room(1.0)  # type: ignore[attr-defined]
        return self.reached.get(timeout=300)

    def node_cpu(self) -> float | None:
        """CPU seconds the node process has used (None in process or off Linux)."""
        if self.pid is None:
            return None
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __post_init__(self) -> None:
        self._opened: list[AmqpTransport] = []
        self.sent = 0
        self.reached: queue.SimpleQueue[float] = queue.SimpleQueue()

    def close(self) -> None:
        from ..transports.topology import amqp_topology
        from .amqp import _delete

        for transport in self._opened:
            transport.close()
        names = amqp_topology(self.exchange)
        _delete(self.url, names["dead_letter_queue"], self.prefix + role_key(ROLE),
                exchanges=(names["exchange"], names["dead_letter_exchange"]))


@contextmanager
def _counting_node(url: str, *, in_process: bool, trace_dir: Path | None = None,
                   sample: float = 1.0) -> Iterator[_Bench]:
    secret = secrets.token_hex(16).encode()
    token = uuid.uuid4().hex[:8]
    bench = _Bench(url, token, Signer(secret, exchange=f"cf-bench-{token}.control"),
                   f"bench-{uuid.uuid4().hex[:6]}")
    try:
        if in_process:
            with _node_in_process(bench):
                yield bench
        else:
            with _node_process(bench, secret, trace_dir, sample):
                yield bench
    finally:
        bench.close()


@contextmanager
def _node_in_process(bench: _Bench) -> Iterator[None]:
    node = Node(bench.name, transport=bench.transport(), signer=bench.signer, role=ROLE,
                registry=RoleRegistry({ROLE: [PipelineCounter]}), queue_prefix=bench.prefix,
                watch_config=False)
    node.start()
    try:
        yield
    finally:
        node.stop()


@contextmanager
def _node_process(bench: _Bench, secret: bytes, trace_dir: Path | None = None,
                  sample: float = 1.0) -> Iterator[None]:
    with tempfile.TemporaryDirectory(prefix="cf-bench-") as workdir:
        secret_file, zone = Path(workdir, "secret"), Path(workdir, "bench.zone")
        secret_file.write_bytes(secret)
        zone.write_text(_ZONE)
        command = [sys.executable, "-m", "cellframe", "node", bench.name, "--amqp", bench.url,
                   "--zone", str(zone), "--secret-file", str(secret_file), "--role", ROLE,
                   "--plugin", "cellframe.benchmarks.pipeline:PipelineCounter",
                   "--exchange", bench.exchange, "--queue-prefix", bench.prefix]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if trace_dir is not None:
            env["CELLFRAME_TRACE_FILE"] = str(trace_dir / "node-{pid}.jsonl")
            env["CELLFRAME_TRACE_SAMPLE"] = str(sample)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        bench.pid = proc.pid
        output: deque[bytes] = deque(maxlen=_KEPT_LINES)
        try:
            reader = _wait_ready(proc, bench.name, output)
            try:
                yield
            except Exception as error:  # say what the node said: a bench's only view of it
                _stop(proc)
                reader.join(5)  # to the end of its output
                said = b"".join(output).decode(errors="replace").strip() or "(nothing)"
                raise CellframeError(f"{type(error).__name__}: {error}; the node's last "
                                     f"output (exit {proc.returncode}):\n{said}") from error
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not stopped 20 s later; nothing if it has stopped."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


#: Lines of a bench node's output kept to explain a run that fails (a node's queue gone,
#: no call-back): the node's last words, not its whole log.
_KEPT_LINES = 40


def _wait_ready(proc: subprocess.Popen[bytes], name: str,
                output: deque[bytes]) -> threading.Thread:
    """Read the node's output until its ready line; then keep reading it in the background
    (the thread returned), its last lines in ``output``."""
    assert proc.stdout is not None
    seen: list[bytes] = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(f"node {name} ready".encode()):
            reader = threading.Thread(target=output.extend, args=(proc.stdout,), daemon=True)
            reader.start()
            return reader
    raise CellframeError(f"benchmark node {name} exited before it was ready: "
                         + b"".join(seen).decode(errors="replace")[-2000:])


def _padded_add(size: int) -> list[Any]:
    """``(add 1 "xxx...")`` written in exactly ``size`` bytes (at least the 10 of the frame)."""
    frame = len('(add 1 "")')
    return [Symbol("add"), 1, "x" * max(0, size - frame)]


def _read_cost(expr: list[Any], rounds: int = 3, n: int = 2_000) -> float:
    """Microseconds to read ``expr``'s text once, best of ``rounds``."""
    body = write(expr).encode()
    best = min(timeit.timeit(lambda: read(body), number=n) for _ in range(rounds))
    return round(best / n * 1e6, 1)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


if __name__ == "__main__":
    main()
