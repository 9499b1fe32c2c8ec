"""A message is applied all or nothing: a failure anywhere in it leaves every field, the state
and the outbox as they were."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe import Cell, Message
from cellframe.cell.outbox import RecordingOutbox
from cellframe.cell.statemachine import transition
from cellframe.language.reader import read


class Tally(Cell):
    """A counter with a list of what it added; ``add`` of a non-number fails halfway."""

    states = ("counting", "closed")
    initial = "counting"
    fields = ("seen",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.n = 0
        self.seen: list[Any] = []

    @transition("add", source="counting")
    def add(self, amount: Any) -> None:
        self.seen.append(amount)  # in place, before the step that may fail
        self.cell_send("log", read("(added)"))
        self.n = self.n + amount

    @transition("close", source="counting", target="closed")
    def close(self) -> None:
        self.closed_by = "close"

    @transition("reopen", source="closed", target="counting")
    def reopen(self) -> None:
        del self.closed_by


def _apply(cell: Tally, text: str, number: int) -> None:
    cell.cell_handle(Message(read(text), id=f"m{number}"))


def _fields(cell: Tally) -> tuple[Any, ...]:
    return (cell.cell_state, cell.n, list(cell.seen), getattr(cell, "closed_by", None))


def test_failed_compound_expression_leaves_every_field_unchanged() -> None:
    cell = Tally("tally", outbox=RecordingOutbox())
    _apply(cell, "(add 1)", 0)
    _apply(cell, '(do (add 1) (add "x"))', 1)
    assert (cell.n, cell.seen) == (1, [1])
    assert cell.cell_counters.errors == 1


def test_messages_sent_by_a_failed_action_are_not_sent() -> None:
    outbox = RecordingOutbox()
    cell = Tally("tally", outbox=outbox)
    _apply(cell, '(do (add 1) (add "x"))', 0)
    assert [sent.target for sent in outbox.sent] == []
    _apply(cell, "(do (add 1) (add 2))", 1)
    assert [sent.target for sent in outbox.sent] == ["log", "log"]


_GOOD = st.sampled_from(["(add 1)", "(add 5)", "(close)", "(reopen)", "(do (add 2) (add 3))",
                         "(do (close) (reopen))"])
_BAD = st.sampled_from(['(add "x")', '(do (add 1) (add "x"))', '(do (close) (add 1))',
                        '(do (add 7) (close) (reopen) (add nil))', "(do (add 1) (nosuch))"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), _GOOD, _BAD), max_size=30))
def test_a_failing_message_anywhere_in_a_sequence_changes_nothing(steps: list[Any]) -> None:
    outbox = RecordingOutbox()
    cell = Tally("tally", outbox=outbox)
    for number, (good, good_text, bad_text) in enumerate(steps):
        before, sent = _fields(cell), len(outbox.sent)
        _apply(cell, good_text if good else bad_text, number)
        if not good:
            assert _fields(cell) == before, bad_text
            assert len(outbox.sent) == sent, bad_text
