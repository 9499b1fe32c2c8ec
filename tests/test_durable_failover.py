"""A durable counter keeps counting exactly while its node is SIGKILLed and another process
takes the role, from the same store folder or from the cluster's shard tier: messages sent 1
to 3 times under one id, the final count equal to the distinct ids, none lost, none applied
twice. Real processes, real RabbitMQ."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cellframe import Client, Envelope, Symbol
from cellframe.errors import ClusterError
from cellframe.testing import wait_for
from tests.process_support import child_env
from tests.replication_support import ShardClient, ShardProcesses, shard_zone

DISTINCT = 3000
KILLS = 3
PACE = 500  # publishes a second: the stream lasts about 12 s, and the kills land inside it


def _start(name: str, store: Path | str, amqp_names: Any, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.durable_node", name, str(store), amqp_names.url,
         amqp_names.token], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=child_env())
    wait_for(lambda: "ready" in log.read_text() or process.poll() is not None, 60,
             what=f"{name} ready", show=lambda: log.read_text()[-2000:])
    assert process.poll() is None, log.read_text()[-2000:]
    return process


def _publish(publisher: Any, sends: list[str], done: threading.Event) -> None:
    start = time.monotonic()
    for number, message_id in enumerate(sends):
        publisher.publish("role.counter", Envelope(b"(inc)", message_id=message_id),
                          persistent=True)
        ahead = start + number / PACE - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # pacing the stream, not waiting for a condition
    done.set()


def _count(client: Client) -> int | None:
    since = len(client.replies)
    client.send("role.counter", "(total)")
    try:
        reply = wait_for(lambda: next((r.expr for r in client.replies[since:]
                                       if r.expr and r.expr[0] == Symbol("count")), None),
                         20, what="a (count ...) reply")
    except Exception:  # the node may be between lives: ask again
        return None
    return int(reply[1])


@pytest.fixture(params=["store", "shards"])
def journal_at(request: Any, amqp_names: Any, tmp_path: Path) -> Iterator[Path | str]:
    """Where the counter's journal lives: a store folder each new process opens again, or the
    shard tier of three shard node processes (then no node of the counter has a folder)."""
    if request.param == "store":
        yield tmp_path / "store"
        return
    zone = shard_zone(tmp_path / "cluster.zone", shards=3, spares=0, heartbeat_ms=100)
    shards = ShardProcesses(amqp_names, zone, tmp_path)
    probe = shards.client("durable-failover-probe")
    try:
        for name in ("shard-01", "shard-02", "shard-03"):
            shards.start(name)
        inserted = ShardClient(probe).call

        def takes_a_write() -> bool:  # False until the nodes are up and the ring is built
            try:
                return inserted('(insert "probe" 1)', timeout=5)[0] == "inserted"
            except ClusterError:
                return False

        wait_for(takes_a_write, 90, interval=0.3, what="the shard tier taking a write")
        yield "shards"
    finally:
        shards.close()
        probe.close()


def test_durable_counter_counts_exactly_across_sigkills_and_takeovers(
        amqp_names: Any, journal_at: Path | str, tmp_path: Path, record_property: Any) -> None:
    rng = random.Random(1414)
    ids = [f"inc-{n}" for n in range(DISTINCT)]
    sends = [i for i in ids for _ in range(rng.randint(1, 3))]
    rng.shuffle(sends)
    amqp_names.queue("role.counter")  # the role's durable queue goes with the test
    store = journal_at
    publisher = amqp_names.connect(buffer_size=len(sends))
    lives = [_start("durable-0", store, amqp_names, tmp_path / "durable-0.log")]
    published = threading.Event()
    stream = threading.Thread(target=_publish, args=(publisher, sends, published), daemon=True)
    stream.start()
    try:
        for kill in range(1, KILLS + 1):
            wait_for(lambda kill=kill: published.is_set() or
                     publisher.stats()["published"] >= len(sends) * kill // (KILLS + 1), 60,
                     what=f"a {kill}/{KILLS + 1} of the stream published")
            lives[-1].send_signal(signal.SIGKILL)
            lives[-1].wait(30)
            lives.append(_start(f"durable-{kill}", store, amqp_names,
                                tmp_path / f"durable-{kill}.log"))
        stream.join(120)
        assert publisher.flush(60), "the broker confirmed every message"
        client = Client(amqp_names.connect(), queue_prefix=amqp_names.queue_prefix)
        counts: list[int | None] = []
        wait_for(lambda: counts.append(_count(client)) or counts[-1] == DISTINCT, 120,
                 what=f"a count of {DISTINCT}", show=lambda: counts[-5:])
        assert _count(client) == DISTINCT  # and no redelivery raises it later
        record_property("publishes", len(sends))
        client.close()
    finally:
        for process in lives:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
