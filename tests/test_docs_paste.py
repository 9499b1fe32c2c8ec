"""The tutorial asks for its Python blocks to be run in one Python session: each must paste
into the plain interactive interpreter, which reads line by line and ends a compound
statement only at a blank line (issue 19, item 27: step 4's last block was a SyntaxError)."""

from __future__ import annotations

import code

import pytest

from tests.test_docs import page_blocks


class _Paste(code.InteractiveConsole):
    """The interpreter's reading, without running anything: what a paste would compile."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def runcode(self, code_object: object) -> None:
        pass

    def showsyntaxerror(self, filename: str | None = None, **kwargs: object) -> None:
        self.errors.append(repr(self.buffer[-1:]))


def paste_errors(text: str) -> list[str]:
    console = _Paste()
    for line in text.splitlines():
        console.push(line)
    console.push("")
    return console.errors


@pytest.mark.parametrize("block", [b for b in page_blocks("tutorial.md")
                                   if b.language == "python" and "file" not in b.notes],
                         ids=lambda b: b.where)
def test_every_tutorial_session_block_pastes_into_the_plain_interpreter(block) -> None:
    assert paste_errors(block.text) == []


def test_the_check_sees_a_statement_after_a_loop_without_a_blank_line() -> None:
    assert paste_errors("for n in (1, 2):\n    pass\nprint(n)\n") != []
    assert paste_errors("for n in (1, 2):\n    pass\n\nprint(n)\n") == []


@pytest.mark.parametrize("page", ["tutorial.md", "operations.md", "testing.md"])
def test_every_shell_wait_loop_of_a_page_has_a_timeout(page: str) -> None:
    loops = [(b.where, line) for b in page_blocks(page) if b.language in ("bash", "console")
             for line in b.text.splitlines() if "until " in line or "while " in line]
    assert [(where, line) for where, line in loops if "timeout " not in line] == []
