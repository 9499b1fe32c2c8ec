"""``python -m cellframe``: the same as the ``cellframe`` command."""

from .cli import main

main()
