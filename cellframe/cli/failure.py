"""How a command fails: one clear line for the operator, and exit code 2.

A command turns the errors it expects into a ``CliError`` where it can say more; any other
ordinary ``CellframeError`` that escapes a command (a queue prefix too long for a queue name,
found by the broker transport) is turned into one at the top, by ``OneLineErrors``, the class
of the ``cellframe`` group. A bug keeps its traceback (``cellframe.failures``)."""

from __future__ import annotations

from typing import Any

import click

from ..errors import CellframeError
from ..failures import is_ordinary

__all__ = ["CliError", "OneLineErrors", "fail"]


class CliError(click.ClickException):
    """A CellframeError shown to the operator as one clear line, exit code 2."""

    exit_code = 2


def fail(error: CellframeError) -> CliError:
    """The CliError that shows ``error``."""
    return CliError(str(error))


class OneLineErrors(click.Group):
    """A command group that shows an ordinary CellframeError escaping any of its commands as
    one line with exit code 2, as a CliError; anything else goes on as it is."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CellframeError as error:
            if not is_ordinary(error):
                raise
            raise fail(error) from error
