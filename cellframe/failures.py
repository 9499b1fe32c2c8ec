"""How a failure is logged: one line for an ordinary error of cellframe's tree, the traceback
for anything else.

An ordinary error is a ``CellframeError`` raised on purpose with a message that says all
there is to say: an operator's ``(differentiate "no-such-role")`` (``ConfigError``), a verb
given the wrong arguments (``ArityError``), text that does not read (``ReadError``), a role in
quarantine (``ClusterError``), a closed transport, a corrupt segment. Its traceback only shows
where cellframe noticed the mistake, and 40 lines of it on a node's console hid the one line
that mattered (issue 19, item 7). Anything else (a ``KeyError`` or a ``TypeError`` from cell
code) is a bug, and its traceback is what finds it. Two members of the tree are bugs too:
``StateMachineError`` (a class that declares an impossible machine) and ``CellCrashedError``
(whose cause is the crash to read).

Every place that logs an action, a verb, a hook or a callback that raised goes through
``log_failure``, so that the rule is the same on every path: an ordinary error's traceback is
still there at DEBUG (``-vv``), for the rare case where the mistake is cellframe's own.

A line that a sender causes with each message (an action failing on its arguments, a refused
delivery) is logged through a ``LineBudget``: anyone holding a key could otherwise fill a
node's disk and bury every other line, one bad message at a time. Each kind of line gets a few
lines a minute; the rest are counted, and the next line of that kind let through says how many
were held back. Each owner of such lines (a node, a cell, a consumer) keeps its own budget.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable

from .errors import CellCrashedError, CellframeError, StateMachineError

__all__ = ["LineBudget", "is_ordinary", "log_failure", "log_limited"]

#: Members of the tree that are raised by a bug, not by a mistake of whoever sent or configured.
_BUGS = (StateMachineError, CellCrashedError)


def is_ordinary(error: BaseException) -> bool:
    """True for an error of cellframe's tree that its message explains (see the module)."""
    return isinstance(error, CellframeError) and not isinstance(error, _BUGS)


class LineBudget:
    """At most ``lines`` log lines of each kind per ``window`` seconds; the others are counted.

    ``admit(kind)`` says whether a line of that kind may be logged now, and with what to add
    to it: the last line a window allows says that more are counted, and the first line of a
    later window says how many were held back. At most ``kinds`` kinds are remembered (the
    oldest is forgotten first), so the budget's memory is bounded whatever the kinds are.
    """

    def __init__(self, lines: int = 5, window: float = 60.0, kinds: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lines, self.window, self.kinds = lines, window, kinds
        self.held = 0  #: lines held back since the budget was made, every kind
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[Hashable, list[float]] = {}  # kind -> [start, logged, held]

    def admit(self, kind: Hashable) -> str | None:
        """None to hold the line back, else the text to add to it (often empty)."""
        now = self._clock()
        with self._lock:
            window = self._windows.get(kind)
            if window is None or now - window[0] >= self.window:
                held = int(window[2]) if window is not None else 0
                if window is None and len(self._windows) >= self.kinds:
                    del self._windows[next(iter(self._windows))]
                self._windows[kind] = [now, 1, 0]
                logged = 1
            elif window[1] < self.lines:
                window[1] += 1
                held, logged = 0, int(window[1])
            else:
                window[2] += 1
                self.held += 1
                return None
        note = f" ({held} more like this were not logged)" if held else ""
        if logged == self.lines:
            note += f" (more like this in the next {self.window:g} s are counted, not logged)"
        return note


def log_limited(logger: logging.Logger, budget: LineBudget, kind: Hashable, level: int,
                line: str, *args: object) -> None:
    """Log ``line % args`` at ``level`` if ``budget`` admits a line of ``kind`` now."""
    if not logger.isEnabledFor(level):
        return
    note = budget.admit(kind)
    if note is not None:
        logger.log(level, line + note, *args)


def log_failure(logger: logging.Logger, error: BaseException, what: str, *args: object,
                level: int = logging.ERROR, budget: LineBudget | None = None,
                kind: Hashable = None) -> None:
    """Log that ``what % args`` failed with ``error``, as ``WHAT: TYPE: MESSAGE``: one line for
    an ordinary error (its traceback at DEBUG only), followed by the traceback for a bug.
    With a ``budget``, a failure a sender can cause once a message: only if the budget admits
    a line of ``(kind, the error's type)`` now."""
    if not logger.isEnabledFor(level):
        return
    note = ""
    if budget is not None:
        admitted = budget.admit((kind, type(error).__name__))
        if admitted is None:
            return
        note = admitted
    line = f"{what}: %s: %s{note}"
    if is_ordinary(error):
        logger.log(level, line, *args, type(error).__name__, error)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(f"{what}: the traceback of that %s", *args, type(error).__name__,
                         exc_info=error)
    else:
        logger.log(level, line, *args, type(error).__name__, error, exc_info=error)
