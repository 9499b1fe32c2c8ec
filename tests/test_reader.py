"""The reader: text to data, exactly one expression, errors with positions, limits before lark."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import cellframe.language.reader as reader_module
from cellframe.errors import InputTooLargeError, LanguageError, ReadError
from cellframe.language.grammar import grammar_text
from cellframe.language.reader import locate, read, read_all
from cellframe.language.symbols import Keyword, Symbol

REPO = Path(__file__).resolve().parent.parent
Q = Symbol("quote")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("-7", -7),
        ("+7", 7),
        ("123456789012345678901234567890", 123456789012345678901234567890),
        ("1.5", 1.5),
        ("-0.25", -0.25),
        (".5", 0.5),
        ("1e+16", 1e16),
        ("5e-324", 5e-324),
        ("true", True),
        ("false", False),
        ("nil", None),
        ("web-01", Symbol("web-01")),
        ("set-weight!", Symbol("set-weight!")),
        ("-", Symbol("-")),
        ("->x", Symbol("->x")),
        ("<=", Symbol("<=")),
        ("nil?", Symbol("nil?")),
        ("truex", Symbol("truex")),
        ("λ", Symbol("λ")),
        (":reason", Keyword("reason")),
        (":some-name", Keyword("some-name")),
        ('"web-01"', "web-01"),
        ('""', ""),
    ],
)
def test_each_atom_reads_as_its_python_value(text: str, expected: object) -> None:
    value = read(text)
    assert value == expected
    assert type(value) is type(expected)


def test_a_form_reads_as_a_list_of_its_parts() -> None:
    assert read('(set-weight "web-01" 5 :reason "load")') == [
        Symbol("set-weight"), "web-01", 5, Keyword("reason"), "load",
    ]


def test_empty_list_is_an_empty_python_list_not_nil() -> None:
    assert read("()") == []
    assert read("()") is not None
    assert read("(nil ())") == [None, []]


def test_quote_reads_as_a_quote_form() -> None:
    assert read("'x") == [Q, Symbol("x")]
    assert read("'(a 'b)") == [Q, [Symbol("a"), [Q, Symbol("b")]]]
    assert read("''1") == [Q, [Q, 1]]


def test_a_symbol_never_equals_the_string_of_its_name() -> None:
    assert read("a") != read('"a"')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r'"a\"b"', 'a"b'),
        (r'"a\\b"', "a\\b"),
        (r'"line\nnext"', "line\nnext"),
        (r'"\t\r"', "\t\r"),
        (r'"\u00e9\u0000"', "é\x00"),
        ('"raw\nnewline"', "raw\nnewline"),
    ],
)
def test_string_escapes_are_decoded(text: str, expected: str) -> None:
    assert read(text) == expected


def test_a_bad_escape_is_a_read_error_at_the_backslash() -> None:
    with pytest.raises(ReadError) as caught:
        read('(f\n  "ab\\qc")')
    err = caught.value
    assert (err.line, err.column) == (2, 6)
    assert "invalid escape sequence '\\\\q'" in str(err)
    assert err.context.splitlines()[1].index("^") == 5


def test_a_short_unicode_escape_is_a_read_error() -> None:
    with pytest.raises(ReadError, match="invalid escape"):
        read(r'"\u12"')


def test_whitespace_and_comments_are_ignored() -> None:
    assert read("  ; a comment\n (a ; inside\n b) ; after\n") == [Symbol("a"), Symbol("b")]


def test_read_takes_utf8_bytes() -> None:
    assert read('(f "é")'.encode()) == [Symbol("f"), "é"]


def test_invalid_utf8_is_a_read_error_naming_the_byte_offset() -> None:
    with pytest.raises(ReadError, match="invalid UTF-8 at byte offset 4") as caught:
        read(b'(f "\xff")')
    assert (caught.value.line, caught.value.column) == (1, 5)


@pytest.mark.parametrize(
    ("text", "reason", "line", "column"),
    [
        ("", "empty input", 1, 1),
        ("  ; only a comment", "empty input", 1, 19),
        ("(a (b)", "not closed", 1, 7),
        ("'", "not closed", 1, 2),
        (")", "unexpected ')'", 1, 1),
        ("(a))", "unexpected ')'", 1, 4),
        ("a b", "more than one expression", 1, 3),
        ('(f "abc)', "unterminated string", 1, 4),
        ("(f 5x)", "malformed number '5x'", 1, 4),
        ("1.2.3", "malformed number", 1, 1),
        ("(f [1])", "unexpected character '['", 1, 4),
        (":", "keyword needs a name", 1, 1),
        ("1e999", "out of range", 1, 1),
        ("\n\n  (a\n   b c ]", "unexpected character ']'", 4, 8),
    ],
)
def test_bad_text_is_a_read_error_with_reason_and_position(
    text: str, reason: str, line: int, column: int
) -> None:
    with pytest.raises(ReadError) as caught:
        read(text)
    err = caught.value
    assert reason in str(err)
    assert (err.line, err.column) == (line, column)
    assert f"at line {line}, column {column}" in str(err)


def test_a_read_error_shows_the_line_with_a_caret() -> None:
    with pytest.raises(ReadError) as caught:
        read("(set-weight web-01 5x)")
    assert str(caught.value).endswith("(set-weight web-01 5x)\n                   ^\n")


def test_an_integer_too_long_to_convert_safely_is_a_read_error() -> None:
    with pytest.raises(ReadError, match="5000 digits is too long"):
        read("1" * 5000)


def test_read_all_returns_every_expression() -> None:
    assert read_all("1 (a) 'b ; done") == [1, [Symbol("a")], [Q, Symbol("b")]]
    assert read_all("; nothing") == []


def test_read_refuses_what_is_not_text() -> None:
    with pytest.raises(ReadError, match="not int"):
        read(5)  # type: ignore[arg-type]


def _lark_must_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(start: str) -> None:
        raise AssertionError("lark was reached")

    monkeypatch.setattr(reader_module, "_parser", refuse)


def test_oversized_input_is_refused_before_lark_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    _lark_must_not_run(monkeypatch)
    with pytest.raises(InputTooLargeError, match="70000 bytes"):
        read(b"(" + b"a " * 34_999 + b")")
    with pytest.raises(InputTooLargeError, match="over the 100 limit"):
        read("é" * 51, max_bytes=100)  # 51 characters, but 102 bytes


def test_deep_nesting_is_refused_before_lark_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    _lark_must_not_run(monkeypatch)
    with pytest.raises(InputTooLargeError, match="nesting deeper than 128") as caught:
        read("(" * 129 + ")" * 129)
    assert (caught.value.line, caught.value.column) == (1, 129)
    with pytest.raises(InputTooLargeError):
        read("'" * 5 + "x", max_depth=4)
    with pytest.raises(InputTooLargeError):
        read("(a '('(b)))", max_depth=4)


def test_nesting_at_the_limit_is_read() -> None:
    assert read("(" * 128 + ")" * 128) is not None
    assert read("'" * 4 + "x", max_depth=4) is not None


def test_parentheses_in_strings_and_comments_do_not_count_as_nesting() -> None:
    text = '(f "((((((((" ; ((((((((((\n \'\'\'\'\'x)'
    assert read(text, max_depth=6)[1] == "(((((((("


def test_quotes_after_a_closed_list_do_not_accumulate() -> None:
    text = "(" + "'a " * 50 + ")"
    assert len(read(text, max_depth=2)) == 50


def test_locate_finds_the_line_and_column_of_a_path() -> None:
    text = "(do\n  1\n  (f 'x \"s\"))"
    assert locate(text, ()) == (1, 1)
    assert locate(text, (2,)) == (3, 3)
    assert locate(text, (2, 2)) == (3, 9)
    assert locate(text, (2, 1, 1)) == (3, 7)
    assert locate(text, (9,)) is None


def test_grammar_is_found_in_the_source_tree() -> None:
    assert grammar_text() == (REPO / "grammar" / "cellframe.lark").read_text(encoding="utf-8")


def test_errors_are_language_errors_and_value_errors() -> None:
    with pytest.raises(LanguageError):
        read("(")
    with pytest.raises(ValueError):
        read("(")


@pytest.mark.slow
def test_an_installed_wheel_loads_its_grammar_and_names_its_authors(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")  # in the dev extra, so CI always runs this
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "-q", "-w", str(tmp_path / "dist"), str(REPO)]
    subprocess.run(build, check=True, capture_output=True, timeout=180)
    wheel = next((tmp_path / "dist").glob("cellframe-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "cellframe/language/cellframe.lark" in names  # beside the module that loads it
    assert not [name for name in names if name.startswith("cellframe/grammar")]
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
               str(target), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=180)
    probe = (
        "import cellframe.language.grammar as g, cellframe.language.reader as r; "
        "from cellframe import Cell, Node, ShardCell; "  # the lazy names resolve from the stubs shipped
        f"assert g.__file__.startswith({str(target)!r}), g.__file__; "
        "print(r.read('(set-weight \"web-01\" 5)'))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[Symbol('set-weight'), 'web-01', 5]"
    # What `pip show cellframe` reads: the installed metadata (this wheel's, not the
    # environment's editable install). No home page: the project has no public address yet.
    [installed] = importlib.metadata.distributions(path=[str(target)])
    assert installed.metadata["Name"] == "cellframe"
    assert installed.metadata["Author"] == "The cellframe maintainers"
