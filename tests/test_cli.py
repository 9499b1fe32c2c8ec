"""The ``cellframe`` command in-process (click's CliRunner): ``send`` prints the call-backs,
``env`` prints exports, ``status --json`` gathers every node, and bad input exits 2 with a
message that names the problem. Nodes here are in-process, on a topology of the test's own on
the real RabbitMQ; the process tests (test_node_processes.py) run the same commands as
processes."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from cellframe.testing import wait_for
from tests.cli_support import invoke, running_signed_nodes

ZONE = Path(__file__).resolve().parent.parent / "examples" / "cluster.zone"


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["bogus:web", "node:", "node:bad name", "web-01", "role.a.b"])
def test_send_to_a_bad_target_exits_2_naming_it(target: str) -> None:
    result = invoke("send", target, "(ping)", "--amqp", "amqp://nowhere.invalid/")
    assert result.exit_code == 2
    assert "Error:" in result.stderr and result.stdout == ""


@pytest.mark.parametrize(("expression", "problem"), [
    ("(ping", "not closed"),
    ("(ping))", "unexpected ')'"),
    ('(say "hi)', "unterminated string"),
    ("", "empty input"),
])
def test_send_of_a_bad_expression_exits_2_showing_where(expression: str, problem: str) -> None:
    result = invoke("send", "all", expression, "--amqp", "amqp://nowhere.invalid/")
    assert result.exit_code == 2
    assert problem in result.stderr and "line 1" in result.stderr


def test_send_to_a_broker_that_is_not_there_exits_2() -> None:
    result = invoke("send", "all", "(ping)", "--amqp", "amqp://guest:guest@127.0.0.1:1/")
    assert result.exit_code == 2
    assert "no broker reachable" in result.stderr


@pytest.mark.parametrize(("spec", "problem"), [
    ("no_colon_here", "MODULE:ATTR"),
    ("cellframe_no_such_module:Thing", "failed to load"),
    ("cellframe.roles:NoSuchCell", "failed to load"),
    ("json:dumps", "neither a Cell class"),
    ("cellframe.roles.proxy:WeightedPool", "neither a Cell class"),
])
def test_node_with_a_bad_plugin_exits_2_before_it_connects(spec: str, problem: str) -> None:
    result = invoke("node", "n1", "--plugin", spec, "--amqp", "amqp://nowhere.invalid/", "--insecure",
                    "--example")
    assert result.exit_code == 2
    assert problem in result.stderr


# -- env -------------------------------------------------------------------------------------


def test_env_prints_exports_that_bash_evaluates_back_to_the_settings() -> None:
    result = invoke("env", "web-01", "--zone", str(ZONE))
    assert result.exit_code == 0
    script = result.stdout + 'printf "%s\\n" "$CELLFRAME_ROLE" "$CELLFRAME_HEALTH_URL"'
    shown = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert shown.stdout.splitlines() == ["web", "http://web-01/health?full=1"]


def test_env_of_malformed_records_prints_the_valid_pairs_and_reports_the_rest() -> None:
    result = invoke("env", "broken-01", "--zone", str(ZONE))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "export CELLFRAME_NAME=broken-01", "export CELLFRAME_ROLE=web",
        "export CELLFRAME_WEIGHT=3", "export CELLFRAME_NOTE=''"]
    assert "# not exported: data dir" in result.stderr
    assert "no-equals-sign" in result.stderr and "not UTF-8" in result.stderr


def test_env_of_a_listed_name_without_records_is_a_spare_with_a_warning(tmp_path: Path) -> None:
    zone = tmp_path / "listed.zone"
    zone.write_text(ZONE.read_text().replace('"broken-01"', '"broken-01 nobody-07"'))
    result = invoke("env", "nobody-07", "--zone", str(zone))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["export CELLFRAME_NAME=nobody-07",
                                          "export CELLFRAME_ROLE=''"]
    assert "no TXT records" in result.stderr


def test_env_of_a_name_the_zone_does_not_know_is_an_error_not_a_spare() -> None:
    result = invoke("env", "web-1", "--zone", str(ZONE))
    assert result.exit_code == 2 and result.stdout == ""
    assert "node 'web-1' is not in the zone" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "problem"), [
    (["bad name!", "--zone", str(ZONE)], "node name"),
    (["web-01", "--zone", "/nonexistent/cluster.zone"], "No such file"),
    (["web-01", "--dns", "127.0.0.1:notaport"], "port"),
    (["web-01", "--zone", str(ZONE), "--dns", "127.0.0.1:53"], "exactly one"),
])
def test_env_with_bad_options_exits_2_naming_the_problem(args: list[str], problem: str) -> None:
    result = invoke("env", *args)
    assert result.exit_code == 2
    assert problem in result.stderr


# -- against nodes on the real broker ----------------------------------------------------------


@pytest.fixture
def nodes(amqp_names: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Nodes cli-a (tally) and cli-b, signed, on this test's topology, and the CLI options
    that reach them."""
    with running_signed_nodes(amqp_names, tmp_path, ("cli-a", "cli-b")) as found:
        yield found


@pytest.mark.amqp
def test_send_with_wait_prints_each_call_back_as_one_expression_per_line(nodes) -> None:
    result = invoke("send", "all", "(ping)", "--wait", "1.5", *nodes["options"])
    assert result.exit_code == 0, result.stderr
    lines = sorted(result.stdout.splitlines())
    assert [shlex.split(line)[2] for line in lines] == ["cli-a", "cli-b"]
    assert all(line.startswith("(pong :node ") and line.endswith(")") for line in lines)


@pytest.mark.amqp
def test_send_applies_and_a_later_send_sees_it(nodes) -> None:
    assert invoke("send", "cell:cli-a", "(add 41)", *nodes["options"]).exit_code == 0
    result = invoke("send", "cell:cli-a", "(total)", "--wait", "1", *nodes["options"])
    assert result.stdout.splitlines() == ['(total 41 "cli-a")']


def time_from_send_to_exit(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[Result, float]:
    """Invoke ``cellframe send`` and measure from its publish to its return (connecting to
    the broker, before the publish, does not count)."""
    from cellframe.client import Client

    sent_at: list[float] = []
    original = Client.send

    def send(self: Client, *a: Any, **kw: Any) -> str:
        sent_at.append(time.monotonic())
        return original(self, *a, **kw)

    monkeypatch.setattr(Client, "send", send)
    result = invoke("send", *args)
    return result, time.monotonic() - sent_at[0]


@pytest.mark.amqp
def test_send_returns_once_the_broker_confirms(nodes, monkeypatch) -> None:
    result, took = time_from_send_to_exit(monkeypatch, "cell:cli-a", "(add 1)", *nodes["options"])
    assert result.exit_code == 0 and result.stderr.startswith("delivered to cell:cli-a")
    # It used to wait a whole second for a return that never came; a confirm takes ms.
    assert took < 0.9, f"send took {took:.3f} s from publish to exit"
    wait_for(lambda: nodes["nodes"][0].cells()["cli-a"].total == 1, 30, what="(add 1) applied")


@pytest.mark.amqp
def test_send_to_a_target_nobody_listens_on_exits_1(nodes, monkeypatch) -> None:
    result, took = time_from_send_to_exit(monkeypatch, "node:nobody-here", "(ping)", *nodes["options"])
    assert result.exit_code == 1
    assert "nothing is listening on node:nobody-here" in result.stderr
    assert took < 0.9, f"send took {took:.3f} s from publish to exit"


@pytest.mark.amqp
def test_unsigned_send_is_refused_by_signed_nodes_and_exits_non_zero(nodes) -> None:
    options = nodes["options"][:-2]
    assert "--secret-file" not in options
    result = invoke("send", "node:cli-a", "(ping)", "--wait", "10", *options,
                    env={"CELLFRAME_SECRET": ""})
    assert result.exit_code == 2 and "(pong" not in result.stdout
    assert "node cli-a refused our message (unsigned)" in result.stderr
    assert nodes["nodes"][0].counters.refused == {"unsigned": 1}


@pytest.mark.amqp
def test_status_json_lists_every_node_with_role_cells_and_counters(nodes) -> None:
    result = invoke("status", "--json", "--window", "1.5", *nodes["options"])
    assert result.exit_code == 0, result.stderr
    statuses = {n["node"]: n for n in json.loads(result.stdout)["nodes"]}
    assert {name: s["role"] for name, s in statuses.items()} == {"cli-a": "tally", "cli-b": None}
    assert [c["name"] for c in statuses["cli-a"]["cells"]] == ["cli-a"]
    assert statuses["cli-a"]["counters"]["delivered"] >= 1


def test_node_serves_prometheus_metrics_on_the_address_and_port_given(tmp_path) -> None:
    import os
    import socket
    import sys
    import urllib.request

    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cellframe", "node", "web-01", "--metrics-port", str(port),
         "--metrics-addr", "0.0.0.0", "--insecure", "--example"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, CELLFRAME_SECRET=""),
    )
    try:
        def scrape() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    return r.read().decode()
            except OSError:
                return None

        text = wait_for(scrape, 30, what="the metrics endpoint")
        assert 'cellframe_node_role{node="web-01"' in text
        listening = subprocess.run(["ss", "-ltn", f"sport = :{port}"], capture_output=True,
                                   text=True).stdout
        assert f"0.0.0.0:{port}" in listening
    finally:
        proc.terminate()
        proc.wait(20)
