# The names this package re-exports, read by type checkers and by lazy_loader (see __init__.py).
from .main import main as main

__all__ = [
    "main",
]
