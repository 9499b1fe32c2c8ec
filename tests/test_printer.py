"""The printer: canonical text that reads back equal, and refusal of what the language lacks."""

from __future__ import annotations

import enum
import math

import pytest
from hypothesis import given, settings

from cellframe.errors import LanguageError
from cellframe.language.printer import write, write_bounded
from cellframe.language.reader import read
from cellframe.language.symbols import Keyword, Symbol
from tests.language_support import symbols, unicode_strings, values


@settings(deadline=None, max_examples=600)
@given(values())
def test_every_value_reads_back_equal_from_its_text(value: object) -> None:
    assert read(write(value)) == value


@settings(deadline=None, max_examples=300)
@given(unicode_strings(max_size=200))
def test_any_string_round_trips_and_its_text_is_valid_utf8(text: str) -> None:
    written = write(text)
    written.encode("utf-8")  # lone surrogates were escaped, so this cannot fail
    assert read(written) == text


@settings(deadline=None, max_examples=300)
@given(symbols())
def test_generated_symbols_are_written_bare(symbol: Symbol) -> None:
    assert write(symbol) == symbol.name


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ([Symbol("set-weight"), "web-01", 5, Keyword("reason"), "load"],
         '(set-weight "web-01" 5 :reason "load")'),
        ([], "()"),
        (None, "nil"),
        (True, "true"),
        (False, "false"),
        (1e16, "1e+16"),
        (0.1, "0.1"),
        (-0.0, "-0.0"),
        ([Symbol("quote"), Symbol("x")], "'x"),
        ([Symbol("quote")], "(quote)"),
        ('say "hi"\\', '"say \\"hi\\"\\\\"'),
        ("tab\tnl\ncr\r", '"tab\\tnl\\ncr\\r"'),
        ("\x00\x7f\u2028", '"\\u0000\\u007f\\u2028"'),
        ("\ud800", '"\\ud800"'),
        ("é😀", '"é😀"'),
    ],
)
def test_canonical_text_of_values(value: object, text: str) -> None:
    assert write(value) == text


def test_floats_round_trip_exactly() -> None:
    for number in (0.1 + 0.2, 1 / 3, 2.0**-1074, 1.7976931348623157e308, 123456789.0):
        assert read(write(number)) == number
        assert type(read(write(number))) is float


def test_large_integers_round_trip() -> None:
    number = 7**1500
    assert read(write(number)) == number
    assert read(write(-number)) == -number


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused(number: float) -> None:
    with pytest.raises(LanguageError, match="no NaN or inf"):
        write([1, number])


@pytest.mark.parametrize(
    "value",
    [(1, 2), {"a": 1}, {1}, b"bytes", object(), print, 1j, Symbol("true"), Symbol("5"),
     Symbol("a b"), Symbol(""), Symbol("+.5"), Symbol("-1"), Symbol(".5"), Symbol("nil"),
     Keyword(""), Keyword("a b"), 10**5000],
    ids=lambda value: type(value).__name__,
)
def test_what_the_language_cannot_express_is_refused(value: object) -> None:
    with pytest.raises(LanguageError):
        write(value)
    with pytest.raises(LanguageError):
        write([Symbol("f"), value])


def test_a_list_that_contains_itself_is_refused() -> None:
    loop: list[object] = [1]
    loop.append(loop)
    with pytest.raises(LanguageError, match="contains itself"):
        write(loop)
    quoted: list[object] = [Symbol("quote"), None]
    quoted[1] = quoted
    with pytest.raises(LanguageError, match="contains itself"):
        write(quoted)


def test_a_list_shared_but_not_nested_in_itself_is_written() -> None:
    shared = [1]
    assert write([shared, [shared], shared]) == "((1) ((1)) (1))"


def test_the_string_of_one_space_is_written_quoted() -> None:
    assert write([" ", " "]) == '(" " " ")'


def test_subclasses_of_data_types_write_as_their_base_type() -> None:
    class Level(enum.IntEnum):
        HIGH = 3

    class Name(str):
        pass

    assert write([Level.HIGH, Name("x")]) == '(3 "x")'


def test_write_bounded_stops_at_the_limit() -> None:
    assert write_bounded([1, 2, 3], 7) == "(1 2 3)"
    assert write_bounded([1, 2, 3], 6) is None
    shared = ["x" * 1000]
    for _ in range(30):  # 2**30 leaves if written in full
        shared = [shared, shared]
    assert write_bounded(shared, 10_000) is None
