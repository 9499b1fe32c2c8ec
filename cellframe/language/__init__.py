"""The control language: s-expressions read by lark, written canonically, evaluated safely.

Text becomes plain data (``read``), data becomes canonical text (``write``), and the
``Evaluator`` runs data against the verbs a cell declares and nothing else. Hy source can be
read into the same data (``read_hy``). The grammar, ``cellframe.lark``, ships beside these
modules. See ``docs/language.md``.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
