"""The ``(node-status ...)`` reply: a node's status as an s-expression of one fixed shape, and
back, so that any reader (the CLI, the REPL, a script in another language) gets the same
structure without guessing.

The shape, for every value at any depth:

* a mapping is a property list ``(:key value ...)``, each key written as a keyword exactly as
  it is (``:started_at``, ``:dead_lettered``);
* a sequence is a quoted list ``'(value ...)``, i.e. ``(quote (value ...))``;
* anything else is an atom: a string, a number, true, false or nil.

So ``()`` is an empty mapping and ``'()`` an empty sequence, and a list of mappings is a quoted
list of property lists. A reply reads::

    (node-status :node "web-01" :role "web" :started_at 1700000000.5 :diagnostic false
                 :counters (:delivered 3 :rejected 0 :unroutable 0 :sent 5)
                 :cells '((:name "web-01" :class "WebCell" :role "web" :state "serving"
                           :counters (:received 3 ...) :verbs '("pool-hello" "serve" "tick")
                           ...)))

``decode_status(status_reply(status))`` gives ``status`` back, with tuples as lists, for every
status the language can write. What it cannot (a cell whose total passed 4,300 digits or
reached infinity, a key with a space, a set) is shown rather than sent as it is: one such value
anywhere made the whole reply unwritable, and the node fell silent to every ``(status)`` for
good. An atom the printer refuses becomes the string ``"unwritable: WHY"``, and a key that no
keyword can carry becomes its text with each character no keyword holds replaced by ``_``. Every
status has a ``node`` (str), ``counters`` (a mapping) and ``cells``: a sequence of mappings,
each with a ``name`` and a ``state`` (str) and ``counters`` (a mapping); what else a cell's
snapshot holds is up to its class.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import LanguageError
from ..language.printer import write
from ..language.symbols import Keyword, Symbol

__all__ = ["STATUS_VERB", "decode_status", "status_reply"]

#: The head of the reply to ``(status)``.
STATUS_VERB = Symbol("node-status")
_QUOTE = Symbol("quote")
#: A character no keyword holds (the grammar's KEYWORD, after its colon).
_NOT_IN_KEYWORD = re.compile(r"[^\w!$%&*+\-./<=>?@^~|:#]")
#: Integers this small are always written; larger ones are tried.
_SMALL_INT = 2**63


def status_reply(status: Mapping[str, Any]) -> list[Any]:
    """``(node-status :key value ...)`` for the status mapping ``status``."""
    return [STATUS_VERB, *_mapping(status)]


def decode_status(expr: Any) -> dict[str, Any]:
    """The status mapping a ``(node-status ...)`` reply carries; LanguageError if ``expr`` is
    not of that shape (saying where)."""
    if not isinstance(expr, list) or not expr or expr[0] != STATUS_VERB:
        raise LanguageError(f"not a (node-status ...) reply: {str(expr)[:60]}")
    status = _read_mapping(expr[1:], "node-status")
    _require(status, "node-status", node=str, counters=dict, cells=list)
    for index, cell in enumerate(status["cells"]):
        where = f"node-status :cells[{index}]"
        if not isinstance(cell, dict):
            raise LanguageError(f"{where}: a cell's snapshot must be a mapping")
        _require(cell, where, name=str, state=str, counters=dict)
    return status


def _require(mapping: dict[str, Any], where: str, **kinds: type) -> None:
    for key, kind in kinds.items():
        if not isinstance(mapping.get(key), kind):
            raise LanguageError(f"{where}: :{key} must be a {kind.__name__}, "
                                f"not {mapping.get(key)!r}")


def _mapping(mapping: Mapping[Any, Any]) -> list[Any]:
    items: list[Any] = []
    for key, value in mapping.items():
        items += [_keyword(key), _value(value)]
    return items


def _keyword(key: Any) -> Keyword:
    """The keyword of a status key: the key itself when a keyword can carry it."""
    text = key if isinstance(key, str) else str(key)
    if not text or _NOT_IN_KEYWORD.search(text):
        text = _NOT_IN_KEYWORD.sub("_", text) or "_"
    return Keyword(text)


def _value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _mapping(value)
    if isinstance(value, list | tuple):
        return [_QUOTE, [_value(v) for v in value]]
    return _atom(value)


def _atom(value: Any) -> Any:
    """``value`` if the printer writes it, else a string saying why not."""
    kind = type(value)
    if kind is str or kind is bool or value is None or (kind is int and -_SMALL_INT < value < _SMALL_INT):
        return value  # nearly every value of a status: no need to try
    try:
        write(value)
    except LanguageError as error:
        return f"unwritable: {error}"
    return value


def _read_mapping(items: list[Any], where: str) -> dict[str, Any]:
    if len(items) % 2:
        raise LanguageError(f"{where}: a mapping needs :key value pairs, got {len(items)} items")
    result: dict[str, Any] = {}
    for key, value in zip(items[::2], items[1::2], strict=True):
        if not isinstance(key, Keyword):
            raise LanguageError(f"{where}: a mapping key must be a keyword, not {key!r}")
        result[key.name] = _read_value(value, f"{where} :{key.name}")
    return result


def _read_value(value: Any, where: str) -> Any:
    if not isinstance(value, list):
        return value
    if len(value) == 2 and value[0] == _QUOTE and isinstance(value[1], list):
        return [_read_value(v, f"{where}[{i}]") for i, v in enumerate(value[1])]
    return _read_mapping(value, where)
