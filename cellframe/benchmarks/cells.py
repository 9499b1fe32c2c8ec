"""Cell state-machine dispatch against raw pykka ``tell`` to a counting actor.

Both sides receive the same number of pre-built messages from one sender thread; the clock
stops when the actor has processed the last one (a final ``ask`` drains the mailbox). The
Cell runs its full path: dedup by message id, the evaluator, the transition, counters.

A Cell's mailbox is a ``queue.SimpleQueue`` (``Cell._create_actor_inbox``), pykka's thread
actor's a ``queue.Queue``. ``ratio`` is against pykka as it ships; ``ratio_same_mailbox``
against a raw pykka actor given the same SimpleQueue mailbox, which isolates what the
state machine, dedup and counters cost.
"""

from __future__ import annotations

import queue
import time
from typing import Any

import pykka

from ..cell.cell import Cell
from ..cell.statemachine import transition
from ..language.symbols import Symbol
from ..wire.envelope import Message

__all__ = ["bench_cell_dispatch"]


class _CountingActor(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_receive(self, message: Any) -> Any:
        self.count += 1
        return self.count


class _CountingActorSimpleQueue(_CountingActor):
    @staticmethod
    def _create_actor_inbox() -> Any:
        return queue.SimpleQueue()


class _CountingCell(Cell):
    states = ("idle", "counting")
    initial = "idle"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count = 0

    @transition("inc", target="counting")
    def inc(self) -> None:
        self.count += 1


def _rate(ref: pykka.ActorRef[Any], messages: list[Any], count_of: Any) -> float:
    start = time.perf_counter()
    tell = ref.tell
    for message in messages:
        tell(message)
    count = count_of()
    elapsed = time.perf_counter() - start
    assert count == len(messages), f"processed {count} of {len(messages)}"
    return len(messages) / elapsed


def bench_cell_dispatch(n: int = 100_000, rounds: int = 3) -> dict[str, float]:
    """Messages/s through raw pykka and through a Cell; best of ``rounds`` for each."""
    raw_best = same_best = cell_best = 0.0
    for _ in range(rounds):
        actor = _CountingActor.start()
        try:
            raw = _rate(actor, [("inc",)] * n, lambda ref=actor: ref.proxy().count.get(timeout=60))
        finally:
            actor.stop()
        same_mailbox_actor = _CountingActorSimpleQueue.start()
        try:
            same = _rate(same_mailbox_actor, [("inc",)] * n,
                         lambda ref=same_mailbox_actor: ref.proxy().count.get(timeout=60))
        finally:
            same_mailbox_actor.stop()
        same_best = max(same_best, same)
        cell = _CountingCell.start("bench")
        inc = [Symbol("inc")]
        messages = [Message(inc, id=str(i)) for i in range(n)]
        try:
            rate = _rate(cell, messages, lambda ref=cell: ref.proxy().count.get(timeout=60))
        finally:
            cell.stop()
        raw_best, cell_best = max(raw_best, raw), max(cell_best, rate)
    return {"pykka_tell_per_s": raw_best, "pykka_tell_same_mailbox_per_s": same_best,
            "cell_dispatch_per_s": cell_best, "ratio": cell_best / raw_best,
            "ratio_same_mailbox": cell_best / same_best}
