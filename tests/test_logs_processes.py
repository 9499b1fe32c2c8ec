"""Logs that reach the sump, across real ``cellframe node`` processes on RabbitMQ.

Three chatter nodes log 10,000 lines each while one of them is SIGKILLed half-way; a fourth
node is the log sump, writing to a data directory of the test's own. Each chatter writes down
the largest line number its log shipping saw the broker confirm, so the test knows what the
killed node had acknowledged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cellframe.language.symbols import Symbol
from cellframe.testing import wait_for
from tests.process_cells import CHAT_LINE
from tests.process_support import REPO, ProcessCluster, child_env

pytestmark = [pytest.mark.amqp, pytest.mark.slow]

LINES = 10_000
CHATTERS = ["chat-01", "chat-02", "chat-03"]


@pytest.fixture
def cluster(amqp_url, tmp_path):
    cluster = ProcessCluster(amqp_url, tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


def chat_lines(records_file: Path) -> dict[str, Counter[int]]:
    """cell -> how many times the sump holds each of its line numbers."""
    found: dict[str, Counter[int]] = {name: Counter() for name in CHATTERS}
    if not records_file.exists():
        return found
    for line in records_file.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        match = CHAT_LINE.fullmatch(record.get("message", ""))
        if match and record.get("logger") == "tests.chatter":
            found.setdefault(match.group(2), Counter())[int(match.group(1))] += 1
    return found


def confirmed(cluster: ProcessCluster, cell: str) -> int:
    path = cluster.tally_dir / f"{cell}.confirmed"
    return int(path.read_text()) if path.exists() else -1


def test_every_line_the_broker_acknowledged_reaches_the_sump_even_from_a_killed_node(cluster, tmp_path) -> None:
    data = tmp_path / "data"
    cluster.start(["sump-01"], "--role", "logsump", "--data-dir", str(data))
    cluster.start(CHATTERS, "--role", "chatter")
    records_file = data / "sump-01" / "logsump" / "records.jsonl"
    client = cluster.client()
    try:
        for name in CHATTERS:
            client.send(f"cell.{name}", [Symbol("chatter"), LINES], expect_reply=False)
        wait_for(lambda: confirmed(cluster, "chat-02") >= 2_000, 30, interval=0.005,
                 what="chat-02 half-way", show=lambda: confirmed(cluster, "chat-02"))
        cluster.kill("chat-02")
        acknowledged = confirmed(cluster, "chat-02")
        assert acknowledged < LINES - 1, "chat-02 finished before it was killed: not mid-stream"

        def all_arrived() -> bool:
            held = chat_lines(records_file)
            return (all(len(held[n]) == LINES for n in ("chat-01", "chat-03"))
                    and all(held["chat-02"][i] for i in range(acknowledged + 1)))

        wait_for(all_arrived, 60, interval=0.2, what="every acknowledged line in the sump",
                 show=lambda: {n: len(c) for n, c in chat_lines(records_file).items()})
        held = chat_lines(records_file)
        for name in ("chat-01", "chat-03"):
            assert set(held[name]) == set(range(LINES))
        doubled = {n: [i for i, k in c.items() if k > 1] for n, c in held.items()}
        assert doubled == {n: [] for n in CHATTERS}, "a line reached the sump twice"
        sump = cluster.cell(client, "sump-01")
        assert sump["dropped"] == 0, "a node dropped log records under normal load"
        assert sump["unreadable"] == 0
    finally:
        client.close()
    # The nodes logged their own life too, at INFO: the role each took on its way in.
    records = [json.loads(line) for line in records_file.read_text(encoding="utf-8").splitlines()]
    took = {r["node"] for r in records if r["message"].endswith("differentiated role=chatter previous=None")}
    assert took == set(CHATTERS)

    shown = subprocess.run(
        [sys.executable, "-m", "cellframe", "logs", "--node", "chat-03", "--limit", "3",
         "--amqp", cluster.url, "--exchange", cluster.exchange, "--queue-prefix", cluster.prefix,
         "--secret-file", str(cluster.secret_file)],
        capture_output=True, text=True, timeout=60, env=child_env(), cwd=str(REPO))
    assert shown.returncode == 0, shown.stderr[-2000:]
    printed = shown.stdout.splitlines()
    assert len(printed) == 3 and all(" chat-03/chatter" in line for line in printed), printed


def test_cellframe_logs_follow_prints_a_nodes_records_live_until_interrupted(cluster, tmp_path) -> None:
    import signal
    import threading

    cluster.start(["sump-01"], "--role", "logsump", "--data-dir", str(tmp_path / "data"))
    cluster.start(["chat-01", "chat-02"], "--role", "chatter")
    follow = subprocess.Popen(
        [sys.executable, "-m", "cellframe", "logs", "--follow", "--json", "--node", "chat-01",
         "--amqp", cluster.url, "--exchange", cluster.exchange, "--queue-prefix", cluster.prefix,
         "--secret-file", str(cluster.secret_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=str(REPO))
    printed: list[dict[str, object]] = []
    reader = threading.Thread(target=lambda: printed.extend(json.loads(line) for line in follow.stdout),
                              daemon=True)  # type: ignore[union-attr]
    reader.start()
    client = cluster.client()
    try:
        # The sump's answer (the node's start, logged before) says the follower is bound.
        wait_for(lambda: printed, 30, what="the sump's answer to the follower")
        for name in ("chat-01", "chat-02"):
            client.send(f"cell.{name}", [Symbol("chatter"), 300], expect_reply=False)

        def lines_of_chat_01() -> set[int]:
            return {int(m.group(1)) for r in list(printed)
                    if (m := CHAT_LINE.fullmatch(str(r.get("message", ""))))}

        wait_for(lambda: lines_of_chat_01() == set(range(300)), 60,
                 what="chat-01's 300 lines printed live", show=lambda: len(lines_of_chat_01()))
    finally:
        client.close()
        follow.send_signal(signal.SIGINT)
        try:
            follow.wait(30)
        finally:
            if follow.poll() is None:
                follow.kill()
    reader.join(10)
    assert follow.returncode == 0, follow.stderr.read()[-2000:]  # type: ignore[union-attr]
    assert {r["node"] for r in printed} == {"chat-01"}, "--node let another node's records through"
