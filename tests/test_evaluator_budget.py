"""The evaluator's budgets (issue 21, items 2 to 4): every built-in pays for what it touches, a
message over budget is refused quickly in bounded memory, no built-in returns an integer past
8,192 bits, and nothing evaluation builds is data the reader would refuse."""

from __future__ import annotations

import itertools
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellframe import Cell, MemoryBroker, Node, transition
from cellframe.cell.cell import SettingsChanged
from cellframe.config.resolvers import ZoneFileResolver
from cellframe.config.txtconfig import LANGUAGE_SETTING_KEYS, language_budget
from cellframe.errors import CellframeError, ConfigError, LimitExceededError
from cellframe.language.budget import DEFAULT_BUDGET, MAX_INT_BITS, MAX_VALUE_BYTES
from cellframe.language.builtins import BUILTINS
from cellframe.language.evaluator import BUILTIN_NAMES, Evaluator
from cellframe.language.printer import write
from cellframe.language.reader import DEFAULT_MAX_DEPTH, read
from cellframe.language.symbols import Keyword, Symbol
from cellframe.testing import wait_for

BIG = int("9" * 4300)  # the longest literal the reader takes: 14,285 bits


def _cpu_and_outcome(text: str, evaluator: Evaluator | None = None) -> tuple[float, Any]:
    expr = read(text)
    started = time.thread_time()
    try:
        outcome: Any = (evaluator or Evaluator()).evaluate(expr)
    except CellframeError as error:
        outcome = error
    return time.thread_time() - started, outcome


def _peak_bytes(text: str) -> int:
    expr = read(text)
    tracemalloc.start()
    try:
        Evaluator().evaluate(expr)
    except CellframeError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


# -- the attacks, as classes -------------------------------------------------------------------

def _ones(count: int) -> str:
    return " ".join(["1"] * count)


def _doubled(seed: str, times: int) -> str:
    """``(let ((s seed)) (let ((s (concat s s))) ...`` ``times`` deep, around a hole {}."""
    return f"(let ((s {seed})) " + "(let ((s (concat s s))) " * times + "{}" + ")" * (times + 1)


ATTACKS = {
    "printing a shared list again and again":
        f"(let ((a (list {_ones(300)}))) (let ((b (list {' '.join(['a'] * 100)})))"
        f" (do {' '.join(['(str b)'] * 4900)})))",
    "comparing two big lists again and again":
        f"(let ((a (list {_ones(300)})) (b (list {_ones(300)})))"
        f" (let ((x (list {' '.join(['a'] * 100)})) (y (list {' '.join(['b'] * 100)})))"
        f" (do {' '.join(['(= x y)'] * 3200)})))",
    "distinct strings near the limit, kept":
        _doubled('"xxxxxxxx"', 12).format(
            "(list " + " ".join(f'(concat s "{i}")' for i in range(3000)) + ")"),
    "strings full of escapes, made again and again":
        _doubled('"\\n\\n\\n\\n\\n\\n\\n\\n"', 11).format(
            "(list " + " ".join(f'(concat s "{i}")' for i in range(3000)) + ")"),
    "a long string compared again and again":
        _doubled('"xxxxxxxx"', 12).format("(do " + "(< s s) " * 4000 + ")"),
    "a big integer written again and again":
        "(let ((b " + "9" * 4300 + ")) (do " + "(str b) " * 3000 + "))",
    "big integers multiplied again and again":
        "(let ((b " + "9" * 1200 + ")) (do " + "(* b b) " * 5000 + "))",
    "the rest of a long list again and again":
        f"(let ((a (list {_ones(6000)}))) (do {' '.join(['(count (rest a))'] * 2000)}))",
    "long lists concatenated again and again":
        f"(let ((a (list {_ones(6000)}))) (do {' '.join(['(count (concat a a))'] * 2000)}))",
    "a big scope copied by every let inside it":
        "(let (" + " ".join(f"(v{i} {i})" for i in range(3000)) + ") (do "
        + "(let ((z 1)) z) " * 1500 + "))",
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_each_class_of_multiplicative_attack_is_refused_quickly_with_a_reason(name: str) -> None:
    text = ATTACKS[name]
    assert len(text.encode()) <= 65_536  # each fits in one message
    cpu, outcome = _cpu_and_outcome(text)
    assert isinstance(outcome, LimitExceededError), outcome
    assert "evaluation budget exhausted" in str(outcome) or "could not read it back" in str(
        outcome), outcome
    assert cpu < 0.3, f"{name}: {cpu:.3f} s of CPU"  # about 50 ms idle; a loaded machine is slower
    assert _peak_bytes(text) < DEFAULT_BUDGET["max_bytes"] + 12 * 2**20


def test_the_budget_is_what_stops_them() -> None:
    text = ATTACKS["comparing two big lists again and again"].replace("(= x y) " * 3000, "")
    bounded, refused = _cpu_and_outcome(text)
    generous = Evaluator(max_steps=10**6, max_work=10**9, max_bytes=10**12)
    unbounded, outcome = _cpu_and_outcome(text, generous)
    assert isinstance(refused, LimitExceededError)
    assert outcome is True and unbounded > 3 * bounded  # 200 comparisons, each of 30,000 pairs


# -- integers: one limit for every built-in, from the table ------------------------------------

_ARGUMENTS = {  # bound names a generated call may use, and what they hold
    "big": BIG, "neg": -BIG, "box": [BIG], "zero": 0, "one": 1, "two": 2, "text": "s",
    "empty": [],
}


def _calls(name: str) -> list[str]:
    """Every call of built-in ``name`` with 1 to 3 of the arguments above (its arity allows)."""
    _function, low, high = BUILTINS[name]
    most = min(3, high if high is not None else 3)
    return [f"({name} {' '.join(args)})" for count in range(max(low, 1), most + 1)
            for args in itertools.product(sorted(_ARGUMENTS), repeat=count)]


@pytest.mark.parametrize("name", sorted(BUILTIN_NAMES))
def test_no_built_in_returns_an_integer_over_the_limit(name: str) -> None:
    refused = 0
    for text in _calls(name):
        try:
            value = Evaluator().evaluate(read(text), bindings=_ARGUMENTS)
        except LimitExceededError as error:
            refused += "integer result of more than 8192 bits" in str(error)
            continue
        except CellframeError:
            continue
        assert not (type(value) is int and value.bit_length() > MAX_INT_BITS), text
    returns_numbers = {"+", "-", "*", "mod", "abs", "max", "min", "first", "nth", "get"}
    assert (refused > 0) == (name in returns_numbers), refused


@pytest.mark.parametrize("text", ["(- big)", "(abs big)", "(max big)", "(min neg)",
                                  "(max 1 big)", "(first box)", "(nth box 0)", "(get box 0)",
                                  "(mod big (+ big 1))", "(+ big)", "(* big 1)"])
def test_the_leaks_that_were_found_are_closed(text: str) -> None:
    with pytest.raises(LimitExceededError, match="integer result of more than 8192 bits"):
        Evaluator().evaluate(read(text), bindings=_ARGUMENTS)


def test_a_4300_digit_literal_minus_itself_is_fine() -> None:
    assert Evaluator().evaluate(read(f"(- {'9' * 4300} {'9' * 4300})")) == 0


# -- what evaluation builds, the reader reads back ---------------------------------------------


def test_a_chain_of_2300_lets_nesting_a_list_is_refused_at_the_readers_depth() -> None:
    text = "(let ((a (list 1)) " + "(a (list a)) " * 2300 + ") a)"
    cpu, outcome = _cpu_and_outcome(text)
    assert isinstance(outcome, LimitExceededError)
    assert f"lists nested deeper than {DEFAULT_MAX_DEPTH}" in str(outcome)
    assert cpu < 0.3


def test_lists_as_deep_as_the_reader_reads_are_built_and_read_back() -> None:
    depth = DEFAULT_MAX_DEPTH
    text = "(let ((a (list 1)) " + "(a (list a)) " * (depth - 1) + ") a)"
    value = Evaluator().evaluate(read(text))
    assert read(write(value)) == value
    deeper = "(let ((a (list 1)) " + "(a (list a)) " * depth + ") a)"
    with pytest.raises(LimitExceededError, match="nested deeper than"):
        Evaluator().evaluate(read(deeper))


def test_a_string_is_built_up_to_the_readers_size_and_no_further() -> None:
    fits = _doubled('"' + "x" * 1000 + '"', 6).format(f'(concat s "{"y" * 1534}")')
    value = Evaluator().evaluate(read(fits))
    assert len(write(value).encode()) == MAX_VALUE_BYTES
    with pytest.raises(LimitExceededError, match="could not read it back"):
        Evaluator().evaluate(read(fits.replace('"y', '"yy')))


def test_escapes_count_toward_the_size_of_a_string() -> None:
    # 15,000 newlines are 15,000 characters, but 30,002 bytes of text: twice is too many.
    text = _doubled('"' + "\\n" * 15_000 + '"', 0).format("(concat s s s)")
    with pytest.raises(LimitExceededError, match="string whose text is more than"):
        Evaluator().evaluate(read(text))


# -- budgets from DNS --------------------------------------------------------------------------


def test_dns_settings_give_the_budgets_and_later_layers_win() -> None:
    cluster = {"language.max-work": "2000", "language.max-bytes": "100000"}
    node = {"language.max-work": "3000"}
    assert language_budget(cluster, node) == {**DEFAULT_BUDGET, "max_work": 3000,
                                              "max_bytes": 100000}
    assert set(LANGUAGE_SETTING_KEYS.values()) == set(DEFAULT_BUDGET)
    with pytest.raises(ConfigError, match="language.max-steps"):
        language_budget({"language.max-steps": "many"})
    with pytest.raises(ConfigError, match="below the minimum"):
        language_budget({"language.max-work": "0"})


class _Echo(Cell):
    @transition("echo")
    def echo(self, value: Any) -> None:
        self.cell_reply([Symbol("echoed"), value])


def test_a_cell_takes_its_budgets_from_its_settings_and_from_a_change_of_them() -> None:
    ref = _Echo.start("echo", settings={"language.max-work": "1234"})
    try:
        cell = ref.proxy().cell_evaluator.get()
        assert cell.max_work == 1234 and cell.max_bytes == DEFAULT_BUDGET["max_bytes"]
        ref.tell(SettingsChanged({"language.max-bytes": "5555"}))
        wait_for(lambda: ref.proxy().cell_evaluator.get().max_bytes == 5555, 20,
                 what="the new budget")
        assert ref.proxy().cell_evaluator.get().max_work == DEFAULT_BUDGET["max_work"]
        ref.tell(SettingsChanged({"language.max-bytes": "lots"}))  # bad: the defaults, logged
        wait_for(lambda: ref.proxy().cell_evaluator.get().max_bytes
                 == DEFAULT_BUDGET["max_bytes"], 20, what="the default budget")
    finally:
        ref.stop()


def test_a_nodes_cells_take_the_cluster_wide_budget_from_dns(tmp_path: Path) -> None:
    zone = tmp_path / "cluster.zone"
    zone.write_text("""$ORIGIN cluster.test.
$TTL 5
@        IN SOA ns.cluster.test. hostmaster.cluster.test. ( 1 60 30 600 5 )
         IN NS  ns
ns       IN A   127.0.0.1
_cluster IN TXT "tally=1" "language.max-work=777" "language.max-steps=300"
_nodes   IN TXT "n1 n2"
n1       IN TXT "role=tally"
n2       IN TXT "role=tally" "language.max-steps=400"
""", encoding="utf-8")
    broker = MemoryBroker()
    from tests.node_support import registry

    nodes = [Node(name, transport=broker.connect(), resolver=ZoneFileResolver(zone),
                  registry=registry(), watch_config=False).start() for name in ("n1", "n2")]
    try:
        for node, steps in zip(nodes, (300, 400), strict=True):
            for cell in node.cells().values():
                assert (cell.cell_evaluator.max_work, cell.cell_evaluator.max_steps) == (777, steps)
    finally:
        for node in nodes:
            node.stop()


# -- generated programs: each bounded in CPU and memory by its budget ----------------------------

_SMALL_BUDGET = {"max_steps": 3000, "max_depth": 64, "max_work": 20_000, "max_bytes": 1 << 20}
_NAMES = ["a", "b", "c"]


def _reference_seconds_per_unit() -> float:
    """What a plain evaluation step costs on this machine now (best of several), so the bound
    below follows the machine's speed and load instead of assuming it."""
    expr = read("(do " + "(+ 1 2) " * 2000 + ")")
    evaluator = Evaluator(max_steps=10**6)
    best = float("inf")
    for _ in range(5):
        started = time.thread_time()
        evaluator.evaluate(expr)
        best = min(best, time.thread_time() - started)
    return best / 4000  # 2,000 calls of a built-in, 4,000 steps


_UNIT = _reference_seconds_per_unit()


def _cpu_and_value(expr: Any) -> tuple[float, Any]:
    """The thread CPU time a small-budget evaluator spends on ``expr``, and what it returned
    (None for an error)."""
    evaluator = Evaluator(**_SMALL_BUDGET)
    started = time.thread_time()
    try:
        value: Any = evaluator.evaluate(expr, bindings={"a": 1, "b": "b", "c": [1]})
    except CellframeError:
        value = None
    return time.thread_time() - started, value


def _cpu_bound(unit: float) -> float:
    """A unit of work is priced at about a plain step; allow twice that, and 20 ms more. The
    worst of 600 generated programs used a tenth of this bound at four times the price."""
    return 2 * unit * (_SMALL_BUDGET["max_work"] + _SMALL_BUDGET["max_steps"]) + 0.02

_LONGEST = 65_536  # bytes: the longest generated program kept

_leaves = st.one_of(
    st.sampled_from(["0", "1", "-7", "2.5", '"s"', '"a\\nb"', ":k", "nil", "true",
                     "'(1 2 3)", "'()", "9" * 300, "9" * 4300,
                     '"' + "x" * 3000 + '"', '"' + "\\u0001" * 500 + '"']),
    st.sampled_from(_NAMES))


def _repeat(form: str, times: int) -> str:
    """``form`` ``times`` times, but never past the largest program kept (64 KiB): nested
    repeats of a long leaf built gigabytes before the filter saw them (a MemoryError)."""
    return " ".join([form] * max(1, min(times, _LONGEST // (len(form) + 1))))


def _program_forms(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    calls = st.builds(lambda name, args: f"({name} {' '.join(args)})",
                      st.sampled_from(sorted(BUILTIN_NAMES)), st.lists(inner, max_size=4))
    repeated = st.builds(lambda form, times: "(do " + _repeat(form, times) + ")",
                         inner, st.integers(1, 2000))
    wide = st.builds(lambda form, times: "(list " + _repeat(form, times) + ")",
                     st.sampled_from(_NAMES) | inner, st.integers(1, 300))
    doubling = st.builds(
        lambda op, seed, levels, body: "(let ((a " + seed + ")) "
        + f"(let ((a ({op} a a))) " * levels + body + ")" * (levels + 1),
        st.sampled_from(["list", "concat", "str", "*", "+", "rest"]), inner,
        st.integers(1, 40), inner)
    lets = st.builds(lambda values, body: "(let (" + " ".join(
        f"({name} {value})" for name, value in zip(_NAMES, values, strict=False)) + f") {body})",
        st.lists(inner, min_size=1, max_size=3), inner)
    return st.one_of(calls, repeated, wide, doubling, lets)


_makers = st.one_of(  # something big to hand to a built-in, built or shared
    st.builds(lambda leaf, n: "(list " + _repeat(leaf, n) + ")", _leaves,
              st.integers(1, 400)),
    st.builds(lambda op, seed, levels: "(let ((a " + seed + ")) "
              + f"(let ((a ({op} a a))) " * levels + "a" + ")" * (levels + 1),
              st.sampled_from(["list", "concat", "str", "*"]), _leaves, st.integers(1, 20)),
    _leaves)


@st.composite
def _expensive(draw: st.DrawFn) -> str:
    """``(let ((a BIG) (b BIG)) (do (BUILTIN args...) ...))``: one built-in of the table,
    over big or shared data, called many times."""
    name = draw(st.sampled_from(sorted(BUILTIN_NAMES)))
    _function, low, high = BUILTINS[name]
    count = draw(st.integers(low, min(high if high is not None else 4, 4)))
    args = " ".join(draw(st.lists(st.sampled_from(["a", "b"]) | _leaves, min_size=count,
                                  max_size=count)))
    call = f"({name} {args})"
    times = draw(st.integers(1, 3000))
    return (f"(let ((a {draw(_makers)}) (b {draw(_makers)})) (do "
            + _repeat(call, times) + "))")


_programs = st.one_of(_expensive(), st.recursive(_leaves, _program_forms, max_leaves=12)).filter(
    lambda text: len(text.encode()) <= _LONGEST)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(_programs)
def test_generated_programs_stay_within_their_budget_of_cpu_and_memory(text: str) -> None:
    try:
        expr = read(text)
    except CellframeError:
        return
    cpu, value = _cpu_and_value(expr)
    bound = _cpu_bound(_UNIT)
    if cpu >= bound:
        # Thread CPU time on a loaded virtual machine counts cache misses and time the host
        # took (133 ms once against a 60 ms bound, at a load of 26, passing on its rerun): the
        # best of three more runs, against a reference measured now. An evaluator that does
        # not stop at its budget is over the bound every time.
        cpu = min([cpu] + [_cpu_and_value(expr)[0] for _ in range(3)])
        bound = _cpu_bound(max(_UNIT, _reference_seconds_per_unit()))
    assert cpu < bound, f"{cpu * 1000:.1f} ms over the {bound * 1000:.1f} ms bound"
    if isinstance(value, list | str) or type(value) is int:
        text_of = write(value)  # what evaluation builds, the reader reads back
        assert read(text_of) == value
    evaluator = Evaluator(**_SMALL_BUDGET)
    tracemalloc.start()
    try:
        evaluator.evaluate(expr, bindings={"a": 1, "b": "b", "c": [1]})
    except CellframeError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # Bytes built, plus the bookkeeping of the work (at most one entry per unit).
    assert peak < _SMALL_BUDGET["max_bytes"] + 200 * _SMALL_BUDGET["max_work"] + 2**20, peak


def test_keywords_and_symbols_in_built_lists_are_measured_like_the_printer_writes_them() -> None:
    value = Evaluator().evaluate(read("(list :reason 'web-01 \"é\" 1.5 -3 nil true)"))
    assert value == [Keyword("reason"), Symbol("web-01"), "é", 1.5, -3, None, True]
    assert read(write(value)) == value


def test_data_from_outside_is_charged_as_it_is_touched() -> None:
    huge = list(range(1_000_000))  # a verb's or a binding's: not built here, not measured yet
    for text, error in [("(rest x)", "budget exhausted"), ("(list x)", "budget exhausted"),
                        ("(str x)", "budget exhausted"), ("(+ 1 x)", r"\+ takes numbers"),
                        ("(concat x x)", "text is more than")]:
        started = time.thread_time()
        with pytest.raises(CellframeError, match=error):
            Evaluator().evaluate(read(text), bindings={"x": huge})
        assert time.thread_time() - started < 0.1, text
    assert Evaluator().evaluate(read("(count x)"), bindings={"x": huge}) == 1_000_000
