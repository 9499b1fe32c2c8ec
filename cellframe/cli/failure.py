"""How a command fails: one clear line for the operator, and exit code 2."""

from __future__ import annotations

import click

from ..errors import CellframeError

__all__ = ["CliError", "fail"]


class CliError(click.ClickException):
    """A CellframeError shown to the operator as one clear line, exit code 2."""

    exit_code = 2


def fail(error: CellframeError) -> CliError:
    """The CliError that shows ``error``."""
    return CliError(str(error))
