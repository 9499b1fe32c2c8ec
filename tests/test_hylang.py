"""Hy as input syntax: the same data as the lark reader, limits before hy.read, never hy.eval."""

from __future__ import annotations

import re
import time

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


# -- what Hy parses as code inside strings is depth-checked too (issue 21, item 5) -------------

_WRAPPERS = {  # each nests a form one level deeper (at ``level``), the way Hy reads it
    "list": lambda inner, level: f"({inner})",
    "brackets": lambda inner, level: f"[{inner}]",
    "quote": lambda inner, level: f"'{inner}",
    "f-string": lambda inner, level: f'f"{{{inner}}}"',
    "raw f-string": lambda inner, level: f'rf"{{{inner}}}"',
    "bracketed f-string": lambda inner, level: f"#[f-{level}[{{{inner}}}]f-{level}]",
    "format spec": lambda inner, level: f'f"{{a :{{{inner}}}}}"',
    "discard": lambda inner, level: f"(a #_ {inner} b)",
}


@settings(deadline=None, max_examples=150)
@given(st.lists(st.sampled_from(sorted(_WRAPPERS)), min_size=1, max_size=4),
       st.integers(min_value=34, max_value=400))
def test_nesting_hidden_in_strings_is_refused_before_hy_spends_seconds(kinds: list[str],
                                                                       depth: int) -> None:
    text = "x"
    for level in range(depth):
        text = _WRAPPERS[kinds[level % len(kinds)]](text, level)
    if len(text.encode()) > 8192:
        return
    started = time.thread_time()
    with pytest.raises(InputTooLargeError, match="nesting deeper than 32"):
        read_hy(text)
    assert time.thread_time() - started < 0.5


@settings(deadline=None, max_examples=40)
@given(st.lists(st.sampled_from(sorted(_WRAPPERS)), min_size=1, max_size=4),
       st.integers(min_value=8, max_value=30))
def test_text_within_every_limit_reads_in_time_linear_in_its_size(kinds: list[str],
                                                                   depth: int) -> None:
    chain = "x"
    for level in range(depth):
        chain = _WRAPPERS[kinds[level % len(kinds)]](chain, level)
    text = "(" + " ".join([chain] * max(1, 8000 // (len(chain.encode()) + 1))) + ")"
    if len(text.encode()) > 8192:
        return
    started = time.thread_time()
    try:
        read_hy(text)
    except ReadError:  # f-strings and the like are refused, after Hy read them
        pass
    # 8 KB of 31-deep quote chains took 6 s when Hy rebuilt every form's subtree; 0.15 s now.
    assert time.thread_time() - started < 1.0


@pytest.mark.parametrize("count", [40, 100, 1500])
def test_fields_nested_in_format_specs_are_refused_before_hy_spends_seconds(count: int) -> None:
    text = 'f"{a ' + ":{a " * count + "}" * count + '}"'  # one f-string: 100 took 1.2 s
    started = time.thread_time()
    with pytest.raises(InputTooLargeError, match="nesting deeper than 32"):
        read_hy(text)
    assert time.thread_time() - started < 0.5


def test_the_f_string_of_200_parentheses_is_refused_at_once() -> None:
    text = 'f"{' + "(" * 200 + ")" * 200 + '}"'  # 405 bytes: took 5 to 9 s
    started = time.thread_time()
    with pytest.raises(InputTooLargeError, match="nesting deeper than 32"):
        read_hy(text)
    assert time.thread_time() - started < 0.5


def test_a_shallow_f_string_is_read_by_hy_and_refused_as_hy_only() -> None:
    with pytest.raises(ReadError, match="a Hy FString"):
        read_hy('f"{' + "(" * 20 + ")" * 20 + '}"')


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1" * 8000, "an integer literal of 8000 digits (more than 4300)"),
        ("(f -" + "1" * 4301 + ")", "an integer literal of 4301 digits (more than 4300)"),
        ("1e999", "the float literal '1e999', out of range"),
        ("(f 0x" + "f" * 4000 + ")", "an integer of more than 4300 digits"),
        ("NaN", "an infinite or NaN float"),
    ],
)
def test_numbers_hy_cannot_carry_say_why(text: str, reason: str) -> None:
    with pytest.raises(ReadError, match=re.escape(reason)):
        read_hy(text)


def test_the_longest_integer_the_lark_reader_takes_reads_the_same_in_hy() -> None:
    text = "9" * 4300
    assert read_hy(text) == read(text)
