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
"""

from __future__ import annotations

import logging

from .errors import CellCrashedError, CellframeError, StateMachineError

__all__ = ["is_ordinary", "log_failure"]

#: Members of the tree that are raised by a bug, not by a mistake of whoever sent or configured.
_BUGS = (StateMachineError, CellCrashedError)


def is_ordinary(error: BaseException) -> bool:
    """True for an error of cellframe's tree that its message explains (see the module)."""
    return isinstance(error, CellframeError) and not isinstance(error, _BUGS)


def log_failure(logger: logging.Logger, error: BaseException, what: str, *args: object,
                level: int = logging.ERROR) -> None:
    """Log that ``what % args`` failed with ``error``, as ``WHAT: TYPE: MESSAGE``: one line for
    an ordinary error (its traceback at DEBUG only), followed by the traceback for a bug."""
    if not logger.isEnabledFor(level):
        return
    line = f"{what}: %s: %s"
    if is_ordinary(error):
        logger.log(level, line, *args, type(error).__name__, error)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(f"{what}: the traceback of that %s", *args, type(error).__name__,
                         exc_info=error)
    else:
        logger.log(level, line, *args, type(error).__name__, error, exc_info=error)
