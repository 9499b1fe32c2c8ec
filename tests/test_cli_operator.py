"""An operator's day (issue 19), each surprise driven through the CLI as a user does: errors
are one line and a non-zero exit, never a traceback; a send says what happened and exits
accordingly; status lists the dead and compares intent with actual. Broker items run on the
real RabbitMQ."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cellframe.cli.picture import ClusterPicture
from cellframe.cli.status import render_text, status_view
from cellframe.testing import wait_for
from cellframe.wire.envelope import Envelope
from tests import cli_support
from tests.cli_support import ZONE, invoke
from tests.process_support import ProcessCluster

signed_nodes = cli_support.signed_nodes


def assert_one_line_error(result: Any, *, exit_code: int = 2) -> str:
    assert result.exit_code == exit_code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    return errors[0]


# -- errors: one line, a non-zero exit ------------------------------------------------------


@pytest.mark.parametrize(("url", "problem"), [
    ("not a url", "must start with amqp:// or amqps://"),
    ("http://127.0.0.1:5672/", "must start with amqp:// or amqps://"),
    ("amqp://127.0.0.1:99999/", "Port out of range"),
    ("amqp:///%2F", "names no host"),
])
def test_a_malformed_broker_url_is_one_line_before_any_connection(url: str, problem: str) -> None:
    assert problem in assert_one_line_error(invoke("send", "all", "(ping)", "--amqp", url))


@pytest.mark.parametrize("url", ["amqp://ops:hunter2@127.0.0.1:99999/",
                                 "http://ops:hunter2@127.0.0.1:5672/"])
def test_a_malformed_broker_url_is_shown_without_its_password(url: str) -> None:
    line = assert_one_line_error(invoke("send", "all", "(ping)", "--amqp", url))
    assert "hunter2" not in line and "ops:***@127.0.0.1" in line, line


@pytest.mark.amqp
@pytest.mark.parametrize(("change", "problem"), [
    (("guest:guest@", "guest:wrong-password@"), "refused the login of user 'guest' (403"),
    (("/%2F", "/no-such-vhost"), "refused virtual host 'no-such-vhost' (530"),
])
def test_a_refused_login_or_virtual_host_fails_at_once_in_one_line(
        amqp_url: str, change: tuple[str, str], problem: str) -> None:
    url = amqp_url.replace(*change)
    assert url != amqp_url
    started = time.monotonic()
    result = invoke("send", "all", "(ping)", "--amqp", url)
    took = time.monotonic() - started
    assert problem in assert_one_line_error(result)
    assert result.stderr.count("\n") == 1, result.stderr  # no pika ERROR lines, no retries
    assert took < 5, f"a permanent refusal took {took:.1f} s (it used to retry for 10 s)"


@pytest.mark.parametrize(("args", "problem"), [
    (["--dns", "notahost"], "must be an IP address"),
    (["--zone", "README.md"], "--domain"),
])
def test_env_names_the_cli_option_not_python_internals(args: list[str], problem: str) -> None:
    line = assert_one_line_error(invoke("env", "web-01", *args))
    assert problem in line and "dns.nameserver" not in line and "pass origin=" not in line


def test_a_non_utf8_expression_is_refused_before_it_is_sent() -> None:
    # How Python hands a program the bytes of $'(load "\xff")': as a lone surrogate.
    line = assert_one_line_error(invoke("send", "all", '(load "\udcff")', "--amqp", "amqp://h/"))
    assert "byte 0xff at position 7 is not valid UTF-8" in line and "\\udc" not in line


@pytest.mark.parametrize(("args", "option"), [
    (["status", "--exchange", "\udcff", "--window", "0.5"], "--exchange"),
    (["send", "all", "(ping)", "--queue-prefix", "a\udcff"], "--queue-prefix"),
    (["send", "all", "(ping)", "--amqp", "amqp://h\udcff/"], "--amqp"),
    (["env", "web-01", "--domain", "\udcff", "--dns", "127.0.0.1"], "--domain"),
    (["node", "web-01", "--example", "--insecure", "--role", "\udcff"], "--role"),
    (["keys", "new", "\udcff"], "NAME"),
])
def test_a_non_utf8_option_is_refused_in_the_clis_words(args: list[str], option: str) -> None:
    # They reached the broker as '\udcff' (two ERROR lines, then "no broker reachable"),
    # or dnspython ("A DNS label is > 63 octets long").
    line = assert_one_line_error(invoke(*args))
    assert f"Invalid value for '{option}'" in line and "is not valid UTF-8" in line, line
    assert "\\udc" not in line


def text_parameters() -> list[tuple[str, str]]:
    """(command, parameter) for every parameter of every command that takes plain text."""
    import click

    from cellframe.cli.main import main

    found = []

    def walk(command: click.Command, path: str) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")
        found.extend((path, p.name or "") for p in command.params
                     if type(p.type) is click.types.StringParamType)

    walk(main, "cellframe")
    return found


def test_every_text_option_is_checked_for_utf8_or_is_a_path() -> None:
    assert text_parameters() == []


@pytest.mark.parametrize(("args", "problem"), [
    (["--exchange", "amq.x"], "exchange 'amq.x' starts with 'amq.', which the broker keeps"),
    (["--queue-prefix", "a" * 300], "must be 1 to 255 bytes, not 325"),
    (["--queue-prefix", "amq."], "starts with 'amq.', which the broker keeps"),
])
@pytest.mark.amqp
def test_a_name_the_broker_would_refuse_is_one_line_at_once(
        amqp_names, args: list[str], problem: str) -> None:
    # A too long reply queue name was a ConfigError's traceback; a name in amq.* the broker
    # refused (403), and the command waited 10 s to say "no broker reachable".
    options = ["--amqp", amqp_names.url, "--exchange", amqp_names.exchange, *args]
    started = time.monotonic()
    result = invoke("send", "all", "(ping)", "--wait", "1", *options)
    assert problem in assert_one_line_error(result)
    assert time.monotonic() - started < 5


def test_an_ordinary_error_escaping_a_command_is_one_line_and_a_bug_keeps_its_traceback() -> None:
    import click
    from click.testing import CliRunner

    from cellframe.cli.failure import OneLineErrors
    from cellframe.errors import ConfigError, StateMachineError

    @click.group(cls=OneLineErrors)
    def group() -> None:
        pass

    @group.command()
    @click.argument("kind")
    def fails(kind: str) -> None:
        raise {"ordinary": ConfigError("a mistake, said in full"),
               "machine": StateMachineError("a class that cannot be"),
               "bug": KeyError("bug")}[kind]

    result = CliRunner().invoke(group, ["fails", "ordinary"])
    assert (result.exit_code, result.output) == (2, "Error: a mistake, said in full\n")
    for kind, error in (("machine", StateMachineError), ("bug", KeyError)):
        result = CliRunner().invoke(group, ["fails", kind])
        assert type(result.exception) is error  # not turned into a line: its traceback shows


@pytest.mark.parametrize("args", [
    ["send", "all", "(ping)", "--wait", "-1"],
    ["status", "--window", "-1"],
    ["status", "--window", "0"],
    ["logs", "--timeout", "-5"],
])
def test_negative_durations_are_refused(args: list[str]) -> None:
    assert "is not in the range" in assert_one_line_error(invoke(*args))


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_metrics_port_in_use_is_one_line_and_the_node_never_starts(busy_port: int) -> None:
    result = invoke("node", "web-01", "--example", "--insecure", "--metrics-port", str(busy_port))
    line = assert_one_line_error(result)
    assert f"metrics cannot listen on 127.0.0.1:{busy_port}" in line
    assert "ready" not in result.stdout


# -- send: feedback and exit codes ----------------------------------------------------------


@pytest.mark.amqp
def test_a_no_op_send_says_no_call_back_came_and_how_to_find_out(signed_nodes) -> None:
    result = invoke("send", "node:op-a", '(set-wieght "web-01" 5)', "--wait", "1",
                    *signed_nodes["options"])
    assert result.exit_code == 4 and result.stdout == ""
    assert "no call-back within 1 s from node:op-a" in result.stderr
    assert "may have been a no-op" in result.stderr and "(diagnostic true)" in result.stderr
    assert "cellframe dead-letters" in result.stderr


@pytest.mark.amqp
def test_a_send_without_wait_says_it_was_delivered(signed_nodes) -> None:
    result = invoke("send", "cell:op-a", "(add 1)", *signed_nodes["options"])
    assert result.exit_code == 0
    assert result.stderr.startswith("delivered to cell:op-a (message ")


@pytest.mark.amqp
def test_an_error_call_back_makes_send_exit_3(signed_nodes) -> None:
    result = invoke("send", "cell:op-a", '(add "not a number")', "--wait", "1.5",
                    *signed_nodes["options"])
    assert result.stdout.startswith("(error :cell ")
    assert result.exit_code == 3
    assert "1 of 1 call-backs within 1.5 s were errors" in result.stderr


@pytest.mark.amqp
@pytest.mark.parametrize("value", ['"maybe"', '"false"', "1", "0"])
def test_diagnostic_takes_only_true_or_false(signed_nodes, value: str) -> None:
    result = invoke("send", "node:op-a", f"(diagnostic {value})", "--wait", "1.5",
                    *signed_nodes["options"])
    assert result.exit_code == 3 and "diagnostic takes true or false" in result.stdout
    assert signed_nodes["nodes"][0].diagnostic is False


@pytest.mark.amqp
def test_diagnostic_false_and_nil_turn_it_off(signed_nodes) -> None:
    node = signed_nodes["nodes"][0]
    for value, expected in (("true", True), ("false", False), ("true", True), ("nil", False)):
        assert invoke("send", "node:op-a", f"(diagnostic {value})",
                      *signed_nodes["options"]).exit_code == 0
        wait_for(lambda expected=expected: node.diagnostic is expected, 30,
                 what=f"diagnostic {expected} after (diagnostic {value})",
                 show=lambda: node.diagnostic)


@pytest.mark.amqp
def test_status_with_no_node_answering_exits_1_saying_what_to_check(amqp_names) -> None:
    result = invoke("status", "--window", "0.3", "--amqp", amqp_names.url, "--exchange",
                    amqp_names.exchange, "--queue-prefix", amqp_names.queue_prefix)
    line = assert_one_line_error(result, exit_code=1)
    assert "no node answered within 0.3 s" in line and "cellframe node NAME" in line



@pytest.mark.amqp
@pytest.mark.parametrize(("watch", "exit_code"), [((), 1), (("--watch",), 0)])
def test_ctrl_c_aborts_a_one_shot_status_but_ends_a_watch_normally(
        amqp_names, monkeypatch, watch, exit_code) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise KeyboardInterrupt
    monkeypatch.setattr("cellframe.cli.status.collect_status", interrupted)
    result = invoke("status", *watch, "--window", "0.3", "--amqp", amqp_names.url, "--exchange",
                    amqp_names.exchange, "--queue-prefix", amqp_names.queue_prefix)
    assert result.exit_code == exit_code, result.output
    assert ("Aborted" in result.output) is (exit_code == 1)

# -- status: the dead are listed, intent against actual -------------------------------------


@pytest.fixture
def three_nodes(amqp_url: str, tmp_path: Path) -> Iterator[ProcessCluster]:
    cluster = ProcessCluster(amqp_url, tmp_path)
    try:
        cluster.start(["web-01", "web-02", "spare-01"], "--zone", str(ZONE))
        yield cluster
    finally:
        cluster.close()


def status_json(cluster: ProcessCluster) -> dict[str, Any]:
    result = invoke("status", "--json", "--window", "1.5", "--amqp", cluster.url,
                    "--exchange", cluster.exchange, "--queue-prefix", cluster.prefix,
                    "--secret-file", str(cluster.secret_file))
    return json.loads(result.stdout) if result.exit_code == 0 else {"failed": result.output}


def health_of(picture: dict[str, Any], name: str) -> tuple[str, list[str]] | None:
    """A member's health and the views that say so."""
    return next(((m["health"], m["evidence"]) for m in picture.get("members", [])
                 if m["name"] == name), None)


@pytest.mark.amqp
@pytest.mark.slow
def test_status_lists_a_killed_node_as_down_and_shows_intent_against_actual(three_nodes) -> None:
    seen: list[dict[str, Any]] = []

    def spare_took_logsump() -> bool:
        seen[:] = [status_json(three_nodes)]
        return any(r["role"] == "logsump" and r["holders"] == ["spare-01"]
                   for r in seen[0].get("roles") or [])

    wait_for(spare_took_logsump, 30, what="spare-01 holding logsump", show=lambda: seen)
    three_nodes.kill("web-02")
    wait_for(lambda: health_of(seen.__setitem__(0, status_json(three_nodes)) or seen[0],
                               "web-02") == ("down", ["spare-01", "web-01"]), 30,
             what="web-02 reported down by both survivors", show=lambda: seen)
    result = invoke("status", "--window", "1.5", "--amqp", three_nodes.url, "--exchange",
                    three_nodes.exchange, "--queue-prefix", three_nodes.prefix,
                    "--secret-file", str(three_nodes.secret_file))
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.stdout.splitlines()
            if line.startswith("│ ")}
    assert "2 of 3 nodes answered, 1 did not" in result.stdout
    assert "down (per spare-01, web-01)" in rows["web-02"] and "no answer" in rows["web-02"]
    assert "1/3" in rows["web"] and "web-01" in rows["web"]
    assert "next: no spare left" in result.stdout and "web 1/3" in result.stdout
    assert "…" not in result.stdout  # not squeezed to 80 columns though not a terminal
    # The nodes' own consoles tell the story at INFO without -v.
    web_01, spare_01 = three_nodes.nodes["web-01"], three_nodes.nodes["spare-01"]
    wait_for(lambda: "down member=web-02" in web_01.text(), 30,
             what="web-01's console saying web-02 is down", show=web_01.text)
    assert "claimed role=logsump" in spare_01.text() and "ready role=logsump" in spare_01.text()
    assert "up member=web-01" in spare_01.text()
    assert three_nodes.terminate("web-01") == 0
    assert "node web-01 shutting down" in web_01.text() and "stopping role=web" in web_01.text()


def test_the_picture_says_which_spare_takes_which_role_next_and_why() -> None:
    def view(owner: str, *members: tuple[str, str | None, str]) -> dict[str, Any]:
        # A node's view of itself says 0 s of silence: the table must not show that.
        return {"name": f"{owner}-membership", "state": "running", "counters": {},
                "healing": {}, "intent": {"web": 3, "logsump": 1},
                "members": [{"name": n, "role": r, "status": s,
                             "silence": 0.0 if n == owner else 0.25} for n, r, s in members]}

    members = (("web-01", "web", "alive"), ("web-02", "web", "down"),
               ("spare-01", None, "alive"))
    statuses = [{"node": n, "role": r, "counters": {}, "cells": [view(n, *members)]}
                for n, r, s in members if s == "alive"]
    picture = ClusterPicture.from_statuses(statuses)
    assert {m.name: m.heartbeat_lag for m in picture.members} == {
        "spare-01": 0.25, "web-01": 0.25, "web-02": 0.25}
    assert [m.evidence for m in picture.members] == [("web-01",), ("spare-01",),
                                                     ("spare-01", "web-01")]
    assert [(m.name, m.health, m.answered) for m in picture.members] == [
        ("spare-01", "alive", True), ("web-01", "alive", True), ("web-02", "down", False)]
    assert [(r.role, len(r.holders), r.wanted) for r in picture.roles] == [
        ("logsump", 0, 1), ("web", 1, 3)]
    assert picture.next_steps[0] == ("spare-01 takes logsump (logsump 0/1: the most "
                                     "depleted role first)")
    assert picture.next_steps[1].startswith("no spare left for 2 more (web 1/3)")


def test_status_shows_a_ranged_roles_capacity_against_load() -> None:
    membership = {"name": "web-01-membership", "state": "running", "counters": {},
                  "healing": {}, "members": [],
                  "capacity": {"web": {"held": 3, "min": 3, "max": 6, "want": 4}}}
    statuses = [{"node": "web-01", "role": "web", "counters": {}, "cells": [membership]}]
    text = render_text(status_view(statuses))
    assert "capacity: web 3/3..6 -> 4" in text


@pytest.mark.parametrize(("where", "value"), [
    (("role",), 3), (("role",), ["web"]),
    (("cells", 0, "members", 0, "name"), 5), (("cells", 0, "members", 0, "name"), []),
    (("cells", 0, "members", 0, "name"), None), (("cells", 0, "members", 0, "role"), {"a": 1}),
    (("cells", 1, "counters", "applied"), "unwritable: integer of 14286 bits is too long to write"),
    (("cells", 1, "counters", "errors"), [1]), (("cells", 1, "store", "records"), "many"),
    (("cells", 0, "intent", "web"), "three"), (("cells", 0, "capacity", "web"), 4),
    (("cells", 0, "capacity", "web", "max"), None), (("cells", 0, "capacity"), {"web": {"held": 1}}),
])
def test_status_shows_every_answer_whatever_a_field_past_the_checked_ones_holds(
        where: tuple[Any, ...], value: Any) -> None:
    """One answer with a member named 5, a role that is a number or a counter that is text
    (another version, a forged reply, a value its node could not write) ended `cellframe
    status` in a traceback, for the whole cluster."""
    membership = {"name": "web-01-membership", "state": "running", "counters": {}, "healing": {},
                  "members": [{"name": "web-02", "status": "alive", "silence": 0.5, "role": "web"}],
                  "intent": {"web": 2}, "capacity": {"web": {"held": 2, "min": 2, "max": 4, "want": 2}}}
    tally = {"name": "web-01", "state": "counting", "counters": {"applied": 3, "errors": 0},
             "store": {"records": 5, "partitions": 2}}
    status = {"node": "web-01", "role": "web", "counters": {}, "cells": [membership, tally]}
    target: Any = status
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    text = render_text(status_view([status]))
    assert "cellframe cluster: 1 of " in text and "web-01" in text  # a member named 5 is left out
    assert ClusterPicture.from_statuses([status]).as_dict()["members"][0]["name"] == "web-01"


@pytest.fixture
def tally_node(amqp_url: str, tmp_path: Path) -> Iterator[ProcessCluster]:
    """One ``cellframe node`` process, tally-01, playing ``tally``."""
    cluster = ProcessCluster(amqp_url, tmp_path)
    try:
        cluster.start(["tally-01"], "--role", "tally")
        yield cluster
    finally:
        cluster.close()


def send_to(cluster: ProcessCluster, target: str, expr: str) -> Any:
    return invoke("send", target, expr, "--wait", "15", "--amqp", cluster.url, "--exchange",
                  cluster.exchange, "--queue-prefix", cluster.prefix, "--secret-file",
                  str(cluster.secret_file))


@pytest.mark.amqp
def test_an_operators_mistake_is_one_line_on_the_node_and_a_bug_keeps_its_traceback(
        tally_node: ProcessCluster) -> None:
    node = tally_node.nodes["tally-01"]
    result = send_to(tally_node, "node:tally-01", '(differentiate "no-such-role")')
    assert result.exit_code == 3, result.output
    assert ('action failed: ConfigError: no cells are registered for role \'no-such-role\''
            in result.stdout), result.stdout
    wait_for(lambda: "no-such-role" in node.text(), 30, what="the failure in the node's log",
             show=node.text)
    lines = [line for line in node.text().splitlines() if "no-such-role" in line]
    assert len(lines) == 1, lines
    assert (" ERROR cellframe.cell.cell: tally-01-daemon: action failed on message " in lines[0]
            and ": ConfigError: no cells are registered for role 'no-such-role'" in lines[0])
    # The same node still logs the traceback of a bug: an action's KeyError.
    result = send_to(tally_node, "cell:tally-01", '(look-up "nowhere")')
    assert result.exit_code == 3 and "action failed: KeyError: 'nowhere'" in result.stdout
    wait_for(lambda: "Traceback" in node.text(), 30, what="the KeyError's traceback",
             show=node.text)
    text = node.text()
    assert "tally-01: action failed on message " in text and "in look_up" in text
    assert text.count("Traceback") == 1 and "no-such-role" not in text.split("Traceback")[1]


def test_metrics_carry_the_standard_process_and_python_collectors() -> None:
    from cellframe import MemoryBroker, Node
    from cellframe.node.metrics import serve_metrics

    node = Node("m1", transport=MemoryBroker().connect())
    exporter = serve_metrics(node, 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        exporter.shutdown()
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info",
                 "python_gc_collections_total"):
        assert f"\n{name}" in text, name


@pytest.mark.parametrize(("incomplete", "expected"), [
    ("", ["all", "node:", "role:", "each:", "cell:"]),
    ("node:w", ["node:web-01", "node:web-02", "node:web-03"]),
    ("r", ["role:logsump", "role:proxy", "role:shard", "role:web"]),
    ("each:s", ["each:shard"]),
    ("cell:spare", ["cell:spare-01", "cell:spare-02"]),
])
def test_shell_completion_of_send_targets_comes_from_the_zone(
        incomplete: str, expected: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from click.shell_completion import BashComplete

    from cellframe.cli.main import main

    monkeypatch.setenv("CELLFRAME_ZONE", str(ZONE))
    complete = BashComplete(main, {}, "cellframe", "_CELLFRAME_COMPLETE")
    assert [c.value for c in complete.get_completions(["send"], incomplete)] == expected


@pytest.mark.amqp
def test_dead_letters_shows_a_no_op_with_its_reason_and_take_removes_it(
        signed_nodes, amqp_names) -> None:
    options = signed_nodes["options"]
    where = ["--amqp", amqp_names.url, "--exchange", amqp_names.exchange, "--idle", "0.5"]
    assert invoke("send", "node:op-a", "(diagnostic true)", *options).exit_code == 0
    wait_for(lambda: signed_nodes["nodes"][0].diagnostic, 30, what="op-a in diagnostic mode")
    assert invoke("send", "node:op-a", '(set-wieght "web-01" 5)', *options).exit_code == 0
    seen: list[str] = []

    def letter_shown() -> bool:
        seen[:] = [invoke("dead-letters", *where).stdout]
        return "unknown verb set-wieght" in seen[0]

    wait_for(letter_shown, 15, what="the no-op among the dead letters", show=lambda: seen)
    assert '(set-wieght "web-01" 5)' in seen[0]
    taken = invoke("dead-letters", "--take", *where)
    assert "unknown verb set-wieght" in taken.stdout and "(removed)" in taken.stderr
    left = invoke("dead-letters", *where)
    assert "set-wieght" not in left.stdout and left.stderr.startswith("0 dead letters")


@pytest.mark.amqp
def test_dead_letters_whose_send_time_no_calendar_holds_are_shown_and_taken(amqp_names) -> None:
    """A send time is what the sender wrote (x-cf-ts): nan or 1e300 made `dead-letters` end in
    a traceback, after --take had already removed the letters it was showing."""
    odd = [float("nan"), float("inf"), 1e300, -1e300, 2.0**62]
    with amqp_names.connect() as transport:
        for index, sent in enumerate(odd):
            transport.dead_letter(Envelope(f"(odd {index})".encode(), timestamp=sent), "why")
    where = ["--amqp", amqp_names.url, "--exchange", amqp_names.exchange, "--idle", "0.5"]
    shown = invoke("dead-letters", "--json", *where)
    assert shown.exit_code == 0, shown.output
    assert [json.loads(line, parse_constant=_refuse)["sent_at"]
            for line in shown.stdout.splitlines()] == [None] * len(odd)
    taken = invoke("dead-letters", "--take", *where)
    assert taken.exit_code == 0, taken.output
    assert [line.split(" ", 1)[0] for line in taken.stdout.splitlines()[::2]] == ["??:??:??"] * len(odd)
    assert all(f"(odd {index})" in taken.stdout for index in range(len(odd)))
    assert f"{len(odd)} dead letters (removed)" in taken.stderr


def _refuse(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


def test_a_node_that_others_hear_but_that_did_not_answer_is_silent_and_one_that_left_is_left() -> None:
    view = {"name": "web-01-membership", "state": "running", "counters": {}, "healing": {},
            "members": [{"name": "web-01", "role": "web", "status": "alive", "silence": 0.0},
                        {"name": "web-02", "role": "web", "status": "alive", "silence": 0.2},
                        {"name": "web-03", "role": "web", "status": "left", "silence": 9.0},
                        {"name": "web-04", "role": "web", "status": "suspect", "silence": 0.4}]}
    picture = ClusterPicture.from_statuses(
        [{"node": "web-01", "role": "web", "counters": {}, "cells": [view]}])
    assert [(m.name, m.health, m.live) for m in picture.members] == [
        ("web-01", "alive", True), ("web-02", "silent", True), ("web-03", "left", False),
        ("web-04", "suspect", True)]
    assert not picture.intent_known and picture.next_steps == ()
