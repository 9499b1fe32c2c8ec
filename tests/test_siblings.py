"""The sibling check alone: a redelivered role message held until the role's other instances
answered, applied only when none of them applied it, and asked again, never guessed, while a
sibling that does not answer is still alive (``cellframe.node.siblings``)."""

from __future__ import annotations

import threading
from typing import Any

from cellframe.node.siblings import APPLIED, BUSY, NOT_APPLIED, SiblingCheck
from cellframe.testing import wait_for


class Recorder:
    """The questions sent and the decisions made."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []
        self.decisions: list[tuple[str, bool]] = []
        self.live = {"b", "c"}
        self.lock = threading.Lock()

    def ask(self, sibling: str, message_id: str) -> None:
        with self.lock:
            self.asked.append((sibling, message_id))

    def decided(self, message_id: str) -> Any:
        def decide(applied_elsewhere: bool) -> None:
            with self.lock:
                self.decisions.append((message_id, applied_elsewhere))
        return decide


def _check(recorder: Recorder, name: str = "a", **options: Any) -> SiblingCheck:
    return SiblingCheck(name, recorder.ask, lambda: set(recorder.live), **options)


def test_a_held_message_is_applied_once_every_sibling_answers_not_applied() -> None:
    recorder = Recorder()
    check = _check(recorder)
    check.hold("m1", ["b", "c"], recorder.decided("m1"))
    assert sorted(recorder.asked) == [("b", "m1"), ("c", "m1")]
    check.heard("b", "m1", NOT_APPLIED)
    assert recorder.decisions == []  # c has not answered yet
    check.heard("c", "m1", NOT_APPLIED)
    assert recorder.decisions == [("m1", False)]
    assert check.holding() == 0
    check.close()


def test_a_held_message_one_sibling_applied_is_a_duplicate() -> None:
    recorder = Recorder()
    check = _check(recorder)
    check.hold("m1", ["b", "c"], recorder.decided("m1"))
    check.heard("c", "m1", APPLIED)
    check.heard("b", "m1", NOT_APPLIED)  # late: decided already
    assert recorder.decisions == [("m1", True)]
    assert check.counts["duplicates"] == 1
    check.close()


def test_an_answer_from_a_node_not_asked_is_ignored() -> None:
    recorder = Recorder()
    check = _check(recorder)
    check.hold("m1", ["b"], recorder.decided("m1"))
    check.heard("z", "m1", APPLIED)
    check.heard("z", "m1", NOT_APPLIED)
    assert recorder.decisions == []
    check.close()


def test_a_sibling_membership_declares_gone_is_no_longer_waited_for() -> None:
    recorder = Recorder()
    check = _check(recorder)
    check.hold("m1", ["b", "c"], recorder.decided("m1"))
    check.heard("b", "m1", NOT_APPLIED)
    check.gone("c")
    assert recorder.decisions == [("m1", False)]
    check.close()


def test_a_silent_sibling_is_asked_again_while_alive_and_not_waited_for_once_gone() -> None:
    recorder = Recorder()
    check = _check(recorder, timeout=0.05, max_wait=0.2)
    check.hold("m1", ["b"], recorder.decided("m1"))
    wait_for(lambda: recorder.asked.count(("b", "m1")) >= 3, 20,
             what="the silent sibling asked again", show=lambda: recorder.asked)
    assert recorder.decisions == []  # never applied on a guess while b lives
    recorder.live.discard("b")  # membership now holds it down: the next retry applies
    wait_for(lambda: recorder.decisions == [("m1", False)], 20,
             what="the message applied once its silent sibling was gone",
             show=lambda: recorder.decisions)
    check.close()


def test_of_two_holders_of_one_message_only_the_first_by_name_says_busy() -> None:
    first, second = Recorder(), Recorder()
    a, b = _check(first, "a"), _check(second, "b")
    a.hold("m1", ["b"], first.decided("m1"))
    b.hold("m1", ["a"], second.decided("m1"))
    assert a.answer_for("m1", "b") == BUSY  # a goes first: b must wait for it
    assert b.answer_for("m1", "a") is None  # b's cells answer: they may have applied a copy
    assert a.answer_for("m2", "b") is None  # not held: the cells' journals answer
    a.close()
    b.close()


def test_a_message_being_handed_to_the_cells_answers_busy() -> None:
    recorder = Recorder()
    check = _check(recorder, "b")
    seen: list[str | None] = []

    def decided(applied_elsewhere: bool) -> None:  # runs while the message is handed on
        seen.append(check.answer_for("m1", "a"))

    check.hold("m1", ["c"], decided)
    check.heard("c", "m1", NOT_APPLIED)
    assert seen == [BUSY]  # the asker tries again, and then finds it in the cell's journal
    assert check.answer_for("m1", "a") is None
    check.close()


def test_a_second_copy_held_is_decided_a_duplicate_with_the_first() -> None:
    recorder = Recorder()
    check = _check(recorder)
    check.hold("m1", ["b"], recorder.decided("first"))
    check.hold("m1", ["b"], recorder.decided("second"))
    check.heard("b", "m1", NOT_APPLIED)
    assert recorder.decisions == [("first", False), ("second", True)]
    check.close()


def test_a_copy_stands_in_for_a_held_message_whose_delivery_went_back() -> None:
    """The first copy's delivery went back to the queue (its connection closed) and came
    back, redelivered, as the second copy: told "applied elsewhere" with the first, the
    second was acknowledged as a duplicate and the message applied nowhere."""
    recorder = Recorder()
    check = _check(recorder)

    def went_back(applied_elsewhere: bool) -> bool:
        recorder.decided("first")(applied_elsewhere)
        return False

    check.hold("m1", ["b"], went_back)
    check.hold("m1", ["b"], recorder.decided("second"))
    check.hold("m1", ["b"], recorder.decided("third"))
    check.heard("b", "m1", NOT_APPLIED)
    assert recorder.decisions == [("first", False), ("second", False), ("third", True)]
    check.close()


def test_without_stand_ins_copies_are_duplicates_even_if_the_first_went_back() -> None:
    recorder = Recorder()
    check = _check(recorder, stand_in=False)
    check.hold("m1", ["b"], lambda applied_elsewhere: False)
    check.hold("m1", ["b"], recorder.decided("second"))
    check.heard("b", "m1", NOT_APPLIED)
    assert recorder.decisions == [("second", True)]
    check.close()


def test_closing_returns_what_was_held_and_decides_nothing() -> None:
    recorder = Recorder()
    check = _check(recorder)
    check.hold("m1", ["b"], recorder.decided("m1"))
    assert check.close() == ["m1"]
    check.heard("b", "m1", NOT_APPLIED)
    assert recorder.decisions == []


def test_a_holder_that_lets_an_asker_go_first_waits_for_its_answer_again() -> None:
    """b held m1 and heard ``not-applied`` from a, before a held a copy of its own. Then a
    holds one and asks b: b lets a go first (a sorts first), so a applies it; b must not take
    a's old answer, and asks a again, which says ``applied``. Without that both applied it."""
    recorder = Recorder()
    recorder.live = {"a", "c"}
    b = _check(recorder, "b", timeout=0.08)
    b.hold("m1", ["a", "c"], recorder.decided("m1"))
    b.heard("a", "m1", NOT_APPLIED)  # a had no copy yet
    assert b.answer_for("m1", "a") is None  # a holds one now: a goes first
    b.heard("c", "m1", NOT_APPLIED)
    assert recorder.decisions == []  # still waiting for a
    wait_for(lambda: recorder.asked.count(("a", "m1")) == 2, 10, what="b to ask a again",
             show=lambda: recorder.asked)
    b.heard("a", "m1", APPLIED)
    assert recorder.decisions == [("m1", True)]
    b.close()


def test_a_check_that_gives_up_stops_waiting_for_a_silent_sibling_after_its_time() -> None:
    recorder = Recorder()
    check = _check(recorder, timeout=0.05, max_wait=0.05, give_up=0.3)
    check.hold("m1", ["b", "c"], recorder.decided("m1"))
    check.heard("c", "m1", NOT_APPLIED)
    wait_for(lambda: recorder.decisions, 10, what="m1 decided without b's answer",
             show=lambda: (recorder.asked, check.counts))
    assert recorder.decisions == [("m1", False)]
    assert recorder.asked.count(("b", "m1")) >= 2  # asked again meanwhile
    assert check.counts["gave_up"] == 1
    check.close()


def test_a_check_that_gives_up_decides_at_its_give_up_time_not_at_the_retry_after() -> None:
    """The waits double (0.2, 0.4, 0.8 s): a silent sibling was asked at 0, 0.2 and 0.6 s,
    and the message, still held at 0.8 s, waited for the retry at 1.4 s: seven timeouts where
    four were promised. Now the retry after a give-up time is moved to it."""
    recorder = Recorder()
    check = _check(recorder, timeout=0.2, max_wait=1.6, give_up=0.8)
    check.hold("m1", ["b"], recorder.decided("m1"))
    wait_for(lambda: recorder.decisions, 10, what="m1 decided without b's answer",
             show=lambda: (recorder.asked, check.counts))
    assert check.counts["gave_up"] == 1
    assert 0.8 <= check.waited["max"] < 1.2, check.waited
    check.close()


def test_a_decision_that_raises_stops_neither_the_retries_nor_the_copies_decided_with_it(
        caplog: Any) -> None:
    """A decision runs the node's code (refusing, or handing the message to its cells) on the
    thread that settled it: here the retry timer's. An exception from it ended that thread,
    and with it every later retry and give-up (a silent sibling then held each message for
    good), and left the second copy of the message undecided (its delivery never settled)."""
    recorder = Recorder()
    check = _check(recorder, timeout=0.05, max_wait=0.05, give_up=0.2)

    def broken(applied_elsewhere: bool) -> None:
        raise RuntimeError("a bug in what decides it")

    check.hold("m1", ["b"], broken)
    check.hold("m1", ["b"], recorder.decided("m1 copy"))
    wait_for(lambda: recorder.decisions, 10, what="the copy decided with the broken decision",
             show=lambda: check.counts)
    check.hold("m2", ["b"], recorder.decided("m2"))
    wait_for(lambda: ("m2", False) in recorder.decisions, 10,
             what="m2 decided once its silent sibling was given up on",
             show=lambda: (recorder.decisions, check.counts))
    assert recorder.decisions == [("m1 copy", True), ("m2", False)]
    assert check.holding() == 0
    assert any("a bug in what decides it" in r.getMessage() or r.exc_info for r in caplog.records)
    check.close()
