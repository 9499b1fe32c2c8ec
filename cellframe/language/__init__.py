"""The control language: s-expressions read by lark, written canonically, evaluated safely.

Text becomes plain data (``read``), data becomes canonical text (``write``), and the
``Evaluator`` runs data against the verbs a cell declares and nothing else. Hy source can be
read into the same data (``read_hy``). The grammar, ``cellframe.lark``, ships beside these
modules. See ``docs/language.md``.
"""

from __future__ import annotations

from .evaluator import Evaluator, read_eval
from .hylang import hy_to_text, read_hy
from .plist import from_plist, to_plist
from .printer import write
from .reader import read, read_all
from .symbols import Keyword, Symbol

__all__ = [
    "Evaluator",
    "Keyword",
    "Symbol",
    "from_plist",
    "hy_to_text",
    "read",
    "read_all",
    "read_eval",
    "read_hy",
    "to_plist",
    "write",
]
