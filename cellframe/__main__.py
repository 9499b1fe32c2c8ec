"""``python -m cellframe``: the same as the ``cellframe`` command."""

from .cli.main import main

main()
