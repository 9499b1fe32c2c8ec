"""The gate's memo of bodies read: the same data as ``read``, fresh lists every time, bounded."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellframe.errors import InputTooLargeError, LanguageError
from cellframe.language.printer import write
from cellframe.language.read_memo import MEMO_BODY_BYTES, MEMO_ENTRIES, ReadMemo
from cellframe.language.reader import read
from cellframe.language.symbols import Keyword, Symbol
from tests.language_support import language_texts, values

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _typed(value: Any) -> Any:
    """``value`` with every atom's type spelt out: ``1``, ``1.0`` and ``True`` differ."""
    if isinstance(value, list):
        return [_typed(item) for item in value]
    return type(value).__name__, repr(value)


def _outcome(reading: Any, body: bytes) -> Any:
    try:
        return "data", _typed(reading(body))
    except LanguageError as error:
        return "error", type(error).__name__, str(error)


def _lists_in(value: Any) -> list[int]:
    """The ids of every list in ``value``, itself included."""
    if not isinstance(value, list):
        return []
    return [id(value), *(found for item in value for found in _lists_in(item))]


@FUZZ
@given(st.one_of(language_texts(), values().map(write)))
def test_a_body_reads_as_read_reads_it_the_first_time_and_every_time_after(text: str) -> None:
    memo, body = ReadMemo(), text.encode()
    expected = _outcome(read, body)
    assert _outcome(memo.read, body) == expected
    assert _outcome(memo.read, body) == expected


def test_a_repeated_body_comes_with_new_lists_so_a_cell_changing_one_changes_no_other() -> None:
    memo = ReadMemo()
    body = b'(set-weight "web-1" 5 :tags (a (b c)) \'q)'
    first = memo.read(body)
    second = memo.read(body)
    assert first == second == read(body)
    assert not set(_lists_in(first)) & set(_lists_in(second))
    first[0] = Symbol("changed")
    first[4][1].append("more")
    assert memo.read(body) == read(body)
    assert memo.read(body)[3] is Keyword("tags")


def test_a_body_that_does_not_read_is_refused_every_time_and_not_remembered() -> None:
    memo = ReadMemo()
    for _ in range(3):
        with pytest.raises(LanguageError, match="not closed"):
            memo.read(b"(add 1")
    assert len(memo) == 0


def test_the_size_limit_is_the_one_the_memo_was_made_with() -> None:
    memo = ReadMemo(max_bytes=8)
    with pytest.raises(InputTooLargeError):
        memo.read(b"(add 1 2 3)")
    assert ReadMemo(max_bytes=64).read(b"(add 1 2 3)") == [Symbol("add"), 1, 2, 3]


def test_the_memo_stays_bounded_by_entries_and_by_body_size() -> None:
    memo = ReadMemo()
    for n in range(MEMO_ENTRIES * 3):
        assert memo.read(f"(seq {n})".encode()) == [Symbol("seq"), n]
        assert len(memo) <= MEMO_ENTRIES
    long_body = write([Symbol("pad"), "x" * MEMO_BODY_BYTES]).encode()
    memo = ReadMemo()
    assert memo.read(long_body) == memo.read(long_body) == read(long_body)
    assert len(memo) == 0


def test_an_atom_body_is_read_as_itself() -> None:
    memo = ReadMemo()
    assert memo.read(b"42") == memo.read(b"42") == 42
    assert memo.read(b"nil") is None and memo.read(b"nil") is None
