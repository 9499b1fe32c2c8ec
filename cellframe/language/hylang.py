"""Hy as a second way to write control expressions: read with ``hy.read``, never evaluated.

``read_hy`` turns Hy text into exactly the data the lark reader gives for the same expression,
so ``read_hy('(set-weight "web-01" 5 :reason "load")') == read('(set-weight "web-01" 5 :reason
"load")')``; ``hy_to_text`` turns it into the canonical lark text the wire carries. ``hy.eval``
is never called: it cannot be sandboxed (every compiled form imports ``hy``, and ``os`` is
reachable from there).

``hy.read`` costs about the cube of the nesting depth (depth 100: 0.5 s, 200: 5 s), so size
and depth are checked before Hy sees the text. A fresh ``HyReader`` is used for every call,
so no reader macro defined elsewhere can run.
"""

from __future__ import annotations

import math
import re
from typing import Any

import hy
import hy.models

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


def _convert(model: Any) -> Any:
    """Turn one Hy model into cellframe data, refusing what the language cannot express."""
    kind = type(model)
    if kind is hy.models.Expression:
        items = [_convert(item) for item in model]
        if items and type(items[0]) is Symbol and items[0].name in _HY_ONLY:
            raise _unsupported(model, f"Hy's {items[0].name!r} form")
        return items
    if kind is hy.models.List:  # [a b] evaluates its items in Hy: (list a b) does so here
        return [_LIST, *(_convert(item) for item in model)]
    if kind is hy.models.Symbol:
        name = str(model)
        if name in _CONSTANTS:
            return _CONSTANTS[name]
        return _checked_name(Symbol(name), model)
    if kind is hy.models.Keyword:
        return _checked_name(Keyword(model.name), model)
    if kind is hy.models.String:
        return str(model)
    if kind is hy.models.Integer:
        return int(model)
    if kind is hy.models.Float:
        if math.isfinite(model):
            return float(model)
        raise _unsupported(model, "an infinite or NaN float")
    raise _unsupported(model, f"a Hy {kind.__name__}")


def _read_models(text: str) -> list[Any]:
    try:
        return list(hy.read_many(text, filename="<hy>", reader=hy.HyReader()))
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
    models = _read_models(source)
    if len(models) != 1:
        found = "nothing" if not models else f"{len(models)} expressions"
        raise ReadError(f"expected exactly one Hy expression, found {found}")
    try:
        return _convert(models[0])
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
