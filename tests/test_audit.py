"""The audit trail's bookkeeping (``cellframe.node.audit``), without a broker: one event per
delivery, whatever its cells reported; the broker tests are in ``test_trust_broker.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


def test_a_trail_publishes_one_event_once_settled_however_often_it_is_told() -> None:
    published: list[dict[str, Any]] = []
    acked: list[bool] = []
    delivery = _Delivery(Envelope(b"(add 1)", message_id="m-1"), "each.tally")
    trail = AuditTrail(lambda kind, **fields: published.append(fields), delivery,
                       new_key("ops", ["all *"]), "add")
    settle = trail.settler(lambda: acked.append(True))
    trail.report("a", "applied")
    assert not published  # not settled yet
    trail.report("b", "duplicate")
    settle()
    trail.given_back("late")  # after the event: not a second one
    assert acked == [True]
    assert published == [{"key": "ops", "target": "each.tally", "verb": "add",
                          "message_id": "m-1", "result": "a: applied; b: duplicate"}]
