"""Hypothesis strategies for the control language: values, texts, expressions and verb tables.

Reusable by any test that needs language data: ``values()`` gives data that ``write`` can
print and ``read`` gives back equal; ``expressions()`` gives forms to evaluate (valid or not);
``verb_tables()`` gives verbs that behave well, raise, or take keywords.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from cellframe.errors import ClusterError, EvaluationError
from cellframe.language.evaluator import BUILTIN_NAMES, SPECIAL_FORM_NAMES
from cellframe.language.symbols import Keyword, Symbol

__all__ = [
    "LANGUAGE_ALPHABET",
    "atoms",
    "expressions",
    "keywords",
    "language_texts",
    "symbols",
    "unicode_strings",
    "values",
    "verb_tables",
]

_MARKS = "!$%&*+-./<=>?@^_~|"
_START = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZéλ" + _MARKS)
_REST = st.text(st.sampled_from("abcxyz0123456789éλ:#" + _MARKS), max_size=8)
_NUMBER_LIKE = re.compile(r"[-+]?\.?[0-9]")


def _symbol_name(start: str, rest: str) -> str | None:
    name = start + rest
    if _NUMBER_LIKE.match(name) or name in ("true", "false", "nil"):
        return None
    return name


def symbols() -> st.SearchStrategy[Symbol]:
    """Symbols whose names the reader reads back as symbols."""
    names = st.builds(_symbol_name, _START, _REST).filter(lambda name: name is not None)
    return names.map(Symbol)


def keywords() -> st.SearchStrategy[Keyword]:
    """Keywords with names the reader accepts after ':'."""
    names = st.text(st.sampled_from("abcxyz0123456789-_?!:#"), min_size=1, max_size=10)
    return names.map(Keyword)


def unicode_strings(max_size: int = 40) -> st.SearchStrategy[str]:
    """Any text, control characters and lone surrogates included."""
    return st.text(st.characters(exclude_categories=()), max_size=max_size)


def atoms() -> st.SearchStrategy[Any]:
    """Every kind of atom of the data model."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        unicode_strings(),
        symbols(),
        keywords(),
    )


def values(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    """Atoms and nested lists of them: exactly what ``read`` can produce."""
    return st.recursive(atoms(), lambda inner: st.lists(inner, max_size=6), max_leaves=max_leaves)


LANGUAGE_ALPHABET = "()'\";:\\ \n\t-+.0123456789eEabnrtuxfls#\x00é"


def language_texts(max_size: int = 60) -> st.SearchStrategy[str]:
    """Text made mostly of the language's own characters: likely to reach deep reader paths."""
    return st.text(st.sampled_from(LANGUAGE_ALPHABET), max_size=max_size)


def expressions(verb_names: tuple[str, ...] | None = None) -> st.SearchStrategy[Any]:
    """Forms built from special forms, built-ins, verbs, literals and symbols, valid or not."""
    verbs = sorted(_VERBS) if verb_names is None else list(verb_names)
    heads = st.sampled_from(
        sorted(SPECIAL_FORM_NAMES) + sorted(BUILTIN_NAMES) + verbs + ["nope"]
    ).map(Symbol)
    names = st.sampled_from(["x", "y", "z", "unbound"]).map(Symbol)
    leaves = st.one_of(atoms(), names)

    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        form = st.builds(lambda head, args: [head, *args], heads, st.lists(inner, max_size=4))
        binding = st.lists(st.tuples(names, inner).map(list), max_size=3)
        let = st.builds(lambda b, body: [Symbol("let"), b, *body], binding,
                        st.lists(inner, max_size=2))
        quoted = inner.map(lambda value: [Symbol("quote"), value])
        with_keyword = st.builds(lambda head, kw, value: [head, kw, value],
                                 heads, keywords(), inner)
        return st.one_of(form, let, quoted, with_keyword, st.lists(inner, max_size=3))

    return st.recursive(leaves, extend, max_leaves=25)


def _echo(*args: Any, **kwargs: Any) -> list[Any]:
    return [*args, *kwargs.values()]


def _status() -> dict[str, Any]:
    return {"weight": 5, "state": "up"}


def _boom(*args: Any) -> None:
    raise ClusterError("boom: the cluster refused")


def _strict(name: str, weight: int, *, reason: str = "") -> int:
    if not isinstance(weight, int):
        raise EvaluationError("strict: weight must be an integer")
    return weight


def _buggy(*args: Any) -> Any:
    return {}[args]  # a KeyError (or TypeError for unhashable args) from inside the verb


_VERBS: dict[str, Callable[..., Any]] = {
    "set-weight": lambda name, weight, *, reason=None: weight,
    "status": _status,
    "boom": _boom,
    "strict": _strict,
    "echo": _echo,
    "buggy": _buggy,
}


def verb_tables() -> st.SearchStrategy[dict[str, Callable[..., Any]]]:
    """Random subsets of verbs that return values, raise CellframeErrors or have bugs."""
    return st.dictionaries(st.sampled_from(sorted(_VERBS)), st.just(None), max_size=6).map(
        lambda chosen: {name: _VERBS[name] for name in chosen}
    )
