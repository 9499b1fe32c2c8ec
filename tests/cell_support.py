"""Cells used by the cell tests, and helpers to drive one cell directly."""

from __future__ import annotations

import itertools
from typing import Any

import pykka

from cellframe import Cell, Message
from cellframe.cell.outbox import RecordingOutbox
from cellframe.cell.statemachine import on, transition
from cellframe.language.reader import read

_ids = itertools.count()


class Lamp(Cell):
    """A lamp: off, on, or broken; dimming is guarded; one action is buggy on purpose."""

    states = ("off", "on", "broken")
    initial = "off"
    transitions = [on("reset", source="broken", target="off")]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.brightness = 0
        self.reasons: list[str | None] = []

    @transition("switch-on", source="off", target="on")
    def switch_on(self, brightness: int = 5) -> None:
        self.brightness = brightness

    @transition("switch-off", source="on", target="off")
    def switch_off(self) -> None:
        self.brightness = 0

    @transition("dim", source="on", guard="can_dim")
    def dim(self, by: int, *, reason: str | None = None) -> None:
        self.brightness -= by
        self.reasons.append(reason)

    def can_dim(self, by: int, *, reason: str | None = None) -> bool:
        return isinstance(by, int) and self.brightness - by >= 0

    @transition("short-circuit", source=("on", "off"), target="broken")
    def short_circuit(self) -> None:
        self.brightness = 0

    @transition("flicker", source="on", target="off")
    def flicker(self) -> None:
        raise RuntimeError("the filament snapped")

    @transition("report", source="*")
    def report(self) -> None:
        self.cell_reply([read("lamp-state"), self.cell_state, self.brightness])


def message(text: str, *, id: str | None = None, reply_to: str | None = None) -> Message:
    """A Message carrying ``text`` read as an expression, with a fresh id unless given."""
    return Message(read(text), id=id or f"m{next(_ids)}", reply_to=reply_to)


def start_lamp(**kwargs: Any) -> tuple[pykka.ActorRef[Lamp], RecordingOutbox]:
    outbox = kwargs.pop("outbox", None) or RecordingOutbox()
    return Lamp.start("lamp", outbox=outbox, **kwargs), outbox


def snapshot(ref: pykka.ActorRef[Any]) -> dict[str, Any]:
    """Wait for the mailbox to drain (asks are FIFO after tells) and return the state."""
    proxy = ref.proxy()
    return {
        "state": proxy.cell_state.get(timeout=10),
        "brightness": proxy.brightness.get(timeout=10),
        "counters": proxy.cell_counters.get(timeout=10).as_dict(),
    }
