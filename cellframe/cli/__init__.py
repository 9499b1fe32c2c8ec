"""The ``cellframe`` command: its subcommands, the REPL, ``status`` and the demo.

Library code never imports this package; it imports the library.
"""

from __future__ import annotations

from .main import main

__all__ = [
    "main",
]
