"""The examples run as their docstrings say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_python_and_hy_cells_exchange_s_expressions_over_the_embedded_transport() -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "ping_pong.py"), "--rally", "4"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pinger got (pong 2) from ponger-01" in result.stdout
    assert "rally of 4 finished" in result.stdout


def test_the_hy_cell_declares_its_state_machine_like_a_python_cell(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import hy  # noqa: F401  (installs the importer of .hy modules)

    monkeypatch.syspath_prepend(str(EXAMPLES))  # undone after the test
    from ponger import Ponger
    assert Ponger.cell_verbs() == {"ping"}
    assert Ponger.cell_machine.initial == "waiting"
    assert Ponger.role == "ponger"


def test_the_durable_counter_resumes_on_another_node_and_counts_each_message_once() -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "durable_counter.py"),
                             "--messages", "60"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "counter-02 took the role and resumed at 30" in result.stdout
    assert "final count 60 for 60 distinct messages" in result.stdout


def test_the_durable_order_is_delivered_by_the_node_that_took_its_role() -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "durable_order.py")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "orders-02 resumed: shipped, items {'chair': 4}, paid 120" in result.stdout
    assert "the warehouse dispatched 1 time(s)" in result.stdout
