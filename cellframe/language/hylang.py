"""Hy as a second way to write control expressions: read with ``hy.read``, never evaluated.

``read_hy`` turns Hy text into exactly the data the lark reader gives for the same expression,
so ``read_hy('(set-weight "web-01" 5 :reason "load")') == read('(set-weight "web-01" 5 :reason
"load")')``; ``hy_to_text`` turns it into the canonical lark text the wire carries. ``hy.eval``
is never called: it cannot be sandboxed (every compiled form imports ``hy``, and ``os`` is
reachable from there).

``hy.read`` costs about the cube of the nesting depth (depth 100: 0.5 s, 200: 5 s), so size
and depth are checked before Hy sees the text, and again by Hy's own reader as it reads: Hy
parses code inside f-strings (``f"{...}"``, ``#[f[...]f]``), which a scan of the text skips as
string contents (an f-string holding 200 parentheses, 405 bytes, took 5 to 9 s). The reader
here is a ``HyReader`` that counts how deep it is every time it starts a form, wherever that
form is, and stops past the limit. A fresh one is used for every call, so no reader macro
defined elsewhere can run.
"""

from __future__ import annotations

import math
import re
from typing import Any

import hy
import hy.models
from hy.reader.exceptions import LexException

from ..errors import InputTooLargeError, LanguageError, ReadError
from .printer import write
from .reader import check_nesting, decode_source
from .symbols import Keyword, Symbol

__all__ = ["hy_to_text", "read_hy"]

DEFAULT_MAX_BYTES = 8192
DEFAULT_MAX_DEPTH = 32

_CONSTANTS = {"True": True, "False": False, "None": None, "true": True, "false": False, "nil": None}
# Symbols that Hy's reader makes from its own syntax (`a.b`, `#*`, `` ` ``, `~`, `#^`):
# they only mean something to Hy's compiler, so reading them is refused instead of passed on.
_HY_ONLY = frozenset(
    {".", "quasiquote", "unquote", "unquote-splice", "unpack-iterable", "unpack-mapping",
     "annotate"}
)
_LIST = Symbol("list")
_SCAN = re.compile(  # tokens for check_nesting: Hy opens with ( [ { and quotes with ' ` ~ ~@
    r"""
    "[^"\\]*(?:\\.[^"\\]*)*"? | ;[^\n]*
    | (?P<o>[(\[{]) | (?P<c>[)\]}]) | (?P<q>~@|['`~])
    | [^\s()\[\]{}'`~";]+
    """,
    re.S | re.X,
)


# The longest decimal integer literal Python (and the lark reader) will read.
_MAX_DIGITS = 4300
_TOO_MANY_DIGITS = 10**_MAX_DIGITS
_DECIMAL = re.compile(r"[+-]?[0-9][0-9_,]*")


class _TooDeep(LexException):
    """Raised inside Hy's reader (a LexException, so Hy passes it on unchanged)."""


class _BoundedReader(hy.HyReader):  # type: ignore[misc]
    """Hy's reader, refusing to go more than ``max_depth`` levels deep wherever Hy recurses:
    every form it reads starts in ``try_parse_one_form`` (in lists, after quotes, in
    f-strings, after ``#_``), and every f-string field in ``read_fcomponent``, whose format
    spec may hold another field (100 fields nested in format specs took 1.2 s)."""

    def __init__(self, max_depth: int) -> None:
        super().__init__()
        self.cellframe_depth = 0
        # An atom inside N lists is the form N + 1 deep.
        self.cellframe_max_depth = max_depth + 1

    def try_parse_one_form(self) -> Any:
        return self._deeper(super().try_parse_one_form)

    def read_fcomponent(self, prefix: str, fstring_mode: str) -> Any:
        return self._deeper(super().read_fcomponent, prefix, fstring_mode)

    def fill_pos(self, model: Any, start: tuple[int, int]) -> Any:
        """Hy's, without its last step: ``model.replace(model)``, which rebuilds the whole
        subtree of a form to give positions to submodels that have none (the ones Hy makes up,
        like the ``quote`` of ``'x``), once for every form. That made reading cost the cube of
        the depth, summed over the forms: 240 chains of 31 quotes, 8 KB within every limit,
        took 6 s. Every form read still gets its own position; made-up ones report line 1."""
        model.start_line, model.start_column = start
        model.end_line, model.end_column = self.pos
        return model

    def _deeper(self, read: Any, *args: Any) -> Any:
        self.cellframe_depth += 1
        try:
            if self.cellframe_depth > self.cellframe_max_depth:
                raise _TooDeep.from_reader(
                    f"nesting deeper than {self.cellframe_max_depth - 1}", self)
            return read(*args)
        finally:
            self.cellframe_depth -= 1


def _unsupported(model: Any, what: str) -> ReadError:
    return ReadError(
        f"{what} is not part of the cellframe language",
        line=getattr(model, "start_line", None),
        column=getattr(model, "start_column", None),
    )


def _checked_name(value: Symbol | Keyword, model: Any) -> Any:
    """Return ``value`` if the lark reader could read its name back, else refuse it."""
    try:
        write(value)
    except LanguageError:
        raise _unsupported(model, f"the name {str(model)!r}") from None
    return value


def _source(model: Any, lines: list[str]) -> str:
    """The text of a one-line ``model`` (an atom) in the source, from its position."""
    try:
        return lines[model.start_line - 1][model.start_column - 1:model.end_column]
    except (AttributeError, IndexError, TypeError):
        return ""


def _number(model: Any, lines: list[str]) -> Any:
    """A Hy number as cellframe data; a literal too long or out of range is a ReadError that
    says so (Hy reads a decimal integer past Python's 4,300 digits as an infinite float)."""
    if type(model) is hy.models.Integer:
        value = int(model)
        if abs(value) >= _TOO_MANY_DIGITS:  # hex, octal or binary can get here
            raise _unsupported(model, f"an integer of more than {_MAX_DIGITS} digits")
        return value
    if math.isfinite(model):
        return float(model)
    text = _source(model, lines)
    if _DECIMAL.fullmatch(text):
        digits = sum(char.isdigit() for char in text)
        raise _unsupported(model, f"an integer literal of {digits} digits (more than "
                                  f"{_MAX_DIGITS})")
    if text[:1].isdigit() or text[:2].lstrip("+-.")[:1].isdigit():
        raise _unsupported(model, f"the float literal {text[:40]!r}, out of range,")
    raise _unsupported(model, "an infinite or NaN float")


def _convert(model: Any, lines: list[str]) -> Any:
    """Turn one Hy model into cellframe data, refusing what the language cannot express."""
    kind = type(model)
    if kind is hy.models.Expression:
        items = [_convert(item, lines) for item in model]
        if items and type(items[0]) is Symbol and items[0].name in _HY_ONLY:
            raise _unsupported(model, f"Hy's {items[0].name!r} form")
        return items
    if kind is hy.models.List:  # [a b] evaluates its items in Hy: (list a b) does so here
        return [_LIST, *(_convert(item, lines) for item in model)]
    if kind is hy.models.Symbol:
        name = str(model)
        if name in _CONSTANTS:
            return _CONSTANTS[name]
        return _checked_name(Symbol(name), model)
    if kind is hy.models.Keyword:
        return _checked_name(Keyword(model.name), model)
    if kind is hy.models.String:
        return str(model)
    if kind is hy.models.Integer or kind is hy.models.Float:
        return _number(model, lines)
    raise _unsupported(model, f"a Hy {kind.__name__}")


def _read_models(text: str, max_depth: int) -> list[Any]:
    try:
        return list(hy.read_many(text, filename="<hy>", reader=_BoundedReader(max_depth)))
    except _TooDeep as exc:
        raise InputTooLargeError(f"nesting deeper than {max_depth}", line=exc.lineno,
                                 column=exc.offset) from None
    except RecursionError:
        raise InputTooLargeError("Hy input nested too deeply") from None
    except Exception as exc:  # Hy raises its own tree, SyntaxError subclasses and ValueError
        reason = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
        line, offset = getattr(exc, "lineno", None), getattr(exc, "offset", None)
        raise ReadError(f"Hy could not read it: {reason}", line=line, column=offset) from None


def read_hy(
    text: str | bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Read exactly one Hy expression into the same data the lark reader produces."""
    source = decode_source(text, max_bytes)
    check_nesting(source, max_depth, scan=_SCAN, marks="([{'`~")
    models = _read_models(source, max_depth)
    if len(models) != 1:
        found = "nothing" if not models else f"{len(models)} expressions"
        raise ReadError(f"expected exactly one Hy expression, found {found}")
    try:
        return _convert(models[0], source.splitlines())
    except RecursionError:  # pragma: no cover - the depth check keeps this far away
        raise InputTooLargeError("Hy expression nested too deeply") from None


def hy_to_text(
    text: str | bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> str:
    """Return the canonical lark text of one Hy expression, as the wire carries it."""
    return write(read_hy(text, max_bytes=max_bytes, max_depth=max_depth))
