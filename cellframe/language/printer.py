"""The printer: writes language data as canonical text that reads back to equal data.

``read(write(x)) == x`` for every value of the data model. What the language cannot express
(NaN or infinite floats, names the reader would not read as a symbol, Python types outside
the data model) is refused with ``LanguageError`` instead of being written approximately.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any

from ..errors import LanguageError
from .reader import terminal_regex
from .symbols import Keyword, Symbol

__all__ = ["NEEDS_ESCAPE", "write", "write_bounded"]

_QUOTE = Symbol("quote")
# Escaped in strings: the quote and backslash, C0/C1 controls, DEL, the two Unicode line
# separators (they break lines in many viewers) and lone surrogates (not encodable as UTF-8).
NEEDS_ESCAPE = _NEEDS_ESCAPE = re.compile('["\\\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]')
_NAMED_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


@functools.cache
def _name_checks() -> tuple[re.Pattern[str], re.Pattern[str], tuple[re.Pattern[str], ...]]:
    """The grammar's own regexes, so printer and reader cannot disagree: SYMBOL, KEYWORD, and
    the terminals the lexer tries before SYMBOL (a name matching one of them is not a symbol).
    """
    shadowing = tuple(terminal_regex(name) for name in ("INT", "FLOAT", "TRUE", "FALSE", "NIL"))
    return terminal_regex("SYMBOL"), terminal_regex("KEYWORD"), shadowing


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _string(value: str) -> str:
    if _NEEDS_ESCAPE.search(value) is None:
        return f'"{value}"'
    return '"' + _NEEDS_ESCAPE.sub(_escape, value) + '"'


_WRITABLE_SYMBOLS: set[str] = set()  # names already checked: verbs repeat in every message
_CACHE_LIMIT = 65_536


def _symbol(value: Symbol) -> str:
    name = value.name
    if name in _WRITABLE_SYMBOLS:
        return name
    symbol, _, shadowing = _name_checks()
    if symbol.fullmatch(name) is None or any(regex.fullmatch(name) for regex in shadowing):
        raise LanguageError(f"symbol name {name!r} cannot be written: it would not read back")
    if len(_WRITABLE_SYMBOLS) < _CACHE_LIMIT:
        _WRITABLE_SYMBOLS.add(name)
    return name


def _keyword(value: Keyword) -> str:
    text = ":" + value.name
    if _name_checks()[1].fullmatch(text) is None:
        raise LanguageError(f"keyword name {value.name!r} cannot be written")
    return text


def _int(value: int) -> str:
    try:
        return repr(int(value))
    except ValueError:  # past sys.get_int_max_str_digits()
        raise LanguageError(f"integer of {value.bit_length()} bits is too long to write") from None


def _float(value: float) -> str:
    if not math.isfinite(value):
        raise LanguageError(f"float {value!r} cannot be written: the language has no NaN or inf")
    return repr(float(value))  # repr is the shortest text that round-trips exactly


_ATOMS: dict[type, Callable[[Any], str]] = {
    str: _string,
    Symbol: _symbol,
    Keyword: _keyword,
    bool: lambda value: "true" if value else "false",
    int: _int,
    float: _float,
    type(None): lambda value: "nil",
}


class _Budget(Exception):
    """The text grew past the caller's limit."""


class _Mark:
    """A work item that is text to emit, not a value: a space, or the end of a list."""

    __slots__ = ("text", "owner")

    def __init__(self, text: str, owner: list[Any] | None = None):
        self.text = text
        self.owner = owner  # the list this mark closes (held, so its id stays unique)


_SPACE = _Mark(" ")


def _base_value(value: Any) -> Any:
    """Subclasses of the data types (hy models, IntEnum...) write as their base type."""
    for base in (bool, int, float, str, list):
        if isinstance(value, base):
            return base(value)  # type: ignore[arg-type]
    raise LanguageError(
        f"cannot write a {type(value).__name__}: it is not part of the language's data"
    )


def _run(value: Any, room: float) -> str:
    """Write ``value`` with an explicit stack, so depth is limited by memory, not recursion."""
    parts: list[str] = []
    work: list[Any] = [value]
    open_lists: set[int] = set()  # ids of the lists being written: a cycle would never end
    while work:
        item = work.pop()
        kind = type(item)
        if kind is _Mark:
            if item.owner is not None:
                open_lists.discard(id(item.owner))
            text = item.text
        elif kind in _ATOMS:
            text = _ATOMS[kind](item)
        elif kind is list:
            text = _open_list(item, work, open_lists, room)
        else:
            work.append(_base_value(item))
            continue
        room -= len(text)
        if room < 0:
            raise _Budget
        parts.append(text)
    return "".join(parts)


def _flat_list(value: list[Any], room: float) -> str | None:
    """The text of a list of atoms only (most messages), or None if it holds anything else;
    _Budget as soon as it passes ``room`` (an error message writes 60 characters of a list
    that may hold a million atoms)."""
    texts = []
    for item in value:
        convert = _ATOMS.get(type(item))
        if convert is None:
            return None
        text = convert(item)
        room -= len(text) + 1
        if room < 0:
            raise _Budget
        texts.append(text)
    if len(value) == 2 and _QUOTE == value[0]:
        return "'" + texts[1]
    return "(" + " ".join(texts) + ")"


def _open_list(value: list[Any], work: list[Any], open_lists: set[int], room: float) -> str:
    """Queue the items of a list (last first) and return the text that opens it."""
    flat = _flat_list(value, room)
    if flat is not None:
        return flat
    if id(value) in open_lists:
        raise LanguageError("a list that contains itself cannot be written")
    open_lists.add(id(value))
    if len(value) == 2 and _QUOTE == value[0]:
        work.append(_Mark("", value))
        work.append(value[1])
        return "'"
    work.append(_Mark(")", value))
    for index in range(len(value) - 1, -1, -1):
        work.append(value[index])
        if index:
            work.append(_SPACE)
    return "("


def write(value: Any) -> str:
    """Return the canonical text of ``value``; ``read`` of it gives back an equal value."""
    atom = _ATOMS.get(type(value))
    if atom is not None:  # the common case of a bare atom skips the writer object
        return atom(value)
    return _run(value, math.inf)


def write_bounded(value: Any, max_chars: int) -> str | None:
    """Like :func:`write`, but return None as soon as the text passes ``max_chars``."""
    try:
        return _run(value, max_chars)
    except _Budget:
        return None
