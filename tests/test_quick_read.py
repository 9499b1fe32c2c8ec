"""The reader's quick path reads every input exactly as lark does, or leaves it to lark."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellframe.errors import LanguageError
from cellframe.language import reader as reader_module
from cellframe.language._quick_read import DEFER
from cellframe.language.printer import write
from cellframe.language.symbols import Keyword, Symbol
from tests.language_support import language_texts, values

LIMITS = reader_module.DEFAULT_MAX_BYTES, reader_module.DEFAULT_MAX_DEPTH
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _typed(value: Any) -> Any:
    """``value`` with every atom's type spelt out: ``1``, ``1.0`` and ``True`` differ."""
    if isinstance(value, list):
        return [_typed(item) for item in value]
    return type(value).__name__, repr(value)


def _outcome(text: str, *, quick: bool, compiled: bool = True) -> Any:
    try:
        return "data", _typed(reader_module._parse(text, "start", *LIMITS, compiled, quick))
    except LanguageError as error:
        return "error", type(error).__name__, str(error)


def _messages() -> st.SearchStrategy[str]:
    """Texts shaped like control messages, with whitespace and comments where lark allows."""
    gaps = st.sampled_from(["", " ", "  ", "\n", "\t", " ; note\n", "\r\n", "\f"])
    lists = st.lists(values(), max_size=6)
    return st.builds(lambda before, items, after: before + write(items) + after,
                     gaps, lists, gaps)


@settings(FUZZ, max_examples=1500)
@given(st.one_of(language_texts(), _messages(), st.builds(write, values()),
                 st.text(max_size=40)))
def test_the_quick_path_reads_and_refuses_exactly_as_lark(text: str) -> None:
    assert _outcome(text, quick=True) == _outcome(text, quick=False)


@pytest.mark.skipif(reader_module.lark_cython is None,
                    reason="lark-cython is not installed on this platform")
@settings(FUZZ, max_examples=300)
@given(st.one_of(language_texts(), _messages()))
def test_the_quick_path_built_from_pure_lark_reads_as_pure_lark(text: str) -> None:
    assert _outcome(text, quick=True, compiled=False) == _outcome(text, quick=False,
                                                                   compiled=False)


@pytest.mark.parametrize("text, expected", [
    ('(set-weight "web-1" 5)', [Symbol("set-weight"), "web-1", 5]),
    ("(a (b 1.5) () :k nil true false)",
     [Symbol("a"), [Symbol("b"), 1.5], [], Keyword("k"), None, True, False]),
    ('  "esc\\"aped\\n" ; trailing comment', 'esc"aped\n'),
    ("nil", None),
    ("-7", -7),
])
def test_the_quick_path_reads_lists_and_atoms_itself(text: str, expected: Any) -> None:
    value = reader_module._quick_read()(text)
    assert value is not DEFER
    assert _typed(value) == _typed(expected)


@pytest.mark.parametrize("text", [
    "'x",                    # a quote: lark builds (quote x)
    "(a 'b)",
    "(a b",                  # not closed
    "(a))",                  # closed once too often
    ")",
    "a b",                   # two expressions
    "(a) (b)",
    "",                      # nothing
    " ; only a comment",
    '(a "bad \\q escape")',  # refused by the converter
    "(a \u00a0)",            # no terminal matches a no-break space
    "(5x)",
])
def test_the_quick_path_defers_anything_else_to_lark(text: str) -> None:
    assert reader_module._quick_read()(text) is DEFER


def test_every_error_still_comes_from_lark_with_its_caret() -> None:
    with pytest.raises(LanguageError) as raised:
        reader_module.read("(set-weight 1 \"x)")
    assert "unterminated string" in str(raised.value)
    assert "^" in str(raised.value)
