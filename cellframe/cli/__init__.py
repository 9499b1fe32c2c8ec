"""The ``cellframe`` command: its subcommands, the REPL, ``status`` and the demo.

Library code never imports this package; it imports the library.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
