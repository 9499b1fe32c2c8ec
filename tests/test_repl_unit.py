"""The REPL's line handling: targets, syntaxes, balanced input, and errors that never kill it."""

from __future__ import annotations

from cellframe import Client, MemoryBroker, Node, RoleRegistry
from cellframe.cli.repl import Repl, balanced, parse_line
from cellframe.testing import wait_for
from tests.node_support import Tally, replies_matching


def test_balanced_ignores_parentheses_inside_strings_and_comments() -> None:
    assert balanced('(say "(")')
    assert not balanced("(do (ping)")
    assert balanced("(ping) ; (")
    assert not balanced('(say "unterminated)')


def test_a_line_names_its_target_or_uses_the_default() -> None:
    assert parse_line("node:web-01 (status)", "all") == ("node:web-01", "(status)")
    assert parse_line("(ping)", "role:web") == ("role:web", "(ping)")
    assert parse_line("all\n(ping)", "node:x") == ("all", "(ping)")


def make_repl():
    broker = MemoryBroker()
    node = Node("r1", transport=broker.connect(), role="tally",
                registry=RoleRegistry({"tally": [Tally]})).start()
    printed: list[str] = []
    repl = Repl(Client(broker.connect()), print_fn=printed.append)
    repl.client.on_reply = repl.on_reply
    return node, repl, printed


def test_repl_sends_to_the_target_and_prints_call_backs() -> None:
    node, repl, printed = make_repl()
    try:
        assert repl.handle("cell:r1 (add 2)")
        assert repl.handle("(total)")  # the default target is now cell:r1
        replies_matching(repl.client, "total", 1)
        # Each line sent is numbered, and the call-back names the line it answers.
        assert printed[:2] == ["-> #1 cell:r1", "-> #2 cell:r1"]
        wait_for(lambda: '<- #2 r1: (total 2 "r1")' in printed, 5, what="the numbered answer",
                 show=lambda: printed)
    finally:
        node.stop()


def test_bad_input_is_shown_with_its_position_and_the_repl_goes_on() -> None:
    node, repl, printed = make_repl()
    try:
        assert repl.handle('cell:r1 (add "unterminated')
        assert any("line 1" in line and "^" in line for line in printed), printed
        assert repl.handle("nowhere:x (ping)")  # not a target: read as an expression, fails
        assert repl.handle(",target bogus:thing")
        assert any("error" in line for line in printed[-1:])
        assert repl.handle(",hy")
        assert repl.handle("cell:r1 (add 40)")
        wait_for(lambda: node.cells()["r1"].total == 40, 5)
        assert not repl.handle(",quit")
    finally:
        node.stop()
