"""Evaluation budgets: the work and the bytes one evaluation may spend, counted as it runs.

Each limit the language had bounded one thing (steps, form depth, string length, list
length), and an adversarial run multiplied them: 39 KB of text printed a shared list of 90,000
values 4,900 times (two minutes of CPU), 61 KB built 3,000 distinct strings of a million
characters (2.8 GB), and comparing two such lists 3,200 times took 62 s. So every evaluation
carries a :class:`Meter`, and every built-in charges it for what it touches, before or while
it does the work: printing charges each value printed, comparing lists each pair compared,
``concat`` each value (or 1,024 characters) of its result, multiplying big integers the
product of their sizes. The evaluation stops with ``LimitExceededError`` the moment the work
or the bytes built pass their budget.

One unit of work is about a microsecond of CPU at worst on the machine that set the prices:
printing a value measured 0.33 to 0.39 us, comparing a pair of nested values 0.82 us, writing
an integer of 8,192 bits 90 us (charged 128 units), of 14,285 bits (a 4,300-digit literal)
290 us (charged 389), multiplying two of 8,192 bits 34 us (charged 128).

Whatever a built-in returns also obeys the reader's own limits (``MAX_VALUE_BYTES`` of text,
lists nested at most ``MAX_VALUE_DEPTH`` deep), so it can always be printed and read back,
and Python's ``==`` and ``repr`` never meet data deeper than that. A value's printed size,
depth and cost to print are measured once and remembered for the rest of the evaluation
(shared parts are counted each time they appear, as the printer visits them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError, EvaluationError, LimitExceededError
from .printer import NEEDS_ESCAPE as _NEEDS_ESCAPE
from .reader import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH
from .symbols import Keyword, Symbol

__all__ = [
    "DEFAULT_BUDGET",
    "MAX_INT_BITS",
    "MAX_VALUE_BYTES",
    "MAX_VALUE_DEPTH",
    "Meter",
    "check_budget",
]

MAX_INT_BITS = 8192
#: Built values print in at most this many bytes of UTF-8, and nest lists at most this deep:
#: the reader's own defaults, so the reader reads back whatever evaluation builds.
MAX_VALUE_BYTES = DEFAULT_MAX_BYTES
MAX_VALUE_DEPTH = DEFAULT_MAX_DEPTH

#: The budgets of one evaluation when nothing else is said (DNS may set them: see
#: ``cellframe.config.txtconfig.LANGUAGE_SETTING_KEYS``). ``max_work`` at about a
#: microsecond a unit keeps the worst message to about 50 ms of CPU; ``max_steps`` (each
#: sub-expression evaluated, about a microsecond each too) to 10 ms more.
DEFAULT_BUDGET: Mapping[str, int] = {
    "max_steps": 10_000,
    "max_depth": 64,
    "max_work": 50_000,
    "max_bytes": 4 * 1024 * 1024,
}

#: Units of work (or steps) between two moments an evaluation lets other threads run: about
#: a quarter of a millisecond (every 1,000 gave pongs of 4.5 ms at the median, 250 gave 3.1,
#: 100 gave 2.8, against 1.4 to 2.2 with no attack).
YIELD_EVERY = 250
_NAMED = '"\\\n\t\r'  # escaped as two characters; any other escape is \\uXXXX
_SMALL_STRING = 64  # shorter strings are measured again rather than remembered
_INT_WORDS = 1234  # / 4096: just above log10(2), so digits from bits is an upper bound


def check_budget(**budget: int) -> None:
    """Raise ConfigError unless every budget is an integer of at least 1."""
    for name, value in budget.items():
        if type(value) is not int or value < 1:
            raise ConfigError(f"{name} must be an integer of at least 1, not {value!r}")


class Meter:
    """What one evaluation has spent: steps, units of work and bytes built, against its
    budgets; and the measured shape of every list (and long string) it has met."""

    __slots__ = ("max_steps", "max_depth", "max_work", "max_bytes", "steps", "work",
                 "allocated", "shapes", "due", "steps_due")

    def __init__(self, max_steps: int, max_depth: int, max_work: int, max_bytes: int) -> None:
        self.max_steps = max_steps
        self.max_depth = max_depth
        self.max_work = max_work
        self.max_bytes = max_bytes
        self.steps = 0
        self.work = 0
        self.allocated = 0
        # id -> (value, printed bytes, list depth, units to print); the value is held so that
        # its id stays unique for the whole evaluation. Made when first needed.
        self.shapes: dict[int, tuple[Any, int, int, int]] | None = None
        # The work and the steps at which to next look up: let other threads run, or stop.
        self.due = min(YIELD_EVERY, max_work)
        self.steps_due = min(YIELD_EVERY, max_steps)

    def charge(self, work: int, nbytes: int = 0) -> None:
        """Spend ``work`` units and ``nbytes`` bytes; LimitExceededError past either budget."""
        self.work += work
        self.allocated += nbytes
        if self.work > self.due or self.allocated > self.max_bytes:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Raise LimitExceededError past a budget; else let the process's other threads run.

        A cell burning its budget holds the GIL, which CPython hands over only every 5 ms of
        a running thread, and a pong crosses several threads (the I/O thread, the daemon
        cell, the I/O thread again, the client's). While another cell of the node burned its
        budget, pongs took 4.6 ms at the median and up to 39 ms (2.8 ms at most without it);
        with ``time.sleep(0)`` every ``YIELD_EVERY`` units, 3.1 ms at the median."""
        if self.work > self.max_work:
            raise LimitExceededError(f"evaluation budget exhausted: more than {self.max_work} "
                                     "units of work (setting language.max-work)")
        if self.allocated > self.max_bytes:
            raise LimitExceededError(f"evaluation budget exhausted: more than {self.max_bytes} "
                                     "bytes built (setting language.max-bytes)")
        if self.steps > self.max_steps:
            raise LimitExceededError(f"more than {self.max_steps} evaluation steps")
        if self.work > self.due or self.steps > self.steps_due:
            time.sleep(0)
            self.due = min(self.work + YIELD_EVERY, self.max_work)
            self.steps_due = min(self.steps + YIELD_EVERY, self.max_steps)

    def admit(self, value: Any) -> Any:
        """Return what a built-in returned, once it is within the language's limits and its
        bytes are charged; raise LimitExceededError or EvaluationError if it is not."""
        if self.work > self.due:  # the unit the caller counted
            self.checkpoint()
        kind = type(value)
        if kind is int or (kind is not bool and isinstance(value, int)):
            bits = value.bit_length()
            if bits > 64:
                if bits > MAX_INT_BITS:
                    raise LimitExceededError(f"integer result of more than {MAX_INT_BITS} bits")
                self.charge(0, bits >> 3)
        elif kind is float:
            if not math.isfinite(value):
                raise EvaluationError("float result out of range")
        elif isinstance(value, list | str):
            self.shape(value)
        return value

    # -- shapes: printed size, depth and cost to print ---------------------------------------

    def shape(self, value: Any) -> tuple[int, int, int]:
        """(bytes of its canonical text, lists nested, units of work to print it) for
        ``value``; LimitExceededError if the text would pass MAX_VALUE_BYTES or the lists
        MAX_VALUE_DEPTH, or if a list contains itself."""
        if isinstance(value, list):
            return self._list_shape(value)
        size, cost = self._atom(value)
        return size, 0, cost

    def _atom(self, value: Any) -> tuple[int, int]:
        """(bytes of its text, units to print it) of a value that is not a list."""
        kind = type(value)
        if kind is int or (kind is not bool and isinstance(value, int)):
            bits = value.bit_length()
            digits = (bits * _INT_WORDS >> 12) + 1 + (value < 0)
            return digits, (1 if bits <= 64 else 1 + (bits * bits >> 19))  # quadratic to write
        if kind is str or isinstance(value, str):
            if len(value) <= _SMALL_STRING and value.isascii() and _printable(value):
                return len(value) + 2, 1
            return self._string(value)
        if kind is Symbol or kind is Keyword:
            name = value.name
            cost = 1 + (len(name) >> 6)  # the printer checks the name with the grammar's regex
            if cost > 1:
                self.charge(cost)
            size = len(name) if name.isascii() else len(name.encode("utf-8", "surrogatepass"))
            return size + (kind is Keyword), cost
        if kind is bool:
            return 5, 1
        if kind is float:
            return len(repr(value)), 1
        return 3, 1  # nil; or not language data, which the printer refuses with its own error

    def _string(self, value: str) -> tuple[int, int]:
        """Measure a string that may be long or need escapes, remembering long ones. The
        prices (measured on 64K characters): printable ASCII is checked at about 1 ns a
        character, other printable text at 6 ns; text with characters to escape is counted by a
        regex at up to 130 ns an escape, and the printer escapes each with a Python call."""
        shapes = self.shapes
        if shapes is not None:
            known = shapes.get(id(value))
            if known is not None:
                return known[1], known[3]
        length = len(value)
        if value.isascii():
            self.charge(1 + (length >> 10))
            plain = _printable(value)
            size = length + 2
        else:
            self.charge(1 + (length >> 7))
            plain = _printable(value)
            if plain:
                size = len(value.encode("utf-8")) + 2
        cost = 1 + (length >> 7)
        if not plain:
            self.charge(length >> 3)
            escapes = _NEEDS_ESCAPE.subn("", value)[1]
            named = sum(value.count(char) for char in _NAMED)  # two bytes each, the rest six
            size = 2 + len(value.encode("utf-8", "surrogatepass")) + named + 5 * (escapes - named)
            cost += (length >> 3) + escapes
        if size > MAX_VALUE_BYTES:
            raise LimitExceededError(f"a string whose text is more than {MAX_VALUE_BYTES} bytes "
                                     "(the reader could not read it back)")
        if length > _SMALL_STRING:
            self._remember(value, size, 0, cost)
        return size, cost

    def _remember(self, value: Any, size: int, depth: int, cost: int) -> None:
        if self.shapes is None:
            self.shapes = {}
        self.shapes[id(value)] = (value, size, depth, cost)

    def _list_shape(self, root: list[Any]) -> tuple[int, int, int]:
        """The shape of a list whose lists inside are all measured already (what built-ins
        make), in one loop; any other goes to ``_walk``. Remembered either way. Small
        integers and short plain strings, most items, are sized in the loop itself."""
        shapes = self.shapes
        if shapes is None:
            shapes = self.shapes = {}
        else:
            known = shapes.get(id(root))
            if known is not None:
                return known[1], known[2], known[3]
        count = len(root)
        self.work += count  # before the loop: a long foreign list costs before it is read
        if self.work > self.due:
            self.checkpoint()
        size, depth, cost = (count or 1) + 1, 1, 1  # "(", ")" and a space between items
        for item in root:
            kind = type(item)
            if kind is int:
                bits = item.bit_length()
                if bits <= 64:
                    size += (bits * _INT_WORDS >> 12) + 1 + (item < 0)
                    cost += 1
                    continue
            elif kind is str:
                if len(item) <= _SMALL_STRING and item.isascii() and _printable(item):
                    size += len(item) + 2
                    cost += 1
                    continue
            elif kind is list:
                known = shapes.get(id(item))
                if known is None:
                    return self._walk(root)
                size += known[1]
                if known[2] >= depth:
                    depth = known[2] + 1
                cost += known[3]
                continue
            elif isinstance(item, list):
                return self._walk(root)
            item_size, item_cost = self._atom(item)
            size += item_size
            cost += item_cost
        if size > MAX_VALUE_BYTES or depth > MAX_VALUE_DEPTH:
            _check(size, depth)
        shapes[id(root)] = (root, size, depth, cost)
        return size, depth, cost

    def _walk(self, root: list[Any]) -> tuple[int, int, int]:
        """Measure any list with an explicit stack (no recursion, whatever its depth),
        charging a unit per value and remembering every list finished."""
        shapes = self.shapes
        assert shapes is not None  # made by _list_shape
        # A frame: the list, its iterator, and [bytes, depth, cost] so far.
        stack = [(root, iter(root), [max(len(root), 1) + 1, 1, 1])]
        walking = {id(root)}
        while True:
            current, items, totals = stack[-1]
            for item in items:
                if isinstance(item, list):
                    known = shapes.get(id(item))
                    if known is None:
                        self._enter(item, stack, walking)
                        break
                    _add(totals, known[1], known[2], known[3], len(stack))
                else:
                    item_size, item_cost = self._atom(item)
                    _add(totals, item_size, 0, item_cost, len(stack))
            else:
                stack.pop()
                walking.discard(id(current))
                shape = (totals[0], totals[1], totals[2])
                shapes[id(current)] = (current, *shape)
                if not stack:
                    return shape
                _add(stack[-1][2], *shape, len(stack))

    def _enter(self, item: list[Any], stack: list[Any], walking: set[int]) -> None:
        if id(item) in walking:
            raise LimitExceededError("a list that contains itself")
        if len(stack) >= MAX_VALUE_DEPTH:
            raise _too_deep()
        self.charge(len(item))
        walking.add(id(item))
        stack.append((item, iter(item), [max(len(item), 1) + 1, 1, 1]))


def _printable(text: str) -> bool:
    """Whether ``text`` prints as itself between quotes. Every character the printer escapes
    but the quote and the backslash is one ``str.isprintable`` refuses (controls, the line
    and paragraph separators, lone surrogates)."""
    return text.isprintable() and '"' not in text and "\\" not in text


def _too_deep() -> LimitExceededError:
    return LimitExceededError(f"lists nested deeper than {MAX_VALUE_DEPTH} (the reader could not "
                              "read them back)")


def _check(size: int, depth: int) -> None:
    if depth > MAX_VALUE_DEPTH:
        raise _too_deep()
    if size > MAX_VALUE_BYTES:
        raise LimitExceededError(f"a list whose text is more than {MAX_VALUE_BYTES} bytes "
                                 "(the reader could not read it back)")


def _add(totals: list[int], size: int, depth: int, cost: int, level: int) -> None:
    """Add one item's shape to its list's ``totals``; ``level`` is how deep that list is."""
    totals[0] += size
    totals[2] += cost
    if depth >= totals[1]:
        totals[1] = depth + 1
    _check(totals[0], level - 1 + totals[1])
