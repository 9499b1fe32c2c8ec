"""The evaluator: runs language data with literals, a few special forms, pure built-ins and verbs.

Safe by construction: nothing here reaches Python beyond the callables the caller passes as
verbs. There is no I/O, no mutation of data, no attribute access and no way to name a Python
object. Every run has a step budget and a depth budget, and the built-ins bound the size of
what they build (integers, strings, lists), so a hostile expression costs bounded time.

A form ``(head arg...)`` is looked up in this order: special forms, built-ins, verbs. A verb
gets its positional arguments evaluated left to right; ``:some-name value`` becomes the
keyword argument ``some_name=value``. Errors name the offending form and where it sits in the
whole expression; :func:`read_eval` adds its line and column in the text.
"""

from __future__ import annotations

import difflib
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from types import MappingProxyType
from typing import Any

from ..errors import (
    ArityError,
    CellframeError,
    ConfigError,
    EvaluationError,
    LanguageError,
    LimitExceededError,
    UnknownVerbError,
)
from .printer import write_bounded
from .reader import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, locate, read
from .symbols import Keyword, Symbol

__all__ = [
    "BUILTIN_NAMES",
    "MAX_INT_BITS",
    "MAX_LIST_WEIGHT",
    "MAX_STRING_CHARS",
    "SPECIAL_FORM_NAMES",
    "Evaluator",
    "read_eval",
]

MAX_INT_BITS = 8192
MAX_STRING_CHARS = 1_000_000
# Lists built by `list` and `concat` may hold this many values, counting a shared part each
# time it appears: `(let ((a (list 1 1))) (let ((a (list a a))) ...))` doubles per level, and
# without a bound 40 levels would make `=` or `str` run for hours.
MAX_LIST_WEIGHT = 100_000

_MISSING = object()
_NO_VERBS: Mapping[str, Callable[..., Any]] = MappingProxyType({})
_NO_BINDINGS: Mapping[str, Any] = MappingProxyType({})
_SELF_EVALUATING = frozenset({str, int, float, bool, type(None), Keyword})
_TRAIL = "_cellframe_trail"


def _text(value: Any, limit: int = 60) -> str:
    """Short canonical text of ``value`` for an error message."""
    try:
        text = write_bounded(value, limit)
    except LanguageError:
        text = None
    if text is not None:
        return text
    if type(value) is list and value:
        return f"({_text(value[0], 20)} ...)"
    return f"<{type(value).__name__}>"


def _fail(cls: type[EvaluationError], reason: str, expr: Any) -> EvaluationError:
    """An evaluator error that will collect the forms it passes through on its way out."""
    err = cls(reason)
    setattr(err, _TRAIL, [expr])
    return err


def _truthy(value: Any) -> bool:
    """Only false and nil are false: 0, "" and () are true, as in Clojure."""
    return value is not None and value is not False


class _Run:
    """The state of one evaluation: verbs, step count, and sizes of lists built so far."""

    __slots__ = ("verbs", "steps", "max_steps", "max_depth", "weights")

    def __init__(self, verbs: Mapping[str, Callable[..., Any]], max_steps: int, max_depth: int):
        self.verbs = verbs
        self.steps = 0
        self.max_steps = max_steps
        self.max_depth = max_depth
        self.weights: dict[int, tuple[list[Any], int]] | None = None  # made when first needed

    def eval(self, expr: Any, env: Mapping[str, Any], depth: int) -> Any:
        self.steps += 1
        if self.steps > self.max_steps:
            raise _fail(LimitExceededError, f"more than {self.max_steps} evaluation steps", expr)
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
            builtin = _BUILTINS.get(name)
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
        known = [*_SPECIAL_FORMS, *_BUILTINS, *self.verbs]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"unknown verb {name}{hint}"

    def call_builtin(self, name: str, builtin: _Builtin, form: list[Any],
                     env: Mapping[str, Any], depth: int) -> Any:
        function, low, high = builtin
        count = len(form) - 1
        if count < low or (high is not None and count > high):
            raise _fail(ArityError, f"{name} takes {_arity_text(low, high)}, got {count}", form)
        args = [self.eval(arg, env, depth) for arg in islice(form, 1, None)]
        try:
            return function(self, *args)
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
                key = arg.name.replace("-", "_")
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
        if self.steps > self.max_steps:  # literals above were counted but not checked
            raise _fail(LimitExceededError, f"more than {self.max_steps} evaluation steps", form)
        return args, kwargs

    def weight(self, value: Any) -> int:
        """How many values ``value`` holds, counting shared parts each time (memoised)."""
        if type(value) is not list:
            return 1
        if self.weights is None:
            self.weights = {}
        known = self.weights.get(id(value))
        if known is not None:
            return known[1]
        total = 1
        for item in value:
            total += self.weight(item)
        self.weights[id(value)] = (value, total)  # keep value alive so its id stays unique
        return total

    def built(self, value: list[Any]) -> list[Any]:
        """Return a list a built-in made, after checking it against MAX_LIST_WEIGHT."""
        if self.weight(value) > MAX_LIST_WEIGHT:
            raise LimitExceededError(f"a list of more than {MAX_LIST_WEIGHT} values")
        return value


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


# -- built-ins -------------------------------------------------------------------------------

_Builtin = tuple[Callable[..., Any], int, "int | None"]


def _arity_text(low: int, high: int | None) -> str:
    if high is None:
        return f"at least {low} argument{'s' * (low != 1)}"
    if low == high:
        return f"{low} argument{'s' * (low != 1)}"
    return f"{low} to {high} arguments"


def _number(value: Any, name: str) -> int | float:
    if type(value) is int or type(value) is float:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise ArityError(f"{name} takes numbers, not {_text(value, 30)}")


def _checked(value: int | float) -> int | float:
    """Refuse results the language could not carry: huge integers, infinite floats."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EvaluationError("float result out of range")
    elif value.bit_length() > MAX_INT_BITS:
        raise LimitExceededError(f"integer result of more than {MAX_INT_BITS} bits")
    return value


def _add(run: _Run, *args: Any) -> int | float:
    total: int | float = 0
    for arg in args:
        total = _checked(total + _number(arg, "+"))
    return total


def _subtract(run: _Run, first: Any, *rest: Any) -> int | float:
    if not rest:
        return -_number(first, "-")
    total = _number(first, "-")
    for arg in rest:
        total = _checked(total - _number(arg, "-"))
    return total


def _multiply(run: _Run, *args: Any) -> int | float:
    total: int | float = 1
    for arg in args:
        total = _checked(total * _number(arg, "*"))
    return total


def _divide(run: _Run, first: Any, *rest: Any) -> float:
    if not rest:
        first, rest = 1, (first,)
    total = _number(first, "/")
    for arg in rest:
        if _number(arg, "/") == 0:
            raise EvaluationError("division by zero")
        total = _checked(total / arg)
    return float(total)


def _mod(run: _Run, value: Any, divisor: Any) -> int | float:
    if _number(divisor, "mod") == 0:
        raise EvaluationError("mod by zero")
    return _number(value, "mod") % divisor


def _abs(run: _Run, value: Any) -> int | float:
    return abs(_number(value, "abs"))


def _extreme(name: str, pick: Callable[..., Any]) -> Callable[..., Any]:
    def extreme(run: _Run, *args: Any) -> Any:
        return pick(_number(arg, name) for arg in args)

    return extreme


def _equal(a: Any, b: Any) -> bool:
    """Language equality: like Python's, except that true is not 1 and false is not 0."""
    if a is b:
        return True
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if type(a) is list and type(b) is list:
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _equals(run: _Run, first: Any, *rest: Any) -> bool:
    return all(_equal(first, other) for other in rest)


def _not_equals(run: _Run, first: Any, *rest: Any) -> bool:
    return not _equals(run, first, *rest)


def _comparison(name: str, test: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def compare(run: _Run, *args: Any) -> bool:
        if not all(type(arg) is str for arg in args):
            args = tuple(_number(arg, name) for arg in args)
        return all(test(a, b) for a, b in zip(args, args[1:], strict=False))

    return compare


def _not(run: _Run, value: Any) -> bool:
    return not _truthy(value)


def _list(run: _Run, *items: Any) -> list[Any]:
    return run.built(list(items))


def _sequence(value: Any, name: str) -> list[Any]:
    if value is None:
        return []
    if type(value) is list or isinstance(value, list):
        return value
    raise ArityError(f"{name} takes a list or nil, not {_text(value, 30)}")


def _first(run: _Run, value: Any) -> Any:
    items = _sequence(value, "first")
    return items[0] if items else None


def _rest(run: _Run, value: Any) -> list[Any]:
    return _sequence(value, "rest")[1:]


def _index(value: Any, name: str) -> int:
    if type(value) is not int:
        raise ArityError(f"{name} takes an integer index, not {_text(value, 30)}")
    return value


def _nth(run: _Run, coll: Any, index: Any, *default: Any) -> Any:
    if not isinstance(coll, list | str):
        raise ArityError(f"nth takes a list or string, not {_text(coll, 30)}")
    position = _index(index, "nth")
    if 0 <= position < len(coll):
        return coll[position]
    if default:
        return default[0]
    raise EvaluationError(f"nth: index {position} is out of range for {len(coll)} items")


def _count(run: _Run, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, list | str | Mapping):
        return len(value)
    raise ArityError(f"count takes a list, string, map or nil, not {_text(value, 30)}")


def _get(run: _Run, coll: Any, key: Any, default: Any = None) -> Any:
    """(get coll key default?): a map's value, or a list's or string's item; else default."""
    if coll is None:
        return default
    if isinstance(coll, Mapping):
        if key in coll:
            return coll[key]
        if type(key) is Keyword:  # let :weight find a Python map's "weight"
            return coll.get(key.name, default)
        return default
    if isinstance(coll, list | str):
        position = _index(key, "get")
        return coll[position] if 0 <= position < len(coll) else default
    raise ArityError(f"get takes a map, list, string or nil, not {_text(coll, 30)}")


def _str(run: _Run, *args: Any) -> str:
    parts: list[str] = []
    room = MAX_STRING_CHARS
    for arg in args:
        text = arg if type(arg) is str else write_bounded(arg, room)
        if text is None or len(text) > room:
            raise LimitExceededError(f"a string of more than {MAX_STRING_CHARS} characters")
        room -= len(text)
        parts.append(text)
    return "".join(parts)


def _concat(run: _Run, *args: Any) -> Any:
    if args and all(isinstance(arg, str) for arg in args):
        if sum(len(arg) for arg in args) > MAX_STRING_CHARS:
            raise LimitExceededError(f"a string of more than {MAX_STRING_CHARS} characters")
        return "".join(args)
    result: list[Any] = []
    for arg in args:
        if arg is not None and not isinstance(arg, list):
            raise ArityError(f"concat takes all strings or all lists, not {_text(arg, 30)}")
        result.extend(arg or ())
    return run.built(result)


_BUILTINS: dict[str, _Builtin] = {
    "+": (_add, 0, None),
    "-": (_subtract, 1, None),
    "*": (_multiply, 0, None),
    "/": (_divide, 1, None),
    "mod": (_mod, 2, 2),
    "abs": (_abs, 1, 1),
    "max": (_extreme("max", max), 1, None),
    "min": (_extreme("min", min), 1, None),
    "=": (_equals, 1, None),
    "!=": (_not_equals, 1, None),
    "<": (_comparison("<", operator.lt), 1, None),
    ">": (_comparison(">", operator.gt), 1, None),
    "<=": (_comparison("<=", operator.le), 1, None),
    ">=": (_comparison(">=", operator.ge), 1, None),
    "not": (_not, 1, 1),
    "list": (_list, 0, None),
    "first": (_first, 1, 1),
    "rest": (_rest, 1, 1),
    "nth": (_nth, 2, 3),
    "count": (_count, 1, 1),
    "get": (_get, 2, 3),
    "str": (_str, 0, None),
    "concat": (_concat, 0, None),
}
BUILTIN_NAMES = frozenset(_BUILTINS)


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
    """Evaluates language data against a table of verbs, within step and depth budgets."""

    __slots__ = ("max_steps", "max_depth")

    def __init__(self, *, max_steps: int = 10_000, max_depth: int = 64):
        if max_steps < 1 or max_depth < 1:
            raise ConfigError("max_steps and max_depth must be at least 1")
        self.max_steps = max_steps
        self.max_depth = max_depth

    def evaluate(
        self,
        expr: Any,
        verbs: Mapping[str, Callable[..., Any]] = _NO_VERBS,
        *,
        bindings: Mapping[str, Any] | None = None,
    ) -> Any:
        """Evaluate ``expr``; symbols resolve to ``bindings``, form heads to ``verbs``."""
        run = _Run(verbs, self.max_steps, self.max_depth)
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
