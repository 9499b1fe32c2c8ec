"""The audit trail's bookkeeping (``cellframe.node.audit``), without a broker: one event per
delivery, whatever its cells reported; the broker tests are in ``test_trust_broker.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from cellframe.node.audit import AuditTrail, result_of
from cellframe.wire.envelope import Envelope
from cellframe.wire.keys import new_key


@dataclass
class _Delivery:
    envelope: Envelope
    routing_key: str
    redelivered: bool = False


def test_cells_that_agree_give_their_one_result() -> None:
    assert result_of([("a", "applied"), ("b", "applied")]) == "applied"


def test_cells_that_differ_give_each_cells_result() -> None:
    outcomes = [("a", "applied"), ("b", "ignored: no transition"), ("", "not applied: stopped")]
    assert result_of(outcomes) == "a: applied; b: ignored: no transition; not applied: stopped"


def test_a_trail_publishes_one_event_once_its_cells_are_done_however_often_it_is_told() -> None:
    published: list[dict[str, Any]] = []
    acked: list[bool] = []
    delivery = _Delivery(Envelope(b"(add 1)", message_id="m-1"), "each.tally")
    trail = AuditTrail(lambda kind, fields, then: (published.append(fields), then and then()),
                       delivery, new_key("ops", ["all *"]), "add")
    settle = trail.settler(lambda: acked.append(True))
    trail.report("a", "applied")
    assert not published  # not done yet
    trail.report("b", "duplicate")
    settle()
    trail.given_back("late")  # after the event: not a second one
    assert acked == [True]
    assert published == [{"key": "ops", "target": "each.tally", "verb": "add",
                          "message_id": "m-1", "result": "a: applied; b: duplicate",
                          "redelivered": False}]


@pytest.mark.parametrize("how", ["settled", "refused alone", "given back"])
def test_a_delivery_is_settled_only_once_the_broker_has_its_audit_event(how) -> None:
    """At least once: a node that dies after the ack but before the event would lose it, so
    the ack (or the giving back) waits for the event's ``on_settled``."""
    events: list[tuple[dict[str, Any], Any]] = []
    done: list[str] = []
    delivery = _Delivery(Envelope(b"(add 1)", message_id="m-2"), "role.tally", redelivered=True)
    trail = AuditTrail(lambda kind, fields, then: events.append((fields, then)), delivery,
                       new_key("ops", ["all *"]), "add")
    if how == "settled":
        trail.report("a", "applied")
        trail.settler(lambda: done.append("acked"))()
    elif how == "refused alone":
        trail.refuser(lambda reason, again: done.append(f"refused: {reason}"), True)("crashed", True)
    else:
        trail.given_back("paused", then=lambda: done.append("given back"))
    [(fields, then)] = events
    assert done == [] and fields["message_id"] == "m-2" and fields["redelivered"] is True
    then()  # the broker confirmed the event
    assert len(done) == 1
