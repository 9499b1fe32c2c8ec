"""A greeter: the cell that docs/tutorial.md builds, step by step."""

from __future__ import annotations

from typing import Any

from cellframe import Cell, Keyword, Symbol, on, transition


class Greeter(Cell):
    """Greets whoever asks while it is open; closed, it ignores greetings."""

    role = "greeter"
    states = ("open", "closed")
    initial = "open"
    transitions = [
        on("close", source="open", target="closed"),
        on("open", source="closed", target="open"),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.greeting = self.cell_settings.get("greeting", "Hello")  # from DNS, if any
        self.greeted = 0

    @transition("greet", source="open", guard="is_a_name")
    def greet(self, name: str) -> None:
        self.greeted += 1
        self.cell_reply([Symbol("greeting"), f"{self.greeting}, {name}!",
                         Keyword("by"), self.cell_name])

    def is_a_name(self, name: Any) -> bool:
        return isinstance(name, str) and 0 < len(name) <= 40

    @transition("greeted")
    def report(self) -> None:
        self.cell_reply([Symbol("greeted"), self.greeted, Keyword("by"), self.cell_name])
