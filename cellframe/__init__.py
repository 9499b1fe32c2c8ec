"""cellframe: self-healing clusters built like stem cells.

Every node carries all the code, learns who it is from DNS, and differentiates into the cells
its role needs; cells are pykka actors driven by declarative state machines and programmed
with s-expressions. This module re-exports the names a user needs; the rest live in the
documented subpackages (``cellframe.language``, ``cellframe.cell``, ``cellframe.roles``,
``cellframe.store``, ``cellframe.errors``...), see docs/architecture.md.

The names are listed once, in ``__init__.pyi``, and each is imported from its module on first
use (lazy_loader): ``import cellframe`` alone loads none of pika, Hy, dnspython, lark, the
store or the CLI, and takes about 2 ms where importing everything took 420 ms.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
