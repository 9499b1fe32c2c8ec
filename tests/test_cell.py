"""A Cell applies messages through its state machine, and nothing a message says can hurt it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from cellframe import Keyword, Symbol
from cellframe.cell.cell import Cell
from cellframe.cell.outbox import RecordingOutbox
from cellframe.cell.statemachine import transition
from cellframe.errors import CellframeError
from cellframe.language.reader import read
from tests.cell_support import Lamp, message, snapshot, start_lamp


@pytest.fixture
def lamp():
    ref, outbox = start_lamp()
    yield ref, outbox
    ref.stop()


@pytest.fixture
def diagnostic_lamp():
    ref, outbox = start_lamp(diagnostic=True)
    yield ref, outbox
    ref.stop()


def test_message_with_a_transition_moves_the_cell_and_runs_its_action(lamp) -> None:
    ref, _ = lamp
    ref.tell(message("(switch-on 7)"))
    after = snapshot(ref)
    assert after["state"] == "on"
    assert after["brightness"] == 7
    assert after["counters"]["applied"] == 1


def test_keyword_arguments_reach_the_action_with_dashes_as_underscores(lamp) -> None:
    ref, _ = lamp
    ref.tell(message("(switch-on 7)"))
    ref.tell(message('(dim 2 :reason "load")'))
    assert snapshot(ref)["brightness"] == 5
    assert ref.proxy().reasons.get(timeout=5) == ["load"]


def test_message_with_no_transition_from_the_current_state_is_a_counted_no_op(lamp) -> None:
    ref, outbox = lamp
    ref.tell(message("(switch-off)"))  # the lamp is already off: nothing to do
    after = snapshot(ref)
    assert after["state"] == "off"
    assert after["counters"]["ignored"] == 1
    assert after["counters"]["errors"] == 0
    assert outbox.dead_letters == []  # not in diagnostic mode
    ref.tell(message("(switch-on)"))
    assert snapshot(ref)["state"] == "on"  # and the cell kept running


def test_unknown_verb_is_a_counted_no_op(lamp) -> None:
    ref, _ = lamp
    ref.tell(message("(teleport 3)"))
    after = snapshot(ref)
    assert after["state"] == "off"
    assert after["counters"]["ignored"] == 1


def test_refused_guard_is_a_no_op_that_keeps_the_state(lamp) -> None:
    ref, _ = lamp
    ref.tell(message("(switch-on 1)"))
    ref.tell(message("(dim 5)"))  # would go below zero: the guard refuses
    after = snapshot(ref)
    assert (after["state"], after["brightness"]) == ("on", 1)
    assert after["counters"]["ignored"] == 1


def test_diagnostic_mode_reflects_errant_messages_to_the_dead_letters_with_the_reason(diagnostic_lamp) -> None:
    ref, outbox = diagnostic_lamp
    ref.tell(message("(switch-off)", id="errant-1"))
    ref.tell(message("(teleport)", id="errant-2"))
    after = snapshot(ref)
    assert after["counters"]["dead_lettered"] == 2
    reasons = {d.message.id: d.reason for d in outbox.dead_letters}
    assert "no transition for 'switch-off' from state 'off'" in reasons["errant-1"]
    assert "teleport" in reasons["errant-2"]


def test_exception_in_an_action_leaves_the_state_and_keeps_the_cell_alive(diagnostic_lamp) -> None:
    ref, outbox = diagnostic_lamp
    ref.tell(message("(switch-on 3)"))
    ref.tell(message("(flicker)", id="buggy", reply_to="reply.operator"))
    after = snapshot(ref)
    assert after["state"] == "on"  # flicker's target was "off": not taken
    assert after["counters"]["errors"] == 1
    assert [d.message.id for d in outbox.dead_letters] == ["buggy"]
    assert "the filament snapped" in outbox.dead_letters[0].reason
    (error,) = [s for s in outbox.sent if s.target == "reply.operator"]
    assert error.expr[0] == Symbol("error")
    assert "the filament snapped" in error.expr[error.expr.index(Keyword("reason")) + 1]
    ref.tell(message("(switch-off)"))
    assert snapshot(ref)["state"] == "off"


@pytest.mark.parametrize(
    "text",
    ["(switch-on 1 2 3)", "(dim)", "(switch-on :colour 3)", "(dim 1 :reason)"],
)
def test_wrong_arity_is_refused_or_ignored_and_leaves_the_cell_unchanged(lamp, text) -> None:
    ref, _ = lamp
    ref.tell(message(text))
    after = snapshot(ref)
    assert (after["state"], after["brightness"]) == ("off", 0)
    assert after["counters"]["refused"] + after["counters"]["ignored"] == 1
    assert after["counters"]["applied"] == after["counters"]["errors"] == 0


def test_duplicate_delivery_is_not_applied_twice(lamp) -> None:
    ref, _ = lamp
    ref.tell(message("(switch-on 4)"))
    twice = message('(dim 1 :reason "once")', id="same-id")
    ref.tell(twice)
    ref.tell(twice)
    after = snapshot(ref)
    assert after["brightness"] == 3
    assert after["counters"]["duplicates"] == 1


def test_dedup_memory_is_bounded_and_forgets_the_oldest_ids() -> None:
    ref, _ = start_lamp(dedup_capacity=2)
    try:
        ref.tell(message("(switch-on 9)", id="a"))
        ref.tell(message("(dim 1)", id="b"))
        ref.tell(message("(dim 1)", id="c"))
        ref.tell(message("(dim 1)", id="b"))  # still remembered: dropped
        ref.tell(message("(switch-on 1)", id="a"))  # forgotten, but no transition from "on": no-op
        after = snapshot(ref)
        assert after["brightness"] == 7
        assert after["counters"]["duplicates"] == 1
        assert ref.proxy().cell_dedup.get(timeout=5).capacity == 2
    finally:
        ref.stop()


def test_repeating_a_request_whose_effect_holds_is_a_no_op(lamp) -> None:
    ref, _ = lamp
    ref.tell(message("(switch-on 2)"))
    ref.tell(message("(switch-on 2)"))  # a new id, same request: already on
    after = snapshot(ref)
    assert (after["state"], after["brightness"]) == ("on", 2)
    assert after["counters"]["applied"] == 1


def test_cell_replies_only_by_sending_to_the_reply_address(lamp) -> None:
    ref, outbox = lamp
    ref.tell(message("(report)", reply_to="reply.repl-1"))
    ref.tell(message("(report)"))  # no reply address: nobody to call back
    snapshot(ref)
    assert [(s.target, s.expr) for s in outbox.sent] == [
        ("reply.repl-1", [Symbol("lamp-state"), "off", 0])
    ]


def test_special_forms_compose_verbs_in_one_message(lamp) -> None:
    ref, _ = lamp
    ref.tell(message("(do (switch-on 10) (let ((x 3)) (dim (+ x 1))))"))
    after = snapshot(ref)
    assert (after["state"], after["brightness"]) == ("on", 6)


def test_message_whose_evaluation_fails_midway_restores_the_state(lamp) -> None:
    ref, _ = lamp
    ref.tell(message("(do (switch-on 10) (flicker))"))
    after = snapshot(ref)
    assert after["state"] == "off"
    assert after["counters"]["errors"] == 1


def test_cell_without_an_outbox_refuses_to_send_with_a_clear_error() -> None:
    cell_ref = Lamp.start("alone")
    try:
        with pytest.raises(CellframeError, match="no outbox"):
            cell_ref.proxy().cell_send("all", [Symbol("hi")]).get(timeout=5)
    finally:
        cell_ref.stop()


def test_required_keyword_argument_missing_is_refused_on_the_fast_path() -> None:
    from cellframe import Cell, transition
    from cellframe.cell.outbox import RecordingOutbox

    class Strict(Cell):
        @transition("tag")
        def tag(self, *, label: str) -> None:
            self.label = label

    ref = Strict.start("strict", outbox=RecordingOutbox())
    try:
        ref.tell(message("(tag)"))
        ref.tell(message('(tag :label "x")'))
        counters = ref.proxy().cell_counters.get(timeout=5)
        assert (counters.refused, counters.errors) == (1, 0)
        assert ref.proxy().label.get(timeout=5) == "x"
    finally:
        ref.stop()


def test_a_settings_change_reaches_a_running_cell_once_and_keeps_its_state() -> None:
    import threading

    from cellframe.cell.cell import Cell, SettingsChanged

    heard: list[tuple[dict, dict]] = []
    changed = threading.Event()

    class Tuned(Cell):
        def on_settings_changed(self, old: dict[str, str]) -> None:
            heard.append((old, dict(self.cell_settings)))
            changed.set()

    ref = Tuned.start("tuned", settings={"weight": "1"})
    try:
        ref.tell(SettingsChanged({"weight": "1"}))  # the same settings: nothing to hear
        ref.tell(SettingsChanged({"weight": "5", "rack": "r2"}))
        assert changed.wait(5)
        assert ref.proxy().cell_settings.get() == {"weight": "5", "rack": "r2"}
        assert heard == [({"weight": "1"}, {"weight": "5", "rack": "r2"})]
    finally:
        ref.stop()


class Fragile(Cell):
    """Actions and a guard that fail in the ways a cell must report."""

    @transition("boom")
    def boom(self, n: int) -> None:
        raise KeyError(f"no entry {n}")

    @transition("parse")
    def parse(self, text: str) -> None:
        read(text)  # a LanguageError raised by the action itself, not by its input

    @transition("guarded", guard="explodes")
    def guarded(self, n: int) -> None:
        pass

    def explodes(self, n: int) -> bool:
        raise ValueError("the guard's own bug")


@pytest.fixture
def fragile() -> Iterator[tuple[Any, RecordingOutbox]]:
    outbox = RecordingOutbox()
    ref = Fragile.start("fragile", outbox=outbox)
    yield ref, outbox
    ref.stop()


def reasons_sent(outbox: RecordingOutbox, ids: list[str]) -> dict[str, str]:
    found = {s.expr[s.expr.index(Keyword("id")) + 1]: s.expr[s.expr.index(Keyword("reason")) + 1]
             for s in outbox.sent if s.expr[0] == Symbol("error")}
    return {i: found[i] for i in ids}


def failures_logged(caplog: pytest.LogCaptureFixture) -> list[BaseException]:
    return [r.exc_info[1] for r in caplog.records
            if r.name == "cellframe.cell.cell" and r.exc_info and r.exc_info[1] is not None]


@pytest.mark.parametrize(("literal", "evaluated", "bug"), [
    ("(boom 1)", "(boom (+ 1 0))", True),                     # a KeyError: a bug
    ('(parse "(")', '(parse (concat "(" ""))', False),         # a ReadError: an ordinary error
    ("(guarded 1)", "(guarded (+ 1 0))", True),               # the guard's ValueError
])
def test_an_action_that_raises_is_reported_alike_however_the_message_is_written(
        fragile, caplog, literal: str, evaluated: str, bug: bool) -> None:
    ref, outbox = fragile
    caplog.set_level(logging.ERROR, logger="cellframe.cell.cell")
    ref.tell(message(literal, id="literal", reply_to="reply.op"))
    ref.tell(message(evaluated, id="evaluated", reply_to="reply.op"))
    counters = ref.proxy().cell_counters.get(timeout=5)
    assert (counters.errors, counters.refused, counters.applied) == (2, 0, 0)
    reasons = reasons_sent(outbox, ["literal", "evaluated"])
    assert reasons["literal"] == reasons["evaluated"]
    assert reasons["literal"].startswith("action failed: ")
    lines = [r for r in caplog.records if "action failed on" in r.getMessage()]
    assert len(lines) == 2 and lines[0].getMessage().split(": ", 2)[2] == reasons[
        "literal"].removeprefix("action failed: ")  # the log line says what the sender hears
    logged = failures_logged(caplog)
    if bug:  # the traceback is logged, to find the bug
        assert len(logged) == 2 and type(logged[0]) is type(logged[1])
        assert all(error.__traceback__ is not None for error in logged)
    else:  # an ordinary error of cellframe's tree says all in its one line
        assert logged == []


def test_a_sender_repeating_a_failing_message_cannot_flood_the_log(fragile, caplog) -> None:
    """Every failure is counted and answered, but only a few a minute are logged: anyone
    holding a key could otherwise fill the node's log with tracebacks, one message each."""
    ref, outbox = fragile
    caplog.set_level(logging.ERROR, logger="cellframe.cell.cell")
    for i in range(200):
        ref.tell(message("(boom 1)", id=f"m{i}", reply_to="reply.op"))
    counters = ref.proxy().cell_counters.get(timeout=5)
    assert counters.errors == 200
    assert len(reasons_sent(outbox, [f"m{i}" for i in range(200)])) == 200
    lines = [r.getMessage() for r in caplog.records if "action failed on" in r.getMessage()]
    assert len(lines) == 5, lines
    assert lines[-1].endswith("(more like this in the next 60 s are counted, not logged)")
    assert len(failures_logged(caplog)) == 5  # each logged one still has its traceback


class Keyed(Cell):
    """A verb with positional and keyword arguments, recording what each call was given."""

    @transition("mark")
    def mark(self, n: int, *, by_node: Any = None, weight: int = 1) -> None:
        self.marks = [*getattr(self, "marks", []), (n, by_node, weight)]


@pytest.mark.parametrize(("literal", "evaluated"), [
    ('(mark 1 :by-node "a" :weight 2)', '(mark (+ 1 0) :by-node "a" :weight (+ 1 1))'),
    ('(mark :weight 2 1)', '(mark :weight (+ 1 1) (+ 1 0))'),   # keywords first
    ('(mark 1 :by-node :x)', '(mark (+ 1 0) :by-node :x)'),     # a keyword as the value
    ("(mark 1 :colour 2)", "(mark (+ 1 0) :colour 2)"),         # no such keyword
    ("(mark 1 :weight 1 :weight 2)", "(mark (+ 1 0) :weight 1 :weight 2)"),  # given twice
    ("(mark 1 :weight)", "(mark (+ 1 0) :weight)"),             # a keyword with no value
    ("(mark :weight 2)", "(mark :weight (+ 1 1))"),             # the positional missing
    ("(mark 1 2 :weight 2)", "(mark (+ 1 0) 2 :weight 2)"),     # one positional too many
    ("(mark :n 1 :weight 2)", "(mark :n (+ 1 0) :weight 2)"),   # the positional by name
    ("(mark 1 :n 1)", "(mark (+ 1 0) :n 1)"),                   # by position and by name
])
def test_a_call_with_keywords_has_one_outcome_however_its_arguments_are_written(
        literal: str, evaluated: str) -> None:
    """Literal arguments skip the evaluator (the hot path a heartbeat takes); a computed one
    goes through it. Either way the cell ends the same, and a refusal gives the same reason."""
    outcomes = []
    for text in (literal, evaluated):
        outbox = RecordingOutbox()
        ref = Keyed.start("keyed", outbox=outbox)
        try:
            ref.tell(message(text, id="m", reply_to="reply.op"))
            cell = ref.proxy()
            counters = cell.cell_counters.get(timeout=5)
            marks = cell.marks.get(timeout=5) if counters.applied else None
            reasons = [s.expr[s.expr.index(Keyword("reason")) + 1].replace(text, "FORM")
                       for s in outbox.sent]
        finally:
            ref.stop()
        outcomes.append((counters.applied, counters.refused, counters.errors, marks, reasons))
    assert outcomes[0] == outcomes[1]
    applied, refused, errors, _, reasons = outcomes[0]
    assert (applied, refused, errors) in {(1, 0, 0), (0, 1, 0)}
    assert all(reason.startswith("bad input: ") for reason in reasons)


@pytest.mark.parametrize("text", [
    "(boom 1 2)",          # wrong arity, on the fast path
    "(boom (+ 1 2) 3)",    # wrong arity, under the evaluator
    "(boom nowhere)",      # an unbound symbol
    '(boom (+ 1 "a"))',    # a built-in refuses its arguments
])
def test_bad_input_is_refused_and_told_apart_from_a_failed_action(fragile, caplog, text) -> None:
    ref, outbox = fragile
    caplog.set_level(logging.ERROR, logger="cellframe.cell.cell")
    ref.tell(message(text, id="bad", reply_to="reply.op"))
    counters = ref.proxy().cell_counters.get(timeout=5)
    assert (counters.refused, counters.errors, counters.applied) == (1, 0, 0)
    assert reasons_sent(outbox, ["bad"])["bad"].startswith("bad input: ")
    assert failures_logged(caplog) == []  # bad input is the sender's fault: no traceback


def test_a_cell_started_alone_has_a_standalone_host_with_honest_defaults() -> None:
    from cellframe.cell.host import StandaloneHost
    from cellframe.errors import ClusterError

    ref = Lamp.start("alone")
    try:
        host = ref.proxy().cell_host.get(timeout=5)
        assert isinstance(host, StandaloneHost)
        assert (host.name, host.incarnation, host.role, host.resolver) == ("alone", 0, None, None)
        assert host.cells() == {} and host.status()["cells"] == []
        host.emit("anything", at=1)  # no node to publish it: nothing happens, nothing raises
        assert host.renew_incarnation(5) == 6 and host.incarnation == 6
        with pytest.raises(ClusterError, match="runs alone"):
            host.differentiate("web")
    finally:
        ref.stop()


def test_a_cell_given_both_a_host_and_an_outbox_is_refused() -> None:
    from cellframe.cell.host import StandaloneHost
    from cellframe.errors import ConfigError

    with pytest.raises(ConfigError, match="not both"):
        Lamp("lamp", host=StandaloneHost("lamp"), outbox=RecordingOutbox())
