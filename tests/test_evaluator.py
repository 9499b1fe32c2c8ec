"""The evaluator: literals, special forms, built-ins, the verb call convention, budgets, errors."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from cellframe.errors import (
    ArityError,
    ClusterError,
    ConfigError,
    EvaluationError,
    LimitExceededError,
    UnknownVerbError,
)
from cellframe.language.evaluator import MAX_VALUE_BYTES, Evaluator, read_eval
from cellframe.language.grammar import grammar_text
from cellframe.language.printer import write
from cellframe.language.reader import read, read_all
from cellframe.language.symbols import Keyword, Symbol

DOCS = Path(__file__).resolve().parent.parent / "docs" / "language.md"


def run(text: str, verbs: dict[str, Any] | None = None, **bindings: Any) -> Any:
    return Evaluator().evaluate(read(text), verbs or {}, bindings=bindings)


class Recorder:
    """A verb table whose verbs record how they were called, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def verb(self, name: str, result: Any = None) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return result if result is not None else name

        return call


@pytest.mark.parametrize(
    "text", ['"s"', "5", "-2.5", "true", "false", "nil", ":reason", "()"]
)
def test_literals_evaluate_to_themselves(text: str) -> None:
    assert run(text) == read(text)


def test_a_symbol_evaluates_to_its_binding() -> None:
    assert run("(+ x 1)", x=41) == 42


def test_an_unbound_symbol_is_an_error_naming_it_and_where_it_is() -> None:
    with pytest.raises(EvaluationError) as caught:
        run("(do 1 (+ x 1))")
    err = caught.value
    assert type(err) is EvaluationError
    assert str(err) == "unbound symbol x in argument 1 of (+ x 1), in argument 2 of (do ...)"
    assert err.path == (2, 1)
    assert err.form == "x"


def test_quote_returns_its_argument_unevaluated() -> None:
    assert run("'(unknown-verb x)") == [Symbol("unknown-verb"), Symbol("x")]
    assert run("(quote x)") == Symbol("x")


def test_do_returns_its_last_value_and_nil_when_empty() -> None:
    assert run("(do 1 2 3)") == 3
    assert run("(do)") is None


def test_if_chooses_a_branch_and_evaluates_only_that_one() -> None:
    verbs = Recorder()
    table = {"yes": verbs.verb("yes"), "no": verbs.verb("no")}
    assert run("(if (> 2 1) (yes) (no))", table) == "yes"
    assert run("(if nil (yes))", table) is None
    assert [call[0] for call in verbs.calls] == ["yes"]


@pytest.mark.parametrize("text", ["0", '""', "()", "'(nil)", ":k"])
def test_only_false_and_nil_are_false(text: str) -> None:
    assert run(f"(if {text} 1 2)") == 1
    assert run("(if false 1 2)") == 2


def test_when_runs_its_body_only_when_the_test_holds() -> None:
    assert run("(when (= 1 1) 1 2)") == 2
    assert run("(when (= 1 2) 1 2)") is None


def test_let_binds_in_order_and_does_not_leak() -> None:
    assert run("(let ((x 2) (y (* x 3))) (list x y))") == [2, 6]
    assert run("(let ((x 1)) (let ((x 2)) x))") == 2
    with pytest.raises(EvaluationError, match="unbound symbol x"):
        run("(do (let ((x 1)) x) x)")


def test_let_shadows_bindings_without_changing_them() -> None:
    bindings = {"x": 1}
    assert Evaluator().evaluate(read("(let ((x 2)) x)"), bindings=bindings) == 2
    assert bindings == {"x": 1}


@pytest.mark.parametrize(
    "text", ["(let)", "(let x 1)", "(let (x) 1)", "(let ((x)) 1)", "(let ((1 2)) 1)"]
)
def test_a_malformed_let_is_an_arity_error(text: str) -> None:
    with pytest.raises(ArityError, match="let"):
        run(text)


def test_and_or_short_circuit_and_return_the_deciding_value() -> None:
    verbs = Recorder()
    table = {"never": verbs.verb("never")}
    assert run("(and 1 nil (never))", table) is None
    assert run("(or nil false 3 (never))", table) == 3
    assert run("(and)") is True
    assert run("(or)") is None
    assert run("(and 1 2)") == 2
    assert verbs.calls == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(+)", 0),
        ("(+ 1 2 3.5)", 6.5),
        ("(- 5)", -5),
        ("(- 10 1 2)", 7),
        ("(*)", 1),
        ("(* 2 3 4)", 24),
        ("(/ 7 2)", 3.5),
        ("(/ 4)", 0.25),
        ("(mod -7 3)", 2),
        ("(abs -4)", 4),
        ("(max 1 5 2)", 5),
        ("(min 1 5 2)", 1),
        ("(= 1 1 1)", True),
        ("(= 1 1.0)", True),
        ("(= true 1)", False),
        ("(= '(1 (2)) (list 1 (list 2)))", True),
        ("(!= 1 2)", True),
        ("(< 1 2 3)", True),
        ("(< 1 3 2)", False),
        ("(>= 3 3 1)", True),
        ('(< "a" "b")', True),
        ("(not nil)", True),
        ("(not 0)", False),
        ("(list 1 (+ 1 1))", [1, 2]),
        ("(first '(a b))", Symbol("a")),
        ("(first ())", None),
        ("(rest '(1 2 3))", [2, 3]),
        ("(rest nil)", []),
        ("(nth '(a b c) 1)", Symbol("b")),
        ("(nth '(a) 5 :none)", Keyword("none")),
        ('(nth "abc" 2)', "c"),
        ("(count '(1 2))", 2),
        ('(count "héllo")', 5),
        ("(count nil)", 0),
        ('(str "w" 1 :k nil (list 1 "x"))', 'w1:knil(1 "x")'),
        ("(str)", ""),
        ('(concat "ab" "cd")', "abcd"),
        ("(concat '(1) nil '(2 3))", [1, 2, 3]),
        ("(concat)", []),
        ("(get '(10 20) 1)", 20),
        ("(get '(10 20) 5 :missing)", Keyword("missing")),
        ("(get nil 1 0)", 0),
    ],
)
def test_builtins(text: str, expected: Any) -> None:
    result = run(text)
    assert result == expected
    assert type(result) is type(expected)


def test_get_reads_maps_from_bindings_and_verbs_with_keyword_keys() -> None:
    table = {"status": lambda: {"weight": 5}}
    assert run("(get (status) :weight)", table) == 5
    assert run("(get m :missing 0)", m={"weight": 5}) == 0
    assert run("(count m)", m={"a": 1, "b": 2}) == 2


@pytest.mark.parametrize(
    ("text", "error", "reason"),
    [
        ('(+ 1 "a")', ArityError, '+ takes numbers, not "a"'),
        ("(+ true 1)", ArityError, "+ takes numbers, not true"),
        ("(-)", ArityError, "- takes at least 1 argument, got 0"),
        ("(not 1 2)", ArityError, "not takes 1 argument, got 2"),
        ("(nth '(1) 1 2 3)", ArityError, "nth takes 2 to 3 arguments, got 4"),
        ('(< 1 "a")', ArityError, "< takes numbers"),
        ("(first 5)", ArityError, "first takes a list or nil"),
        ('(concat "a" (list 1))', ArityError, "concat takes all strings or all lists"),
        ("(get 5 1)", ArityError, "get takes a map, list, string or nil"),
        ("(nth '(1) :x)", ArityError, "nth takes an integer index"),
        ("(/ 1 0)", EvaluationError, "division by zero"),
        ("(mod 1 0)", EvaluationError, "mod by zero"),
        ("(nth '(1) 3)", EvaluationError, "nth: index 3 is out of range"),
        ("(* 1e200 1e200)", EvaluationError, "float result out of range"),
        ("(quote 1 2)", ArityError, "quote takes 1 argument, got 2"),
        ("(if 1)", ArityError, "if takes a test"),
    ],
)
def test_builtins_and_forms_reject_bad_arguments_with_evaluation_errors(
    text: str, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error) as caught:
        run(text)
    assert str(caught.value).startswith(reason)
    assert isinstance(caught.value, EvaluationError)


def test_a_python_error_inside_a_builtin_becomes_an_evaluation_error() -> None:
    huge = "1" * 400
    with pytest.raises(EvaluationError, match="/ failed") as caught:
        run(f"(/ {huge} 3.0)")
    assert isinstance(caught.value.__cause__, OverflowError)


def test_verb_gets_positional_and_keyword_arguments() -> None:
    verbs = Recorder()
    run('(set-weight "web-01" (+ 2 3) :reason "load" :dry-run true)',
        {"set-weight": verbs.verb("set-weight")})
    assert verbs.calls == [
        ("set-weight", ("web-01", 5), {"reason": "load", "dry_run": True}),
    ]


def test_verb_arguments_are_evaluated_left_to_right() -> None:
    verbs = Recorder()
    table = {"a": verbs.verb("a"), "b": verbs.verb("b"), "c": verbs.verb("c"),
             "f": verbs.verb("f")}
    run("(f (a) :k (b) (c))", table)
    assert [call[0] for call in verbs.calls] == ["a", "b", "c", "f"]
    assert verbs.calls[-1][1:] == (("a", "c"), {"k": "b"})


def test_a_keyword_with_no_value_is_an_arity_error() -> None:
    with pytest.raises(ArityError, match="keyword :reason has no value"):
        run('(set-weight "web-01" 5 :reason)', {"set-weight": lambda *a, **k: None})


def test_a_keyword_given_twice_is_an_arity_error() -> None:
    with pytest.raises(ArityError, match="given twice"):
        run("(f :a 1 :a 2)", {"f": lambda **k: None})


def test_keyword_arguments_go_only_to_verbs_builtins_see_keywords_as_values() -> None:
    assert run("(list :a 1)") == [Keyword("a"), 1]


def test_calling_a_verb_with_the_wrong_arguments_is_an_arity_error() -> None:
    def set_weight(name: str, weight: int) -> int:
        return weight

    with pytest.raises(ArityError, match="wrong arguments for verb set-weight"):
        run('(set-weight "web-01")', {"set-weight": set_weight})
    with pytest.raises(ArityError, match="unexpected keyword argument 'reason'"):
        run('(set-weight "web-01" 5 :reason "x")', {"set-weight": set_weight})


def test_a_cellframe_error_raised_by_a_verb_propagates_unchanged() -> None:
    refusal = ClusterError("not enough spares")

    def refuse() -> None:
        raise refusal

    with pytest.raises(ClusterError) as caught:
        run("(do (refuse))", {"refuse": refuse})
    assert caught.value is refusal
    assert str(caught.value) == "not enough spares"


def test_any_other_error_raised_by_a_verb_becomes_an_evaluation_error() -> None:
    def broken(key: str) -> Any:
        return {}[key]

    with pytest.raises(EvaluationError, match="verb broken failed: KeyError") as caught:
        run('(broken "k")', {"broken": broken})
    assert isinstance(caught.value.__cause__, KeyError)
    with pytest.raises(EvaluationError, match="verb broken failed: TypeError"):
        run("(broken '(1))", {"broken": broken})  # a TypeError from inside, not arity


def test_an_unknown_verb_is_named_with_a_suggestion() -> None:
    with pytest.raises(UnknownVerbError) as caught:
        run('(set-wieght "web-01" 5)', {"set-weight": lambda *a: None})
    assert str(caught.value).startswith("unknown verb set-wieght (did you mean set-weight?)")


@pytest.mark.parametrize("text", ["(5 1)", '("f" 1)', "(:k 1)", "((f) 1)"])
def test_a_form_whose_head_is_not_a_symbol_cannot_be_called(text: str) -> None:
    with pytest.raises(UnknownVerbError, match="head of a form must be a symbol"):
        run(text, {"f": lambda: "f"})


@pytest.mark.parametrize(
    "name", ["__import__", "eval", "exec", "open", "getattr", "import", "setattr", "print"]
)
def test_python_is_not_reachable_by_name(name: str) -> None:
    with pytest.raises(UnknownVerbError, match=f"unknown verb {re.escape(name)}"):
        run(f'({name} "os")')


def test_verbs_cannot_shadow_special_forms_or_builtins() -> None:
    verbs = Recorder()
    assert run("(if true 1 2)", {"if": verbs.verb("if"), "+": verbs.verb("+")}) == 1
    assert run("(+ 1 2)", {"+": verbs.verb("+")}) == 3
    assert verbs.calls == []


def test_the_step_budget_stops_long_evaluations() -> None:
    evaluator = Evaluator(max_steps=50)
    text = "(do " + "(+ 1 1) " * 30 + ")"
    with pytest.raises(LimitExceededError, match="more than 50 evaluation steps"):
        evaluator.evaluate(read(text))
    assert Evaluator(max_steps=200).evaluate(read(text)) == 2


def test_the_step_budget_counts_literal_arguments_of_verbs() -> None:
    text = "(f " + "1 " * 200 + ")"
    with pytest.raises(LimitExceededError):
        Evaluator(max_steps=100).evaluate(read(text), {"f": lambda *a: len(a)})


def test_the_depth_budget_stops_deep_forms() -> None:
    text = "(do " * 70 + "1" + ")" * 70
    with pytest.raises(LimitExceededError, match="forms nested deeper than 64"):
        Evaluator().evaluate(read(text))
    assert Evaluator(max_depth=80).evaluate(read(text)) == 1


def test_a_huge_depth_budget_still_cannot_crash_python() -> None:
    expr: Any = 1
    for _ in range(20_000):
        expr = [Symbol("do"), expr]
    with pytest.raises(LimitExceededError):
        Evaluator(max_depth=10**9, max_steps=10**9).evaluate(expr)


def _doubling(level: int, seed: str, double: str) -> str:
    text = "a"
    for _ in range(level):
        text = f"(let ((a {double})) {text})"
    return f"(let ((a {seed})) {text})"


def test_sharing_cannot_blow_up_a_list() -> None:
    started = time.monotonic()
    with pytest.raises(LimitExceededError, match=f"text is more than {MAX_VALUE_BYTES} bytes"):
        run(_doubling(40, "(list 1 1)", "(list a a)"))
    with pytest.raises(LimitExceededError):
        run(_doubling(40, "'(1 1)", "(concat a a)"))
    assert time.monotonic() - started < 5


def test_sharing_cannot_blow_up_a_string_or_an_integer() -> None:
    with pytest.raises(LimitExceededError, match="string whose text is more than"):
        run(_doubling(40, '"xxxxxxxx"', "(concat a a)"))
    with pytest.raises(LimitExceededError, match="string whose text is more than"):
        run(_doubling(40, '"xxxxxxxx"', "(str a a)"))
    with pytest.raises(LimitExceededError, match="integer result of more than"):
        run(_doubling(40, "99999999", "(* a a)"))


def test_evaluating_what_is_not_language_data_is_an_error() -> None:
    with pytest.raises(EvaluationError, match="a dict is not language data"):
        Evaluator().evaluate([Symbol("list"), {"a": 1}])


def test_evaluator_budgets_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        Evaluator(max_steps=0)


def test_errors_name_the_offending_form_and_its_path() -> None:
    with pytest.raises(ArityError) as caught:
        run('(do 1 (let ((w (+ 1 "a"))) w))')
    err = caught.value
    assert str(err) == ('+ takes numbers, not "a" in (+ 1 "a"), in argument 1 of (let ...), '
                        "in argument 2 of (do ...)")
    assert err.path == (2, 1, 0, 1)
    assert err.form == '(+ 1 "a")'


def test_read_eval_adds_the_line_and_column_of_the_offending_form() -> None:
    text = '(do\n  (set-weight "web-01" 5)\n  (set-weight "web-02" (+ 1 "a")))'
    with pytest.raises(ArityError) as caught:
        read_eval(text, {"set-weight": lambda name, weight: weight})
    err = caught.value
    assert (err.line, err.column) == (3, 24)
    assert str(err).endswith("at line 3, column 24")


def test_read_eval_reads_and_evaluates() -> None:
    verbs = {"set-weight": lambda name, weight, *, reason=None: [name, weight, reason]}
    result = read_eval(b'(set-weight "web-01" 5 :reason "load")', verbs)
    assert result == ["web-01", 5, "load"]


# -- docs/language.md: every code block is exercised ------------------------------------------

_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)
_EXPECT = re.compile(r"^(?P<code>.*?);\s*(?P<kind>=>|!!)\s*(?P<want>.*)$")


def _doc_verbs() -> dict[str, Any]:
    """The verbs the examples in docs/language.md call."""
    weights = {"web-01": 5, "web-02": 3}

    def set_weight(name: str, weight: int, *, reason: str | None = None) -> int:
        if name not in weights:
            raise ClusterError(f"no such cell: {name}")
        weights[name] = weight
        return weight

    def status(name: str) -> dict[str, Any]:
        return {"name": name, "weight": weights.get(name), "state": "up"}

    return {"set-weight": set_weight, "status": status,
            "cells": lambda: sorted(weights)}


def _doc_blocks(language: str) -> list[str]:
    return [code for lang, code in _BLOCK.findall(DOCS.read_text(encoding="utf-8"))
            if lang == language]


def _examples(block: str) -> list[tuple[str, str | None, str | None]]:
    """Split a lisp block into (expression text, '=>' or '!!', expectation) examples."""
    examples, pending = [], []
    for line in block.splitlines():
        match = _EXPECT.match(line)
        if match is None:
            pending.append(line)
            continue
        pending.append(match["code"])
        examples.append(("\n".join(pending), match["kind"], match["want"].strip()))
        pending = []
    if "\n".join(pending).strip():
        examples.append(("\n".join(pending), None, None))
    return examples


def test_every_lisp_example_in_the_language_docs_gives_its_stated_result() -> None:
    import cellframe.errors as errors

    blocks = _doc_blocks("lisp")
    assert len(blocks) >= 5
    checked = 0
    for block in blocks:
        read_all(block)  # every block reads, comments and all
        for code, kind, want in _examples(block):
            if kind is None or not code.strip():
                for expr in read_all(code):
                    Evaluator().evaluate(expr, _doc_verbs())
                continue
            if kind == "=>":
                value = read_eval(code, _doc_verbs())
                assert write(value) == write(read(want)), code
            else:
                error = getattr(errors, want.split()[0])
                with pytest.raises(error):
                    read_eval(code, _doc_verbs())
            checked += 1
    assert checked >= 40


def test_every_python_example_in_the_language_docs_runs() -> None:
    blocks = _doc_blocks("python")
    assert blocks
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), {})


def test_the_grammar_in_the_language_docs_is_the_real_one() -> None:
    (shown,) = _doc_blocks("lark")
    assert shown == grammar_text()
