"""Healing: how a node learns that a peer is lost, and what the cluster does about it.

The phi-accrual ``detector`` judges silence, ``membership`` keeps every node's view of the
others from heartbeats, and the ``reconciler`` turns a shortfall against DNS intent into claims
that spares make.
"""

from __future__ import annotations

from .detector import PhiAccrual
from .membership import HealingConfig, Membership
from .reconciler import Reconciler

__all__ = [
    "HealingConfig",
    "Membership",
    "PhiAccrual",
    "Reconciler",
]
