"""Cells: pykka actors whose mailboxes feed declarative state machines.

``Cell`` is what users subclass; ``transition`` and ``on`` declare its machine; ``CellHost`` is
what a cell may ask of the node hosting it, and ``StandaloneHost`` what a cell started alone
gets; the ``Outbox`` is where its messages go, and ``RecordingOutbox`` keeps them for a test.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
