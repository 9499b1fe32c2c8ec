"""The REPL driven as a person would: in a real pseudo-terminal, against a live local cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import pexpect
import pytest

#: The prompt names the default target: ``cellframe all> ``, ``cellframe node:web-01> ``.
PROMPT = r"cellframe [a-z]+(:[A-Za-z0-9_-]+)?>"


@pytest.fixture
def repl(tmp_path: Path):
    history = tmp_path / "history"
    child = pexpect.spawn(
        sys.executable, ["-m", "cellframe", "repl", "--history", str(history)],
        encoding="utf-8", timeout=20, dimensions=(40, 200),
        env={"PYTHONUNBUFFERED": "1", "TERM": "xterm", "PATH": "/usr/bin:/bin",
             "PROMPT_TOOLKIT_NO_CPR": "1"},
    )
    child.expect("local cluster on the embedded transport")
    child.expect(PROMPT)
    yield child, history
    if child.isalive():
        quit_with_ctrl_d(child)


def quit_with_ctrl_d(child: pexpect.spawn) -> None:
    """Press Ctrl-D at the prompt and wait for the REPL (and its local cluster) to exit.

    Between two prompts the terminal is briefly in cooked mode, where the line discipline swallows a
    Ctrl-D as end-of-file; a reply printed in that window reaches the test before the next prompt is
    in raw mode. So wait until the prompt is drawn again after the last output, and press Ctrl-D a
    second time, as a person would, if the first was swallowed.
    """
    child.expect(PROMPT)
    child.sendcontrol("d")
    if child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=5) == 1:
        child.sendcontrol("d")
        child.expect(pexpect.EOF, timeout=60)  # the local cluster stops, shards and all


def test_repl_sends_to_a_node_and_prints_its_call_back(repl) -> None:
    child, _ = repl
    child.sendline("node:proxy-01 (ping)")
    child.expect(r'\(pong :node "proxy-01"')


def test_repl_waits_for_balanced_parentheses_before_sending(repl) -> None:
    child, _ = repl
    child.send("node:web-01 (do\r")  # Enter inside an open form: a new line, nothing sent
    child.send("  (ping))\r")
    child.expect(r'\(pong :node "web-01"')


def test_repl_shows_bad_input_with_its_position_and_keeps_going(repl) -> None:
    child, _ = repl
    child.sendline("node:web-01 (ping))")
    child.expect("error: ")
    child.expect(r"\^")
    child.expect("line 1, column")
    child.sendline("node:web-03 (ping)")
    child.expect(r'\(pong :node "web-03"')


def test_repl_reads_hy_syntax_after_the_hy_command(repl) -> None:
    child, _ = repl
    child.sendline(",hy")
    child.expect("reading expressions as hy")
    child.sendline("node:web-02 (ping)")
    child.expect(r'\(pong :node "web-02"')


def test_repl_keeps_history_across_sessions(repl) -> None:
    child, history = repl
    child.sendline("node:proxy-01 (ping)")
    child.expect(r"\(pong")
    quit_with_ctrl_d(child)
    assert "node:proxy-01 (ping)" in history.read_text()


def test_help_prints_the_commands(repl) -> None:
    child, _ = repl
    child.sendline(",help")
    child.expect(r",target TARGET\s+change the default target")
    child.expect(r",status\s+ask every node")


def test_the_prompt_shows_the_target_a_bare_expression_goes_to(repl) -> None:
    child, _ = repl
    child.sendline("node:web-02 (ping)")
    child.expect(r'\(pong :node "web-02"')
    child.expect("cellframe node:web-02>")
    child.sendline("(ping)")
    child.expect(r'\(pong :node "web-02"')


def test_an_unfinished_expression_shows_what_is_open_and_ctrl_c_abandons_it(repl) -> None:
    child, _ = repl
    child.send("node:web-01 (do (ping\r")
    child.expect(r"\.\.\.2 open")
    child.sendcontrol("c")
    child.expect(r"\(abandoned\)")
    child.expect(PROMPT)
    child.sendline("node:web-03 (ping)")  # sent alone, not joined to the abandoned text
    child.expect(r'\(pong :node "web-03"')


def test_ctrl_d_abandons_an_unfinished_expression_and_does_not_quit(repl) -> None:
    child, _ = repl
    child.send("node:web-01 (do\r")
    child.expect(r"\.\.\.1 open")
    child.sendcontrol("d")
    child.expect(r"\(abandoned\)")
    child.sendline("node:web-01 (ping)")
    child.expect(r'\(pong :node "web-01"')
    assert child.isalive()


def test_status_prints_the_status_table(repl) -> None:
    child, _ = repl
    child.sendline(",status")
    child.expect(r"cellframe cluster: \d+ of \d+ nodes answered")
    child.expect(r"web-01\s+│ web\s+│ web-01 \(serving\)")
    assert ":node '" not in child.before


def test_a_nesting_error_does_not_echo_a_long_line_back(repl) -> None:
    child, _ = repl
    child.sendline("node:web-01 " + "(" * 5000 + ")" * 5000)
    child.expect("error: ")
    child.expect(r"at line 1, column")
    assert len(child.before) < 1000, len(child.before)
