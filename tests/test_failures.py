"""How failures are logged (``cellframe.failures``): an ordinary error of cellframe's tree in
one line, a bug with its traceback, the same on every path that logs one."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import cellframe
from cellframe import errors
from cellframe.failures import LineBudget, is_ordinary, log_failure, log_limited

log = logging.getLogger("tests.failures")


def raised(error: BaseException) -> BaseException:
    """``error`` with the traceback of a raise, as an ``except`` clause sees it."""
    try:
        raise error
    except BaseException as caught:
        return caught


def test_every_error_of_the_tree_is_ordinary_but_the_two_raised_by_bugs() -> None:
    bugs = sorted(name for name in errors.__all__
                  if not is_ordinary(getattr(errors, name).__new__(getattr(errors, name))))
    assert bugs == ["CellCrashedError", "StateMachineError"]
    assert not is_ordinary(KeyError("x")) and not is_ordinary(TypeError("x"))


def test_an_ordinary_error_is_one_line_with_its_traceback_only_at_debug(caplog) -> None:
    caplog.set_level(logging.INFO, logger=log.name)
    error = raised(errors.ConfigError("no cells are registered for role 'no-such-role'"))
    log_failure(log, error, "%s: action failed on %s", "web-01-daemon", "message m1")
    assert [(r.levelno, r.getMessage(), r.exc_info) for r in caplog.records] == [
        (logging.ERROR, "web-01-daemon: action failed on message m1: ConfigError: "
                        "no cells are registered for role 'no-such-role'", None)]
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger=log.name)
    log_failure(log, error, "%s: action failed", "web-01-daemon")
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 1 and debug[0].exc_info and debug[0].exc_info[1] is error


def test_a_bug_is_logged_with_its_traceback(caplog) -> None:
    caplog.set_level(logging.WARNING, logger=log.name)
    error = raised(KeyError("nowhere"))
    log_failure(log, error, "%s: continuation failed", "shard-01", level=logging.WARNING)
    [record] = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info and record.exc_info[1] is error
    assert record.getMessage() == "shard-01: continuation failed: KeyError: 'nowhere'"
    assert "Traceback" in caplog.text


def test_a_failure_below_the_loggers_level_costs_no_formatting(caplog) -> None:
    caplog.set_level(logging.CRITICAL, logger=log.name)

    class Loud:
        def __str__(self) -> str:
            raise AssertionError("formatted although nothing is logged")

    log_failure(log, raised(KeyError("x")), "%s failed", Loud())
    assert caplog.records == []


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_line_budget_logs_a_few_lines_a_window_and_then_says_how_many_it_held_back(
        caplog) -> None:
    caplog.set_level(logging.INFO, logger=log.name)
    clock = Clock()
    budget = LineBudget(lines=3, window=10.0, clock=clock)
    for i in range(8):
        log_limited(log, budget, "refused", logging.WARNING, "refused message %d", i)
    log_limited(log, budget, "other kind", logging.WARNING, "another kind still logs")
    clock.now = 10.0
    log_limited(log, budget, "refused", logging.WARNING, "refused message %d", 8)
    assert [r.getMessage() for r in caplog.records] == [
        "refused message 0", "refused message 1",
        "refused message 2 (more like this in the next 10 s are counted, not logged)",
        "another kind still logs",
        "refused message 8 (5 more like this were not logged)"]
    assert budget.held == 5


def test_a_line_budget_remembers_a_bounded_number_of_kinds() -> None:
    budget = LineBudget(lines=1, window=60.0, kinds=4, clock=Clock())
    assert all(budget.admit(kind) is not None for kind in range(1_000))
    assert len(budget._windows) == 4
    assert budget.admit(999) is None and budget.admit(0) is not None  # 0 was forgotten


def test_a_budgeted_failure_is_counted_by_its_kind_and_the_errors_type(caplog) -> None:
    caplog.set_level(logging.ERROR, logger=log.name)
    budget = LineBudget(lines=1, window=60.0, clock=Clock())
    for error in (KeyError("a"), KeyError("b"), TypeError("c")):
        log_failure(log, raised(error), "%s: action failed", "tally-01", budget=budget,
                    kind="action failed")
    assert [r.getMessage() for r in caplog.records] == [
        "tally-01: action failed: KeyError: 'a' "
        "(more like this in the next 60 s are counted, not logged)",
        "tally-01: action failed: TypeError: c "
        "(more like this in the next 60 s are counted, not logged)"]


#: The only places left that log a caught exception themselves: the AMQP I/O thread's own
#: failures, where whatever reaches them is cellframe's bug (its callbacks go to log_failure).
_OWN_TRACEBACKS = {"transports/_amqp_io.py": 4}


def tracebacks_logged(source: str) -> int:
    """How many calls in ``source`` log a traceback at INFO or above by themselves:
    ``log.exception(...)``, or ``log.error/warning/info/critical(..., exc_info=...)``."""
    count = 0
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            if name == "exception" or (name in ("error", "warning", "info", "critical")
                                       and any(k.arg == "exc_info" for k in node.keywords)):
                count += 1
    return count


def test_every_caught_failure_in_the_library_is_logged_through_log_failure() -> None:
    package = Path(cellframe.__file__).parent
    found = {path.relative_to(package).as_posix(): count
             for path in sorted(package.rglob("*.py"))
             if (count := tracebacks_logged(path.read_text(encoding="utf-8")))}
    assert found == _OWN_TRACEBACKS, "log these through cellframe.failures.log_failure"
