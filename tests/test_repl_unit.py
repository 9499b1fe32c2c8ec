"""The REPL's line handling: targets, syntaxes, balanced input, and errors that never kill it."""

from __future__ import annotations

from cellframe import Client, MemoryBroker, Node, RoleRegistry
from cellframe.cli.repl import HELP, Repl, _Completer, balanced, parse_line
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
        wait_for(lambda: '<- #2 r1: (total 2 "r1")' in printed, 20, what="the numbered answer",
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
        wait_for(lambda: node.cells()["r1"].total == 40, 20)
        assert not repl.handle(",quit")
    finally:
        node.stop()


def test_help_prints_the_commands_not_a_heading() -> None:
    node, repl, printed = make_repl()
    try:
        repl.handle(",help")
        assert printed[-1] == HELP and ",target TARGET" in HELP and "Syntax" not in HELP
    finally:
        node.stop()


def test_an_error_in_a_long_line_shows_only_the_stretch_around_the_column() -> None:
    node, repl, printed = make_repl()
    try:
        repl.handle("cell:r1 " + "(" * 5000 + ")" * 5001)
        shown = printed[-1].splitlines()
        assert len(printed[-1]) < 400, printed[-1][:400]
        assert shown[0] == "error: nesting deeper than 128" and shown[3].endswith("column 129")
        assert shown[1].startswith("  ...(") and shown[1].endswith("(...")
        assert shown[2].strip() == "^"
    finally:
        node.stop()


def completions(repl: Repl, text: str) -> list[str]:
    from prompt_toolkit.document import Document

    completer = _Completer(repl.state)
    return [c.text for c in completer.get_completions(Document(text), None)]


def test_completion_offers_the_live_clusters_targets_and_verbs() -> None:
    node, repl, printed = make_repl()
    try:
        repl.client.send("all", "(status)")
        wait_for(lambda: "r1" in repl.state.nodes, 30, what="r1's status learned",
                 show=lambda: printed)
        assert completions(repl, "node:") == ["node:r1"]
        assert completions(repl, "cell:r") == ["cell:r1"]
        assert completions(repl, "role:t") == ["role:tally"]
        assert "add" in completions(repl, "cell:r1 (ad")
    finally:
        node.stop()


def test_the_prompt_names_the_default_target() -> None:
    node, repl, _ = make_repl()
    try:
        assert repl.prompt() == "cellframe all> "
        repl.handle("cell:r1 (add 1)")
        assert repl.prompt() == "cellframe cell:r1> "
    finally:
        node.stop()


def test_the_caret_stays_under_the_column_in_a_shortened_line() -> None:
    from cellframe.cli.repl import _around

    line = "x" * 500 + "!" + "y" * 500
    shown, caret = _around(line, 500)
    assert len(shown) < 80 and shown[caret] == "!"
    assert _around("short", 2) == ("short", 2)
