"""Where the control language's lark grammar lives, and how a parser is built from it.

The grammar ships inside the wheel as ``cellframe/language/cellframe.lark``, beside this module
(pyproject force-includes the top-level ``grammar/cellframe.lark`` there); in a source tree or
an editable install it is read from ``<repo>/grammar/cellframe.lark`` instead.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

from lark import Lark

__all__ = ["GRAMMAR_NAME", "grammar_text", "make_parser"]

GRAMMAR_NAME = "cellframe.lark"


@functools.cache
def grammar_text() -> str:
    """Return the text of the grammar, from the installed package or else the source tree."""
    packaged = resources.files(__package__) / GRAMMAR_NAME
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    source_tree = Path(__file__).resolve().parents[2] / "grammar" / GRAMMAR_NAME
    return source_tree.read_text(encoding="utf-8")


def make_parser(**options: Any) -> Lark:
    """Build a LALR parser of the grammar; ``options`` go to ``Lark`` (start, transformer...)."""
    options.setdefault("parser", "lalr")
    return Lark(grammar_text(), **options)
