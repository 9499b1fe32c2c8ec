"""The README opens with the two set-up commands, and its code runs."""

from __future__ import annotations

import re
from pathlib import Path

from cellframe import Message, RecordingOutbox, read

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.S)


def test_the_first_block_holds_exactly_the_two_set_up_commands() -> None:
    language, body = BLOCKS[0]
    commands = [line.split("#")[0].strip() for line in body.splitlines() if line.strip()]
    assert language == "bash"
    assert commands == ["pip install -e . && cellframe demo",
                        "pip install -e '.[dev]' && python -m pytest"]


def test_the_cell_in_ten_lines_behaves_as_the_readme_says() -> None:
    (source,) = [body for language, body in BLOCKS if language == "python"]
    namespace: dict = {}
    exec(compile(source, "README.md", "exec"), namespace)
    lamp = namespace["Lamp"].start("lamp", outbox=RecordingOutbox())
    try:
        lamp.tell(Message(read("(switch-on 7)")))
        lamp.tell(Message(read("(switch-on 7)")))
        counters = lamp.proxy().cell_counters.get(timeout=5)
        assert lamp.proxy().cell_state.get(timeout=5) == "on"
        assert (counters.applied, counters.ignored) == (1, 1)
    finally:
        lamp.stop()
