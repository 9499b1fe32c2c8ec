"""``cellframe demo``: the README's first command heals the cluster and says so."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

KEYS = {"healed", "detect_seconds", "heal_seconds", "requests_served", "inserts_acked",
        "inserts_lost"}


def run_demo(*args: str) -> tuple[int, dict]:
    result = subprocess.run([sys.executable, "-m", "cellframe", "demo", "--json", *args],
                            capture_output=True, text=True, timeout=240)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON summary; stderr:\n{result.stderr[-3000:]}"
    return result.returncode, json.loads(lines[-1])


def check_healed(code: int, summary: dict, *, bound: float = 2.0) -> None:
    assert KEYS <= summary.keys()
    assert summary["problems"] == []
    assert summary["healed"] is True and code == 0
    assert 0 < summary["detect_seconds"] < bound
    assert 0 < summary["heal_seconds"] < bound + 1.0  # kill to a replacement in the pool
    assert summary["requests_served"] > 0
    assert summary["requests_after_detection_to_dead_node"] == 0
    assert summary["inserts_lost"] == 0
    assert summary["inserts_acked"] > 0  # the data phase ran: a shard node died mid-stream
    assert summary["inserts_readable"] == summary["inserts_acked"]
    assert sorted(summary["killed"]) == ["shard-02", "web-02"]
    assert summary["data_heal_seconds"] is not None


def test_demo_on_the_embedded_defaults_heals_with_nothing_lost() -> None:
    check_healed(*run_demo())


@pytest.mark.amqp
def test_demo_across_real_processes_on_rabbitmq_heals_with_nothing_lost(amqp_url: str) -> None:
    # Nine node processes (three of them shards writing to disk) share two cores with the
    # broker here: the detection bound itself is proven by tests/test_heal_end_to_end.py.
    check_healed(*run_demo("--amqp", amqp_url), bound=5.0)
