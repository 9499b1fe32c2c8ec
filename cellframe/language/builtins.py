"""The built-ins: pure functions over language data, each paying for what it touches.

One table, ``BUILTINS``: name -> (function, fewest arguments, most or None). Each function
takes the evaluation's :class:`~.budget.Meter` first and charges it before or while it works:
a call costs a unit, and what is sized by its data costs by that size (see ``budget.py`` for
the prices). The evaluator passes every result through ``Meter.admit``, whichever built-in
made it, so the limits on what a built-in may return (integers of at most ``MAX_INT_BITS``,
finite floats, strings and lists the reader could read back) hold for the whole table.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ArityError, EvaluationError, LanguageError, LimitExceededError
from .budget import MAX_INT_BITS, MAX_VALUE_BYTES, Meter
from .printer import write, write_bounded
from .symbols import Keyword

__all__ = ["BUILTINS", "BUILTIN_NAMES", "Builtin", "arity_text", "describe", "truthy"]

Builtin = tuple[Callable[..., Any], int, "int | None"]

_LIST_BYTES, _SLOT_BYTES, _STR_BYTES = 56, 8, 49  # CPython's empty list, list slot, str
_SMALL_INT = 1 << 64


def arity_text(low: int, high: int | None) -> str:
    """How many arguments a built-in takes, in words."""
    if high is None:
        return f"at least {low} argument{'s' * (low != 1)}"
    if low == high:
        return f"{low} argument{'s' * (low != 1)}"
    return f"{low} to {high} arguments"


def describe(value: Any, limit: int = 60) -> str:
    """Short canonical text of ``value`` for an error message."""
    try:
        text = write_bounded(value, limit)
    except LanguageError:
        text = None
    if text is not None:
        return text
    if type(value) is list and value:
        return f"({describe(value[0], 20)} ...)"
    return f"<{type(value).__name__}>"


def truthy(value: Any) -> bool:
    """Only false and nil are false: 0, "" and () are true, as in Clojure."""
    return value is not None and value is not False


# -- numbers ---------------------------------------------------------------------------------


def _number(value: Any, name: str) -> int | float:
    if type(value) is int or type(value) is float:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise ArityError(f"{name} takes numbers, not {describe(value, 30)}")


def _checked(value: int | float) -> int | float:
    """Refuse results the language could not carry: huge integers, infinite floats."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EvaluationError("float result out of range")
    elif value.bit_length() > MAX_INT_BITS:
        raise LimitExceededError(f"integer result of more than {MAX_INT_BITS} bits")
    return value


def _quadratic(meter: Meter, a: int | float, b: int | float) -> None:
    """Charge a product, quotient or remainder of two integers by the product of their
    sizes (two of 8,192 bits: 34 us measured idle, 128 units; 3,986 bits 24 us under load, 30 units)."""
    if type(a) is int and type(b) is int:
        cost = a.bit_length() * b.bit_length() >> 19
        if cost:
            meter.charge(cost)


def _add(meter: Meter, *args: Any) -> int | float:
    total: int | float = 0
    for arg in args:
        total = _checked(total + _number(arg, "+"))
    return total


def _subtract(meter: Meter, first: Any, *rest: Any) -> int | float:
    if not rest:
        return -_number(first, "-")
    total = _number(first, "-")
    for arg in rest:
        total = _checked(total - _number(arg, "-"))
    return total


def _multiply(meter: Meter, *args: Any) -> int | float:
    total: int | float = 1
    for arg in args:
        factor = _number(arg, "*")
        if type(factor) is int and not -_SMALL_INT < factor < _SMALL_INT:
            _quadratic(meter, total, factor)
        total = _checked(total * factor)
    return total


def _divide(meter: Meter, first: Any, *rest: Any) -> float:
    if not rest:
        first, rest = 1, (first,)
    total = _number(first, "/")
    for arg in rest:
        if _number(arg, "/") == 0:
            raise EvaluationError("division by zero")
        _quadratic(meter, total, arg)
        total = _checked(total / arg)
    return float(total)


def _mod(meter: Meter, value: Any, divisor: Any) -> int | float:
    if _number(divisor, "mod") == 0:
        raise EvaluationError("mod by zero")
    _quadratic(meter, _number(value, "mod"), divisor)
    return value % divisor  # type: ignore[no-any-return]


def _abs(meter: Meter, value: Any) -> int | float:
    return abs(_number(value, "abs"))


def _extreme(name: str, pick: Callable[..., Any]) -> Callable[..., Any]:
    def extreme(meter: Meter, *args: Any) -> Any:
        return pick(_number(arg, name) for arg in args)

    return extreme


# -- comparing -------------------------------------------------------------------------------


def equal(meter: Meter, a: Any, b: Any) -> bool:
    """Language equality: like Python's, except that true is not 1 and false is not 0.

    With an explicit stack, charging each pair of values before it is compared and each
    1,024 characters of strings: no depth is too deep, and no comparison outruns its budget.
    """
    if type(a) is not list or type(b) is not list:  # two atoms, most often: no stack
        if a is b:
            return True
        if type(a) is bool or type(b) is bool:
            return type(a) is type(b) and a == b
        if type(a) is str and type(b) is str:
            meter.charge(len(a) >> 10)
        return bool(a == b)
    pairs = [(a, b)]
    while pairs:
        a, b = pairs.pop()
        if a is b:
            continue
        kind_a, kind_b = type(a), type(b)
        if kind_a is bool or kind_b is bool:
            if kind_a is not kind_b or a != b:
                return False
        elif kind_a is list and kind_b is list:
            if len(a) != len(b):
                return False
            meter.charge(len(a))
            pairs.extend(zip(reversed(a), reversed(b), strict=True))
        elif kind_a is str and kind_b is str:
            meter.charge(len(a) >> 10)
            if a != b:
                return False
        elif not a == b:
            return False
    return True


def _equals(meter: Meter, first: Any, *rest: Any) -> bool:
    return all(equal(meter, first, other) for other in rest)


def _not_equals(meter: Meter, first: Any, *rest: Any) -> bool:
    return not _equals(meter, first, *rest)


def _comparison(name: str, test: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def compare(meter: Meter, *args: Any) -> bool:
        if all(type(arg) is str for arg in args):
            meter.charge(sum(len(arg) for arg in args) >> 10)
        else:
            args = tuple(_number(arg, name) for arg in args)
        return all(test(a, b) for a, b in zip(args, args[1:], strict=False))

    return compare


def _not(meter: Meter, value: Any) -> bool:
    return not truthy(value)


# -- lists and strings -----------------------------------------------------------------------


def _list(meter: Meter, *items: Any) -> list[Any]:
    meter.allocated += _LIST_BYTES + _SLOT_BYTES * len(items)  # checked as it is admitted
    return list(items)


def _sequence(value: Any, name: str) -> list[Any]:
    if value is None:
        return []
    if type(value) is list or isinstance(value, list):
        return value
    raise ArityError(f"{name} takes a list or nil, not {describe(value, 30)}")


def _first(meter: Meter, value: Any) -> Any:
    items = _sequence(value, "first")
    return items[0] if items else None


def _rest(meter: Meter, value: Any) -> list[Any]:
    items = _sequence(value, "rest")
    meter.charge(len(items) >> 4, _LIST_BYTES + _SLOT_BYTES * len(items))
    return items[1:]


def _index(value: Any, name: str) -> int:
    if type(value) is not int:
        raise ArityError(f"{name} takes an integer index, not {describe(value, 30)}")
    return value


def _nth(meter: Meter, coll: Any, index: Any, *default: Any) -> Any:
    if not isinstance(coll, list | str):
        raise ArityError(f"nth takes a list or string, not {describe(coll, 30)}")
    position = _index(index, "nth")
    if 0 <= position < len(coll):
        return coll[position]
    if default:
        return default[0]
    raise EvaluationError(f"nth: index {position} is out of range for {len(coll)} items")


def _count(meter: Meter, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, list | str | Mapping):
        return len(value)
    raise ArityError(f"count takes a list, string, map or nil, not {describe(value, 30)}")


def _get(meter: Meter, coll: Any, key: Any, default: Any = None) -> Any:
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
    raise ArityError(f"get takes a map, list, string or nil, not {describe(coll, 30)}")


def _too_long() -> LimitExceededError:
    return LimitExceededError(f"a string whose text is more than {MAX_VALUE_BYTES} bytes "
                              "(the reader could not read it back)")


def _str(meter: Meter, *args: Any) -> str:
    """Strings as they are, other values as their canonical text, joined. Each value's
    size and cost to print are measured (and charged) before it is printed."""
    parts: list[str] = []
    room = MAX_VALUE_BYTES
    for arg in args:
        kind = type(arg)
        if kind is str:
            if len(arg) > 1024:
                meter.charge(len(arg) >> 10)
            text = arg
        elif kind is Keyword or kind is bool or arg is None or (
                kind is int and -_SMALL_INT < arg < _SMALL_INT):
            text = write(arg)  # a short atom: cheaper to write than to measure
        else:
            size, _depth, cost = meter.shape(arg)
            if size > room:
                raise _too_long()
            meter.charge(cost)
            text = write(arg)
        room -= len(text)
        if room < 0:
            raise _too_long()
        parts.append(text)
    meter.allocated += _STR_BYTES + MAX_VALUE_BYTES - room  # checked as it is admitted
    return "".join(parts)


def _concat(meter: Meter, *args: Any) -> Any:
    if args and all(isinstance(arg, str) for arg in args):
        total = sum(len(arg) for arg in args)
        if total > MAX_VALUE_BYTES:
            raise _too_long()
        meter.charge(total >> 10, _STR_BYTES + total)
        return "".join(args)
    total = 0
    for arg in args:
        if arg is not None and not isinstance(arg, list):
            raise ArityError(f"concat takes all strings or all lists, not {describe(arg, 30)}")
        total += len(arg or ())
    if total > MAX_VALUE_BYTES // 2:  # each value prints as a character and a space at least
        raise LimitExceededError(f"a list whose text is more than {MAX_VALUE_BYTES} bytes "
                                 "(the reader could not read it back)")
    meter.charge(total >> 4, _LIST_BYTES + _SLOT_BYTES * total)
    result: list[Any] = []
    for arg in args:
        result.extend(arg or ())
    return result


BUILTINS: dict[str, Builtin] = {
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
BUILTIN_NAMES = frozenset(BUILTINS)
