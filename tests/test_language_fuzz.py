"""Fuzzing the language: no input, however hostile, gets anything but a cellframe error out.

About 8,000 generated inputs in all: random text and bytes into the readers, mutated valid
texts, random expressions against random verb tables, plus deep, huge and long inputs.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellframe.errors import CellframeError, InputTooLargeError, LanguageError
from cellframe.language import reader as reader_module
from cellframe.language.evaluator import Evaluator, read_eval
from cellframe.language.hylang import read_hy
from cellframe.language.printer import write
from cellframe.language.reader import read, read_all
from cellframe.language.symbols import Symbol
from tests.language_support import expressions, language_texts, values, verb_tables

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _read_or_language_error(text: str | bytes) -> None:
    try:
        value = read(text)
    except LanguageError:
        return
    assert read(write(value)) == value  # whatever reads, writes back to the same data


@settings(FUZZ, max_examples=1500)
@given(st.text())
def test_random_text_reads_or_is_a_language_error(text: str) -> None:
    _read_or_language_error(text)


@settings(FUZZ, max_examples=1500)
@given(language_texts())
def test_text_of_language_characters_reads_or_is_a_language_error(text: str) -> None:
    _read_or_language_error(text)
    try:
        read_all(text)
    except LanguageError:
        pass


@settings(FUZZ, max_examples=800)
@given(st.binary(max_size=80))
def test_random_bytes_read_or_are_a_language_error(data: bytes) -> None:
    _read_or_language_error(data)


@st.composite
def _mutated_texts(draw: st.DrawFn) -> str:
    text = write(draw(values(max_leaves=10)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.sampled_from("()'\"\\;: x1.-\n"))
        if action == "insert":
            text = text[:at] + char + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + 1:]
        else:
            text = text[:at] + char + text[at + 1:]
    return text


@settings(FUZZ, max_examples=400)
@given(_mutated_texts())
def test_mutated_valid_text_reads_or_is_a_language_error(text: str) -> None:
    _read_or_language_error(text)


def _evaluate_or_cellframe_error(expr: Any, verbs: dict[str, Any]) -> None:
    evaluator = Evaluator(max_steps=500, max_depth=32)
    try:
        evaluator.evaluate(expr, verbs, bindings={"x": 1, "y": [1, "a"], "z": {"k": 2}})
    except CellframeError:
        pass


@settings(FUZZ, max_examples=1000)
@given(expressions(), verb_tables())
def test_random_expressions_evaluate_or_raise_a_cellframe_error(
    expr: Any, verbs: dict[str, Any]
) -> None:
    _evaluate_or_cellframe_error(expr, verbs)


@settings(FUZZ, max_examples=600)
@given(language_texts(max_size=80), verb_tables())
def test_random_text_read_and_evaluated_raises_only_cellframe_errors(
    text: str, verbs: dict[str, Any]
) -> None:
    try:
        read_eval("(do " + text + ")", verbs)
    except CellframeError:
        pass


@settings(FUZZ, max_examples=250)
@given(st.one_of(st.text(max_size=60), language_texts(max_size=60)))
def test_random_text_into_the_hy_reader_is_a_read_or_a_language_error(text: str) -> None:
    try:
        read_hy(text)
    except LanguageError:
        pass


def test_deep_nesting_is_refused_quickly() -> None:
    started = time.monotonic()
    for text in ("(" * 60_000, "'" * 60_000 + "x", "(" * 30_000 + ")" * 30_000):
        with pytest.raises(InputTooLargeError):
            read(text)
        with pytest.raises(InputTooLargeError):
            read_hy(text, max_bytes=100_000)
    assert time.monotonic() - started < 5


def test_deep_nesting_within_a_raised_limit_reads_writes_and_evaluates() -> None:
    depth = 5_000
    value = read("(" * depth + ")" * depth, max_depth=depth)
    assert write(value) == "(" * depth + ")" * depth
    quoted = read("'" + "(" * 100 + ")" * 100)
    assert len(write(Evaluator().evaluate(quoted))) == 200


def test_huge_input_is_refused_before_any_parsing() -> None:
    started = time.monotonic()
    with pytest.raises(InputTooLargeError):
        read("(" + "x " * 10_000_000 + ")")
    with pytest.raises(InputTooLargeError):
        read_hy("(" + "x " * 10_000_000 + ")")
    assert time.monotonic() - started < 5


def test_long_strings_read_and_round_trip() -> None:
    text = "é\"\\\n\x00" * 200_000
    written = write([Symbol("say"), text])
    assert read(written, max_bytes=4_000_000) == [Symbol("say"), text]
    with pytest.raises(InputTooLargeError):
        read(written)


def test_an_unterminated_long_string_is_a_read_error() -> None:
    with pytest.raises(LanguageError, match="unterminated string"):
        read('(f "' + "x" * 60_000)


def test_many_elements_in_one_list() -> None:
    items = read("(" + "1 " * 30_000 + ")")
    assert len(items) == 30_000
    with pytest.raises(CellframeError):
        Evaluator().evaluate([Symbol("list"), *items])  # 30,001 steps: over the budget


def _outcome(text: str, *, compiled: bool) -> Any:
    limits = reader_module.DEFAULT_MAX_BYTES, reader_module.DEFAULT_MAX_DEPTH
    try:
        return ("data", reader_module._parse(text, "start", *limits, compiled))
    except LanguageError as error:
        return ("error", type(error).__name__, str(error))


@pytest.mark.skipif(reader_module.lark_cython is None,
                    reason="lark-cython is not installed on this platform")
@settings(FUZZ, max_examples=800)
@given(st.one_of(language_texts(), st.builds(write, values()), st.text(max_size=40)))
def test_the_compiled_parser_reads_and_refuses_exactly_as_pure_lark(text: str) -> None:
    assert _outcome(text, compiled=True) == _outcome(text, compiled=False)
