"""cellframe: self-healing clusters built like stem cells."""

from __future__ import annotations

from .envelope import Envelope, Message
from .errors import *  # noqa: F403
from .errors import __all__ as _error_names
from .symbols import Keyword, Symbol

__all__ = sorted(["Envelope", "Keyword", "Message", "Symbol", *_error_names])
