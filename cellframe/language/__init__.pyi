# The names this package re-exports, read by type checkers and by lazy_loader (see __init__.py).
from .evaluator import Evaluator as Evaluator
from .evaluator import read_eval as read_eval
from .hylang import hy_to_text as hy_to_text
from .hylang import read_hy as read_hy
from .plist import from_plist as from_plist
from .plist import to_plist as to_plist
from .printer import write as write
from .reader import read as read
from .reader import read_all as read_all
from .symbols import Keyword as Keyword
from .symbols import Symbol as Symbol

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
