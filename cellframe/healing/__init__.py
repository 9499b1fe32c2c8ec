"""Healing: how a node learns that a peer is lost, and what the cluster does about it.

The phi-accrual ``detector`` judges silence, ``membership`` keeps every node's view of the
others from heartbeats, and the ``reconciler`` turns a shortfall against DNS intent into claims
that spares make; for a role given as a range (``web=3..6``), ``capacity`` moves the count it
works to with the load the holders report.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
