"""Property: any delivery order with arbitrary duplicates ends where the deduplicated one does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe.cell.outbox import RecordingOutbox
from tests.cell_support import Lamp, message, snapshot

COMMANDS = [
    "(switch-on 5)", "(switch-on 9)", "(switch-off)", "(dim 1)", "(dim 2 :reason \"load\")",
    "(short-circuit)", "(reset)", "(flicker)", "(teleport)", "(dim)",
]


@st.composite
def deliveries(draw):
    """A sequence of distinct messages, then the same sequence with duplicates spliced in."""
    texts = draw(st.lists(st.sampled_from(COMMANDS), min_size=1, max_size=25))
    originals = [message(text, id=f"id-{i}") for i, text in enumerate(texts)]
    delivered = list(originals)
    for _ in range(draw(st.integers(0, 25))):
        duplicate = draw(st.sampled_from(originals))
        # At-least-once: a duplicate can only arrive after the original's first delivery.
        first = delivered.index(duplicate)
        delivered.insert(draw(st.integers(first + 1, len(delivered))), duplicate)
    return originals, delivered


def final_state(messages) -> tuple:
    ref = Lamp.start("lamp", outbox=RecordingOutbox())
    try:
        for m in messages:
            ref.tell(m)
        after = snapshot(ref)
        reasons = ref.proxy().reasons.get(timeout=5)
        return after["state"], after["brightness"], reasons, after["counters"]["applied"]
    finally:
        ref.stop()


@settings(deadline=None, max_examples=60)
@given(deliveries())
def test_duplicates_anywhere_leave_the_same_final_state_as_the_deduplicated_sequence(case) -> None:
    originals, delivered = case
    assert final_state(delivered) == final_state(originals)
