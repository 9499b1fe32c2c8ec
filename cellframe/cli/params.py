"""The CLI's parameter types: what a command refuses with one line before it runs."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["POSITIVE_SECONDS", "SECONDS", "UTF8", "FilePath", "NumberRange", "Utf8Text"]


class Utf8Text(click.ParamType):
    """A text argument that must be valid UTF-8: a stray byte would otherwise reach the
    reader and the wire as a lone surrogate (``'\\udcff'``)."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value)
        for index, char in enumerate(text):
            if "\udc80" <= char <= "\udcff":  # how Python keeps an undecodable byte
                self.fail(f"byte 0x{ord(char) - 0xDC00:02x} at position {index} is not "
                          f"valid UTF-8", param, ctx)
        return text


UTF8 = Utf8Text()


class FilePath(click.Path):
    """A path option; a NUL byte, which no file name can hold, is refused here rather than
    by ``open`` with a ValueError."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and "\x00" in value:
            self.fail("a path cannot contain a NUL byte", param, ctx)
        return super().convert(value, param, ctx)


class NumberRange(click.FloatRange):
    """A number in range, and never ``nan`` (which every range comparison lets through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if seconds != seconds:
            self.fail(f"{value!r} is not a number", param, ctx)
        return seconds


#: Seconds that must not be negative (--wait, --timeout), and ones that must be positive.
SECONDS = NumberRange(min=0.0, max=86_400.0)
POSITIVE_SECONDS = NumberRange(min=0.0, min_open=True, max=86_400.0)
