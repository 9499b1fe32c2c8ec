"""The reader: turns control-language text into Python data with lark's LALR parser.

Data model: a list is a Python ``list``, a symbol a :class:`Symbol`, ``:name`` a
:class:`Keyword`, strings ``str``, integers ``int``, floats ``float``, ``true``/``false``
``bool``, ``nil`` ``None`` and ``'x`` the list ``[Symbol("quote"), x]``. ``()`` is ``[]``,
which is not ``nil``.

Size and nesting are checked before lark sees the text, so a hostile message costs at most a
``count`` and a linear scan. The parser converts tokens in lark's inline callbacks instead of
building a tree and walking it: no ``Tree`` is made for the forms themselves.

When ``lark-cython`` is installed (a dependency on CPython), lark runs its compiled lexer and
LALR parser over the same grammar: a control message reads in about three quarters of the time.
Its tokens are not ``lark.Token`` (nor ``str``), so the callbacks use only ``type`` and
``value`` and recognise both kinds; without it the pure-Python lark gives identical results.

In front of lark sits a quick path (``_quick_read.py``) for one expression of lists and
atoms, which is nearly every control message: lark's own terminals, in its lexer's order, in
one regex, and a stack of open lists. It reads such a message in about a fifth of lark's
time, and leaves everything else (quotes, errors of any kind) to lark.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

try:  # lark's compiled plugin: the same grammar and results, faster
    import lark_cython
except ImportError:  # pragma: no cover - a platform without its wheel
    lark_cython = None

from ..errors import InputTooLargeError, ReadError
from ._quick_read import DEFER, QuickRead, quick_reader
from .grammar import make_parser
from .symbols import Keyword, Symbol

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "check_nesting",
    "decode_source",
    "error_at",
    "locate",
    "read",
    "read_all",
    "terminal_regex",
]

DEFAULT_MAX_BYTES = 65_536
DEFAULT_MAX_DEPTH = 128

QUOTE = Symbol("quote")

# One token of the nesting scan: a string (maybe unterminated), a comment, a parenthesis or
# quote, or any other run of characters (an atom).
_SCAN = re.compile(
    r"""
    "[^"\\]*(?:\\.[^"\\]*)*"?   # string (an unrolled loop: fast on long strings)
    | ;[^\n]*                   # comment
    | (?P<o>\() | (?P<c>\)) | (?P<q>')
    | [^\s()'";]+               # atom
    """,
    re.S | re.X,
)
_ATOM = re.compile(r'[^\s()\'";]+')
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}


class _Invalid(Exception):
    """Raised inside lark callbacks: a token that lexed but is not a valid value, and where."""

    def __init__(self, reason: str, pos: int):
        super().__init__(reason)
        self.reason = reason
        self.pos = pos


def _unescape_match(match: re.Match[str], token: Token) -> str:
    """Return the character one escape sequence stands for, or raise _Invalid at it."""
    code = match.group(1)
    simple = _SIMPLE_ESCAPES.get(code)
    if simple is not None:
        return simple
    if len(code) == 5:
        return chr(int(code[1:], 16))
    pos = (token.start_pos or 0) + 1 + match.start()
    raise _Invalid(f"invalid escape sequence {match.group()!r} in string", pos)


def _string(token: Token) -> str:
    body = token.value[1:-1]
    if "\\" not in body:
        return body
    return _ESCAPE.sub(lambda match: _unescape_match(match, token), body)


def _int(token: Token) -> int:
    try:
        return int(token.value)
    except ValueError:  # past sys.get_int_max_str_digits(): int() would take quadratic time
        reason = f"integer literal of {len(token.value)} digits is too long"
        raise _Invalid(reason, token.start_pos or 0) from None


def _float(token: Token) -> float:
    value = float(token.value)
    if math.isinf(value):
        raise _Invalid(f"float literal {token.value!r} is out of range", token.start_pos or 0)
    return value


# Token.value is a plain str: keying on the Token itself would call lark's Python __eq__.
# Looking the name up before calling Symbol() skips a Python-level __new__ for known names.
def _symbol(token: Token, _known: Callable[[str], Any] = Symbol._interned.get) -> Symbol:
    return _known(token.value) or Symbol(token.value)  # type: ignore[return-value]


def _keyword(token: Token, _known: Callable[[str], Any] = Keyword._interned.get) -> Keyword:
    return _known(token.value[1:]) or Keyword(token.value[1:])  # type: ignore[return-value]


_CONVERT: dict[str, Callable[[Token], Any]] = {
    "SYMBOL": _symbol,
    "KEYWORD": _keyword,
    "STRING": _string,
    "INT": _int,
    "FLOAT": _float,
    "TRUE": lambda token: True,
    "FALSE": lambda token: False,
    "NIL": lambda token: None,
}


#: The token classes a parser may hand the callbacks: lark's, and lark-cython's if present.
_TOKEN_TYPES = frozenset({Token} | ({lark_cython.lark_cython.Token} if lark_cython else set()))


def _value(child: Any) -> Any:
    return _CONVERT[child.type](child) if type(child) in _TOKEN_TYPES else child


_Items = list[Any]  # the class below has a method named `list`


class _Build:
    """Lark inline callbacks: each rule's children (values or raw tokens) become data."""

    def start(self, children: _Items) -> Any:
        child = children[0]
        return _CONVERT[child.type](child) if type(child) in _TOKEN_TYPES else child

    def many(self, children: _Items) -> _Items:
        return [_value(child) for child in children]

    def list(self, children: _Items) -> _Items:
        convert, tokens = _CONVERT, _TOKEN_TYPES
        return [convert[c.type](c) if type(c) in tokens else c for c in children]

    def quoted(self, children: _Items) -> _Items:
        return [QUOTE, _value(children[0])]


_parsers: dict[tuple[str, bool], Lark] = {}
# Building a Lark parser is not thread-safe: two cells reading their first message at once
# once failed with "re.error: unbalanced parenthesis" while both built one. Build under a lock.
_build_lock = threading.Lock()


def _parser(start: str, compiled: bool = True) -> Lark:
    """Return the data-building parser for ``start``, built on first use; ``compiled`` uses
    lark-cython when it is installed (``False`` forces pure-Python lark, for comparison)."""
    key = (start, compiled and lark_cython is not None)
    parser = _parsers.get(key)
    if parser is None:
        with _build_lock:
            parser = _parsers.get(key)
            if parser is None:
                # The basic lexer: one regex for all terminals. The contextual lexer measured
                # the same speed here (14.1k/s vs 14.2k/s) and reports a shorter "expected" list.
                plugins = {"_plugins": lark_cython.plugins} if key[1] else {}
                parser = make_parser(start=start, lexer="basic", transformer=_Build(), **plugins)
                _parsers[key] = parser
    return parser


_quick_reads: dict[bool, QuickRead] = {}


def _quick_read(compiled: bool = True) -> QuickRead:
    """The quick path in front of ``_parser("start", compiled)``, built from that parser's
    lexer. If lark folded a terminal into another (an "unless" callback would then retype
    tokens), the quick path would not lex as lark does: it is then one that defers always."""
    quick = _quick_reads.get(compiled)
    if quick is None:
        parser = _parser("start", compiled)
        with _build_lock:
            quick = _quick_reads.get(compiled)
            if quick is not None:
                return quick
            terminals = parser.parser.lexer.scanner.terminals
            if {t.name for t in terminals} == {t.name for t in parser.terminals}:
                quick = quick_reader(terminals, _CONVERT, refused=_Invalid,
                                     ignore=frozenset(parser.ignore_tokens))
            else:  # pragma: no cover - not with this grammar
                quick = lambda text: DEFER  # noqa: E731
            _quick_reads[compiled] = quick
    return quick


def terminal_regex(name: str) -> re.Pattern[str]:
    """Return the compiled regex of one terminal of the grammar (the printer checks names)."""
    pattern = _parser("start").get_terminal(name).pattern.to_regexp()
    return re.compile(pattern)


def _line_column(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _context(text: str, pos: int) -> str:
    """Lark's two-line excerpt with a caret under ``pos``."""
    where = UnexpectedInput()
    where.pos_in_stream = pos  # type: ignore[assignment]
    return where.get_context(text)


def error_at(cls: type[ReadError], reason: str, text: str, pos: int) -> ReadError:
    """A ReadError whose message shows the reason, the position and a caret excerpt."""
    line, column = _line_column(text, pos)
    err = cls(reason, line=line, column=column)
    err.context = _context(text, pos)  # type: ignore[attr-defined]
    err.args = (f"{err.args[0]}\n{err.context}",)  # type: ignore[attr-defined]
    return err


def decode_source(text: str | bytes, max_bytes: int) -> str:
    """Return ``text`` as str after the byte-size check; bytes must be strict UTF-8."""
    if type(text) is str and len(text) * 4 <= max_bytes:  # the common case, checked first
        return text
    if isinstance(text, bytes | bytearray | memoryview):
        data = bytes(text)
        if len(data) > max_bytes:
            raise InputTooLargeError(f"input of {len(data)} bytes is over the {max_bytes} limit")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            prefix = data[: exc.start].decode("utf-8")
            raise error_at(ReadError, f"invalid UTF-8 at byte offset {exc.start}", prefix,
                         len(prefix)) from None
    if not isinstance(text, str):
        raise ReadError(f"can only read str or bytes, not {type(text).__name__}")
    # One character is at least one byte and at most four: encode only when in doubt.
    if len(text) * 4 > max_bytes:
        size = len(text) if len(text) > max_bytes else len(text.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise InputTooLargeError(f"input of {size} bytes is over the {max_bytes} limit")
    return text


def check_nesting(text: str, max_depth: int, *, scan: re.Pattern[str] = _SCAN,
                  marks: str = "('") -> None:
    """Raise InputTooLargeError if the data in ``text`` nests deeper than ``max_depth``.

    ``scan`` finds tokens: group ``o`` opens a list, ``c`` closes one, ``q`` is a quote mark
    (it nests the next datum), anything starting with ``;`` is a comment. ``marks`` are the
    characters that open or quote: if there are no more of them than ``max_depth``, nesting
    cannot be deeper, and the scan is skipped.
    """
    if sum(text.count(mark) for mark in marks) <= max_depth:
        return
    stack: list[bool] = []  # True: an open list, False: a quote waiting for its datum
    for match in scan.finditer(text):
        kind = match.lastgroup
        if kind == "o" or kind == "q":
            stack.append(kind == "o")
            if len(stack) > max_depth:
                raise error_at(InputTooLargeError, f"nesting deeper than {max_depth}", text,
                               match.start())
            continue
        if match.group().startswith(";"):
            continue
        if kind == "c":
            while stack and not stack[-1]:
                stack.pop()
            if stack:
                stack.pop()
        while stack and not stack[-1]:  # a complete datum closes the quotes before it
            stack.pop()


def _parse(text: str | bytes, start: str, max_bytes: int, max_depth: int,
           compiled: bool = True, quick: bool = True) -> Any:
    """Read ``text`` from the rule ``start``; ``quick`` tries the quick path first (for one
    expression), ``compiled`` picks lark-cython when installed (see ``_parser``)."""
    source = decode_source(text, max_bytes)
    check_nesting(source, max_depth)
    if quick and start == "start":
        value = _quick_read(compiled)(source)
        if value is not DEFER:
            return value
    try:
        return _parser(start, compiled).parse(source)
    except _Invalid as exc:
        raise error_at(ReadError, exc.reason, source, exc.pos) from None
    except UnexpectedInput as exc:
        raise _lark_error(exc, source) from None


def _lark_error(exc: UnexpectedInput, text: str) -> ReadError:
    """Translate a lark parse error into a ReadError that says what was wrong, and where."""
    if isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream or 0
        char = text[pos]
        if char == '"':
            reason = "unterminated string"
        elif char == ":":
            reason = "a keyword needs a name after ':'"
        elif char in "+-.0123456789":
            found = _ATOM.match(text, pos)
            atom = found.group() if found else char
            reason = f"malformed number {atom!r}"
        else:
            reason = f"unexpected character {char!r}"
        return error_at(ReadError, reason, text, pos)
    if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
        if exc.state is not None and not exc.state.value_stack:
            return error_at(ReadError, "empty input: expected an expression", text, len(text))
        return error_at(ReadError, "unexpected end of input: a list or quote is not closed",
                      text, len(text))
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        if token.type == "RPAR":
            reason = "unexpected ')' with no list open"
        elif exc.expected == {"$END"}:
            reason = "more than one expression (use read_all to read several)"
        else:
            reason = f"unexpected {token.value!r}"
        return error_at(ReadError, reason, text, token.start_pos or 0)
    return error_at(ReadError, str(exc), text, exc.pos_in_stream or 0)  # pragma: no cover


def read(
    text: str | bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Read exactly one expression; only whitespace and comments may follow it."""
    return _parse(text, "start", max_bytes, max_depth)


def read_all(
    text: str | bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> list[Any]:
    """Read every expression in ``text`` (possibly none) into a list."""
    return _parse(text, "many", max_bytes, max_depth)


_position_parser: Lark | None = None


def locate(text: str, path: Sequence[int]) -> tuple[int, int] | None:
    """Return (line, column) of the part of ``read(text)`` reached by indexing with ``path``.

    Used only after an error, so it may re-parse: it builds a tree that keeps positions.
    """
    global _position_parser
    with _build_lock:
        if _position_parser is None:
            _position_parser = make_parser(start="start", lexer="basic", propagate_positions=True)
    try:
        node: Any = _position_parser.parse(text).children[0]
    except UnexpectedInput:
        return None
    for index in path:
        if not isinstance(node, Tree):
            return None
        children = node.children if node.data == "list" else [node, *node.children]
        if not 0 <= index < len(children):
            return None
        node = children[index]
    if isinstance(node, Token):
        return node.line or 1, node.column or 1
    return node.meta.line, node.meta.column
