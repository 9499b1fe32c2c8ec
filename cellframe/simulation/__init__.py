"""Simulation: the real membership code on a virtual clock and a virtual broker, for
thousands of nodes in one process (``cellframe simulate``)."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
