"""The reader's quick path: a message of lists and atoms, read as lark reads it, without the
per-parse and per-token machinery of lark's parser.

Nearly every control message is one list of atoms and lists: ``(set-weight "web-1" 5)``.
lark (lark-cython included) spent 40-55 us on a 100-byte one on the machine measured, most of
it in fixed costs (a lexer thread, a parser state, a tree builder per rule) and in a Python
call or two per token. This path reads it in about a fifth of that time, with two things:

- one regex: the grammar's own terminals, in the order lark's lexer tries them, taken from
  the lexer lark built. ``grammar/cellframe.lark`` stays the only definition of the syntax;
- a stack of open lists, since a list is the only structure it reads.

Whatever else it meets it leaves to lark by returning ``DEFER``: a quote, text that no
terminal matches, a parenthesis that does not balance, a second expression, an atom whose
value is refused (a bad escape, an overlong integer). So every error, with its position and
caret excerpt, is still lark's, and ``tests/test_quick_read.py`` checks that the two read
every input alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol

__all__ = ["DEFER", "QuickRead", "quick_reader"]

#: What the quick path returns for input it leaves to lark.
DEFER: Any = object()

QuickRead = Callable[[str], Any]


class _Terminal(Protocol):
    name: str

    @property
    def pattern(self) -> Any: ...


class _Lexeme:
    """The three attributes of a lark token that the reader's converters look at."""

    __slots__ = ("start_pos", "type", "value")

    def __init__(self, type_: str, value: str, start_pos: int) -> None:
        self.type, self.value, self.start_pos = type_, value, start_pos


def quick_reader(terminals: Iterable[_Terminal], convert: dict[str, Callable[[Any], Any]],
                 *, ignore: frozenset[str], refused: type[Exception]) -> QuickRead:
    """Return a reader of one expression: ``terminals`` in lark's lexer order; ``convert``
    maps an atom's terminal name to the function that makes its value (``refused``, the
    exception they raise for a bad atom, defers to lark); ``ignore`` are the terminals lark
    skips (whitespace, comments). Terminals that are neither, nor ``LPAR``/``RPAR``, defer."""
    scan = re.compile("|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in terminals)).match

    def read_quickly(text: str) -> Any:
        stack: list[list[Any]] = []
        items: list[Any] | None = None  # the innermost open list
        found, pos, end = DEFER, 0, len(text)
        while pos < end:
            token = scan(text, pos)
            if token is None:
                return DEFER
            kind, start, pos = token.lastgroup or "", pos, token.end()  # every group is named
            if kind in ignore:
                continue
            if found is not DEFER:  # a second expression
                return DEFER
            if kind == "LPAR":
                if items is not None:
                    stack.append(items)
                items = []
            elif kind == "RPAR":
                if items is None:
                    return DEFER
                if stack:
                    done, items = items, stack.pop()
                    items.append(done)
                else:
                    found, items = items, None
            else:
                make = convert.get(kind)
                if make is None:
                    return DEFER
                try:
                    value = make(_Lexeme(kind, token.group(), start))
                except refused:
                    return DEFER
                if items is None:
                    found = value
                else:
                    items.append(value)
        return DEFER if items is not None else found

    return read_quickly
