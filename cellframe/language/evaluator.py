"""The evaluator: runs language data with literals, a few special forms, pure built-ins and verbs.

Safe by construction: nothing here reaches Python beyond the callables the caller passes as
verbs. There is no I/O, no mutation of data, no attribute access and no way to name a Python
object. Every run is bounded by budgets counted as it runs (``budget.py``): steps (each
sub-expression evaluated), form depth, units of work that every built-in charges by the size
of what it touches, and bytes built. Whatever a built-in returns obeys the reader's limits,
so it can be printed and read back. A hostile expression costs bounded time and memory.

A form ``(head arg...)`` is looked up in this order: special forms, built-ins, verbs. A verb
gets its positional arguments evaluated left to right; ``:some-name value`` becomes the
keyword argument ``some_name=value``. Errors name the offending form and where it sits in the
whole expression; :func:`read_eval` adds its line and column in the text.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from types import MappingProxyType
from typing import Any

from ..errors import (
    ArityError,
    CellframeError,
    EvaluationError,
    LimitExceededError,
    UnknownVerbError,
)
from .budget import (
    DEFAULT_BUDGET,
    MAX_INT_BITS,
    MAX_VALUE_BYTES,
    MAX_VALUE_DEPTH,
    YIELD_EVERY,
    Meter,
    check_budget,
)
from .builtins import BUILTIN_NAMES, BUILTINS, Builtin, arity_text, describe, truthy
from .reader import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, locate, read
from .symbols import Keyword, Symbol

__all__ = [
    "BUILTIN_NAMES",
    "MAX_INT_BITS",
    "MAX_VALUE_BYTES",
    "MAX_VALUE_DEPTH",
    "SPECIAL_FORM_NAMES",
    "Evaluator",
    "read_eval",
]

_MISSING = object()
_NO_VERBS: Mapping[str, Callable[..., Any]] = MappingProxyType({})
_NO_BINDINGS: Mapping[str, Any] = MappingProxyType({})
_SELF_EVALUATING = frozenset({str, int, float, bool, type(None), Keyword})
_TRAIL = "_cellframe_trail"
_SMALL_INT = 1 << 64  # results this small need no measuring: the hot path returns them at once
_SMALL_SCOPE = 64
_ENTRY_BYTES = 64  # about what one entry of a dict costs, with its share of the table
_text = describe
_truthy = truthy


def _fail(cls: type[EvaluationError], reason: str, expr: Any) -> EvaluationError:
    """An evaluator error that will collect the forms it passes through on its way out."""
    err = cls(reason)
    setattr(err, _TRAIL, [expr])
    return err


class _Run(Meter):
    """The state of one evaluation: its verbs, and the meter of what it has spent."""

    __slots__ = ("verbs",)

    def __init__(self, verbs: Mapping[str, Callable[..., Any]],
                 start: tuple[int, int, int, int, int, int]):
        # Meter.__init__'s fields, set here from the evaluator's tuple: on every evaluation's
        # hot path, a call and two min() less.
        (self.max_steps, self.max_depth, self.max_work, self.max_bytes, self.due,
         self.steps_due) = start
        self.steps = self.work = self.allocated = 0
        self.shapes = None
        self.verbs = verbs

    def eval(self, expr: Any, env: Mapping[str, Any], depth: int) -> Any:
        self.steps += 1
        if self.steps > self.steps_due:
            self.step_checkpoint(expr)
        kind = type(expr)
        if kind is list:
            return self.form(expr, env, depth + 1) if expr else expr
        if kind is Symbol:
            value = env.get(expr.name, _MISSING)
            if value is _MISSING:
                raise _fail(EvaluationError, f"unbound symbol {expr.name}", expr)
            return value
        if kind in _SELF_EVALUATING or isinstance(expr, str | int | float | Keyword):
            return expr
        raise _fail(EvaluationError, f"a {kind.__name__} is not language data", expr)

    def form(self, expr: list[Any], env: Mapping[str, Any], depth: int) -> Any:
        try:
            if depth > self.max_depth:
                raise _fail(LimitExceededError, f"forms nested deeper than {self.max_depth}", expr)
            head = expr[0]
            if type(head) is not Symbol:
                reason = f"cannot call {_text(head, 30)}: the head of a form must be a symbol"
                raise _fail(UnknownVerbError, reason, expr)
            name = head.name
            special = _SPECIAL_FORMS.get(name)
            if special is not None:
                return special(self, expr, env, depth)
            builtin = BUILTINS.get(name)
            if builtin is not None:
                return self.call_builtin(name, builtin, expr, env, depth)
            verb = self.verbs.get(name)
            if verb is None:
                raise _fail(UnknownVerbError, self.unknown(name), expr)
            return self.call_verb(name, verb, expr, env, depth)
        except EvaluationError as err:
            trail = getattr(err, _TRAIL, None)
            if trail is not None and trail[-1] is not expr:
                trail.append(expr)
            raise

    def unknown(self, name: str) -> str:
        known = [*_SPECIAL_FORMS, *BUILTINS, *self.verbs]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"unknown verb {name}{hint}"

    def call_builtin(self, name: str, builtin: Builtin, form: list[Any],
                     env: Mapping[str, Any], depth: int) -> Any:
        function, low, high = builtin
        count = len(form) - 1
        if count < low or (high is not None and count > high):
            raise _fail(ArityError, f"{name} takes {arity_text(low, high)}, got {count}", form)
        args = [self.eval(arg, env, depth) for arg in islice(form, 1, None)]
        try:
            self.work += 1  # a call costs a unit; what is sized by its data, the built-in charges
            result = function(self, *args)
            kind = type(result)
            if kind is bool or kind is Symbol or result is None or (
                    kind is int and -_SMALL_INT < result < _SMALL_INT):
                if self.work > self.due:
                    self.checkpoint()
                return result
            if kind is list:  # admit's work for a list, a call or two less
                self._list_shape(result)
                if self.allocated > self.max_bytes:
                    self.checkpoint()
                return result
            return self.admit(result)
        except EvaluationError as err:
            if not hasattr(err, _TRAIL):
                setattr(err, _TRAIL, [form])
            raise
        except RecursionError:
            raise _fail(LimitExceededError, f"{name}: data nested too deeply", form) from None
        except Exception as exc:  # a Python error in a built-in is a bug or bad data: name it
            raise _fail(EvaluationError, f"{name} failed: {exc}", form) from exc

    def call_verb(self, name: str, verb: Callable[..., Any], form: list[Any],
                  env: Mapping[str, Any], depth: int) -> Any:
        args, kwargs = self.verb_arguments(form, env, depth)
        try:
            return verb(*args, **kwargs)
        except CellframeError:
            raise
        except TypeError as exc:
            # No frame past this one: Python refused the call itself (wrong arguments).
            if exc.__traceback__ is not None and exc.__traceback__.tb_next is None:
                raise _fail(ArityError, f"wrong arguments for verb {name}: {exc}", form) from exc
            raise _fail(EvaluationError, f"verb {name} failed: {exc!r}", form) from exc
        except Exception as exc:
            raise _fail(EvaluationError, f"verb {name} failed: {exc!r}", form) from exc

    def verb_arguments(self, form: list[Any], env: Mapping[str, Any],
                       depth: int) -> tuple[list[Any], dict[str, Any]]:
        """Evaluate a verb call's arguments left to right; ``:name value`` is a kwarg."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        index, end = 1, len(form)
        while index < end:
            arg = form[index]
            if type(arg) is Keyword:
                if index + 1 == end:
                    raise _fail(ArityError, f"keyword {arg} has no value after it", form)
                key = arg.argument
                if key in kwargs:
                    raise _fail(ArityError, f"keyword {arg} given twice", form)
                value = form[index + 1]
                if type(value) in _SELF_EVALUATING:
                    self.steps += 1
                else:
                    value = self.eval(value, env, depth)
                kwargs[key] = value
                index += 2
            elif type(arg) in _SELF_EVALUATING:  # a literal: skip the call, still count it
                self.steps += 1
                args.append(arg)
                index += 1
            else:
                args.append(self.eval(arg, env, depth))
                index += 1
        if self.steps > self.steps_due:  # literals above were counted but not checked
            self.step_checkpoint(form)
        return args, kwargs

    def step_checkpoint(self, expr: Any) -> None:
        """``checkpoint``, for the step count: the error names the form it stopped at."""
        try:
            self.checkpoint()
        except LimitExceededError as err:
            raise _fail(LimitExceededError, err.reason, expr) from None


# -- special forms ---------------------------------------------------------------------------

_Special = Callable[[_Run, list[Any], Mapping[str, Any], int], Any]


def _body(run: _Run, forms: Sequence[Any], start: int, env: Mapping[str, Any], depth: int) -> Any:
    value = None
    for expr in islice(forms, start, None):
        value = run.eval(expr, env, depth)
    return value


def _quote(run: _Run, form: list[Any], env: Mapping[str, Any], depth: int) -> Any:
    if len(form) != 2:
        raise _fail(ArityError, f"quote takes 1 argument, got {len(form) - 1}", form)
    return form[1]


def _do(run: _Run, form: list[Any], env: Mapping[str, Any], depth: int) -> Any:
    return _body(run, form, 1, env, depth)


def _if(run: _Run, form: list[Any], env: Mapping[str, Any], depth: int) -> Any:
    if len(form) not in (3, 4):
        raise _fail(ArityError, "if takes a test, a then-form and an optional else-form", form)
    if _truthy(run.eval(form[1], env, depth)):
        return run.eval(form[2], env, depth)
    return run.eval(form[3], env, depth) if len(form) == 4 else None


def _when(run: _Run, form: list[Any], env: Mapping[str, Any], depth: int) -> Any:
    if len(form) < 2:
        raise _fail(ArityError, "when takes a test and a body", form)
    return _body(run, form, 2, env, depth) if _truthy(run.eval(form[1], env, depth)) else None


def _let(run: _Run, form: list[Any], env: Mapping[str, Any], depth: int) -> Any:
    if len(form) < 2 or type(form[1]) is not list:
        raise _fail(ArityError, "let takes a list of bindings ((name value) ...) and a body", form)
    # The scope is a copy: charged by its size, or a let inside a let of 5,000 names, run
    # 5,000 times, would copy 25 million entries for 10,000 steps.
    size = len(env)
    if size > _SMALL_SCOPE:  # a small one costs less than the step that made the let
        try:
            run.charge(size >> 6, _ENTRY_BYTES * size)
        except LimitExceededError as err:
            raise _fail(LimitExceededError, err.reason, form) from None
    scope = dict(env)
    for binding in form[1]:
        if type(binding) is not list or len(binding) != 2 or type(binding[0]) is not Symbol:
            reason = f"a let binding is (name value), not {_text(binding, 30)}"
            raise _fail(ArityError, reason, form)
        scope[binding[0].name] = run.eval(binding[1], scope, depth)
    return _body(run, form, 2, scope, depth)


def _and(run: _Run, form: list[Any], env: Mapping[str, Any], depth: int) -> Any:
    value: Any = True
    for expr in islice(form, 1, None):
        value = run.eval(expr, env, depth)
        if not _truthy(value):
            return value
    return value


def _or(run: _Run, form: list[Any], env: Mapping[str, Any], depth: int) -> Any:
    value = None
    for expr in islice(form, 1, None):
        value = run.eval(expr, env, depth)
        if _truthy(value):
            return value
    return value


_SPECIAL_FORMS: dict[str, _Special] = {
    "quote": _quote,
    "do": _do,
    "if": _if,
    "when": _when,
    "let": _let,
    "and": _and,
    "or": _or,
}
SPECIAL_FORM_NAMES = frozenset(_SPECIAL_FORMS)


# -- the public face -------------------------------------------------------------------------


def _find(tree: list[Any], target: Any) -> tuple[int, ...] | None:
    """The index path from ``tree`` to the object ``target`` inside it, by identity."""
    for index, item in enumerate(tree):
        if item is target:
            return (index,)
        if type(item) is list:
            found = _find(item, target)
            if found is not None:
                return (index, *found)
    return None


def _explain(err: EvaluationError, trail: list[Any]) -> None:
    """Rewrite ``err``'s message to name the offending form and where it sits."""
    failed = trail[0]
    path: list[int] = []
    places = [f"in {_text(failed)}"] if type(failed) is list else []
    for child, parent in zip(trail, trail[1:], strict=False):
        try:
            steps = _find(parent, child) or ()
        except RecursionError:
            steps = ()
        path[:0] = steps
        shown = f"({_text(parent[0], 20)} ...)" if places else _text(parent)
        places.append(f"in argument {steps[0] if steps else '?'} of {shown}")
    if len(places) > 4:  # a message, not a stack dump: the path attribute has all of it
        places[3:] = [f"and {len(places) - 3} enclosing forms more"]
    err.form = _text(failed)  # type: ignore[attr-defined]
    err.path = tuple(path)  # type: ignore[attr-defined]
    message = " ".join([err.reason, ", ".join(places)]) if places else err.reason
    err.reason = message
    err.args = (message,)


class Evaluator:
    """Evaluates language data against a table of verbs, within its budgets: steps, form
    depth, units of work and bytes built (defaults in ``budget.DEFAULT_BUDGET``)."""

    __slots__ = ("max_steps", "max_depth", "max_work", "max_bytes", "_start")

    def __init__(self, *, max_steps: int = DEFAULT_BUDGET["max_steps"],
                 max_depth: int = DEFAULT_BUDGET["max_depth"],
                 max_work: int = DEFAULT_BUDGET["max_work"],
                 max_bytes: int = DEFAULT_BUDGET["max_bytes"]):
        check_budget(max_steps=max_steps, max_depth=max_depth, max_work=max_work,
                     max_bytes=max_bytes)
        self.max_steps = max_steps
        self.max_depth = max_depth
        self.max_work = max_work
        self.max_bytes = max_bytes
        # A run's starting fields, in _Run's order: one unpacking per evaluation.
        self._start = (max_steps, max_depth, max_work, max_bytes,
                       min(YIELD_EVERY, max_work), min(YIELD_EVERY, max_steps))

    @property
    def budget(self) -> dict[str, int]:
        """The four budgets by name, as ``Evaluator(**budget)`` takes them."""
        return {name: getattr(self, name) for name in self.__slots__ if name != "_start"}

    def evaluate(
        self,
        expr: Any,
        verbs: Mapping[str, Callable[..., Any]] = _NO_VERBS,
        *,
        bindings: Mapping[str, Any] | None = None,
    ) -> Any:
        """Evaluate ``expr``; symbols resolve to ``bindings``, form heads to ``verbs``."""
        run = _Run(verbs, self._start)
        try:
            return run.eval(expr, _NO_BINDINGS if bindings is None else bindings, 0)
        except EvaluationError as err:
            trail = getattr(err, _TRAIL, None)
            if trail is not None:
                delattr(err, _TRAIL)
                _explain(err, trail)
            raise
        except RecursionError:
            reason = "Python's recursion limit was reached: lower max_depth"
            raise LimitExceededError(reason) from None

    def __repr__(self) -> str:
        return "Evaluator(" + ", ".join(f"{k}={v}" for k, v in self.budget.items()) + ")"


_DEFAULT = Evaluator()


def read_eval(
    text: str | bytes,
    verbs: Mapping[str, Callable[..., Any]] = _NO_VERBS,
    *,
    bindings: Mapping[str, Any] | None = None,
    evaluator: Evaluator | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Read one expression from ``text`` and evaluate it; errors carry line and column."""
    expr = read(text, max_bytes=max_bytes, max_depth=max_depth)
    try:
        return (evaluator or _DEFAULT).evaluate(expr, verbs, bindings=bindings)
    except EvaluationError as err:
        path = getattr(err, "path", None)
        if path is not None and err.line is None:
            source = text.decode("utf-8") if isinstance(text, bytes) else str(text)
            position = locate(source, path)
            if position is not None:
                err.line, err.column = position
                err.args = (f"{err.args[0]} at line {err.line}, column {err.column}",)
        raise
