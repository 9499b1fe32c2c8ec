"""Property lists: how structured data (a dict) is written in the language: ``(:key value ...)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import LanguageError
from .symbols import Keyword

__all__ = ["from_plist", "to_plist"]


def to_plist(mapping: Mapping[str, Any]) -> list[Any]:
    """``{"a_b": 1, "c": {...}}`` as ``[:a-b 1 :c (...)]``; nested dicts and lists recurse."""
    out: list[Any] = []
    for key, value in mapping.items():
        out.append(Keyword(key.replace("_", "-")))
        out.append(_convert(value))
    return out


def _convert(value: Any) -> Any:
    if isinstance(value, Mapping):
        return to_plist(value)
    if isinstance(value, list | tuple):
        return [_convert(v) for v in value]
    return value


def from_plist(items: list[Any]) -> dict[str, Any]:
    """The inverse of ``to_plist`` for one level: keyword names become keys (``-`` kept)."""
    if not isinstance(items, list) or len(items) % 2:
        raise LanguageError(f"a property list needs :key value pairs, got {items!r}")
    result: dict[str, Any] = {}
    for key, value in zip(items[::2], items[1::2], strict=True):
        if not isinstance(key, Keyword):
            raise LanguageError(f"property list key {key!r} is not a keyword")
        result[key.name] = value
    return result
