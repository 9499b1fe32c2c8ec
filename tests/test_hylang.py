"""Hy as input syntax: the same data as the lark reader, limits before hy.read, never hy.eval."""

from __future__ import annotations

import hy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe.errors import InputTooLargeError, ReadError
from cellframe.language.hylang import hy_to_text, read_hy
from cellframe.language.printer import write
from cellframe.language.reader import read
from cellframe.language.symbols import Keyword, Symbol
from tests.language_support import unicode_strings


@pytest.mark.parametrize(
    "text",
    [
        '(set-weight "web-01" 5 :reason "load")',
        "(if (> (count nodes) 3) (drain \"web-02\") nil)",
        "'(a b)",
        "()",
        "(f -3 1.5 1e+16 true false nil)",
        '(f "tab\\tquote\\"\\u00e9")',
        "(let ((x 1) (y 2)) (+ x y))",
    ],
)
def test_hy_text_reads_as_the_same_data_as_lark_text(text: str) -> None:
    assert read_hy(text) == read(text)


def test_hy_constants_read_as_python_constants() -> None:
    assert read_hy("(f True False None)") == [Symbol("f"), True, False, None]


def test_hy_brackets_read_as_a_list_form() -> None:
    assert read_hy("(set-weights [1 2])") == read("(set-weights (list 1 2))")


def test_hy_to_text_gives_canonical_lark_text() -> None:
    assert hy_to_text('(set-weight "web-01" 5 :reason "load")') == (
        '(set-weight "web-01" 5 :reason "load")'
    )
    assert hy_to_text("(f [1 2] True None 0x10 1_000)") == "(f (list 1 2) true nil 16 1000)"


_HY_SYMBOLS = st.from_regex(r"[a-z][a-z0-9?!*+<>=-]{0,8}", fullmatch=True).filter(
    lambda name: name not in ("true", "false", "nil")
).map(Symbol)
_HY_ATOMS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    unicode_strings(), _HY_SYMBOLS,
    st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True).map(Keyword),
)


@settings(deadline=None, max_examples=300)
@given(st.recursive(_HY_ATOMS, lambda inner: st.lists(inner, max_size=5), max_leaves=20))
def test_canonical_text_of_simple_values_reads_the_same_in_hy(value: object) -> None:
    assert read_hy(write(value), max_depth=64) == value


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a.b", "Hy's '.' form"),
        ("(f #* args)", "'unpack-iterable'"),
        ("`(a b)", "'quasiquote'"),
        ("(a ~b)", "'unquote'"),
        ("#{1 2}", "a Hy Set"),
        ("{:a 1}", "a Hy Dict"),
        ("#(1 2)", "a Hy Tuple"),
        ('b"bytes"', "a Hy Bytes"),
        ('f"x{y}"', "a Hy FString"),
        ("1j", "a Hy Complex"),
        ("NaN", "infinite or NaN"),
        ("(f a,b)", "the name 'a,b'"),
        ("(f", "Hy could not read it"),
        ("#foo x", "Hy could not read it"),
        ("(a) (b)", "found 2 expressions"),
        ("; nothing", "found nothing"),
    ],
)
def test_unsupported_hy_is_a_read_error(text: str, reason: str) -> None:
    with pytest.raises(ReadError) as caught:
        read_hy(text)
    assert reason in str(caught.value)
    assert type(caught.value) is ReadError


def test_a_hy_error_keeps_its_position() -> None:
    with pytest.raises(ReadError) as caught:
        read_hy('(f\n  "ab\\q")')
    assert caught.value.line == 2


def _hy_must_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("hy.read_many was reached")

    monkeypatch.setattr(hy, "read_many", refuse)


def test_size_is_checked_before_hy_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    _hy_must_not_run(monkeypatch)
    with pytest.raises(InputTooLargeError, match="over the 8192 limit"):
        read_hy("(f " + "1 " * 5000 + ")")


def test_depth_is_checked_before_hy_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    _hy_must_not_run(monkeypatch)
    for text in ("(" * 33 + ")" * 33, "[" * 33 + "]" * 33, "'" * 33 + "x", "{" * 40):
        with pytest.raises(InputTooLargeError, match="nesting deeper than 32"):
            read_hy(text)


def test_nesting_at_the_limit_is_read() -> None:
    assert read_hy("(" * 32 + ")" * 32) is not None


def test_hy_eval_is_never_called(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("hy.eval was called")

    monkeypatch.setattr(hy, "eval", refuse)
    assert read_hy("(import os)") == [Symbol("import"), Symbol("os")]
    with pytest.raises(ReadError):
        read_hy('(os.system "true")')
