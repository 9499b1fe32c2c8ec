# The names this package re-exports, read by type checkers and by lazy_loader (see __init__.py).
from .capacity import CapacityPlanner as CapacityPlanner
from .capacity import ScaleSettings as ScaleSettings
from .detector import PhiAccrual as PhiAccrual
from .majority import holds_majority as holds_majority
from .membership import HealingConfig as HealingConfig
from .membership import Membership as Membership
from .reconciler import Reconciler as Reconciler
from .watchring import watched_by as watched_by
from .watchring import watchers_of as watchers_of

__all__ = [
    "CapacityPlanner",
    "HealingConfig",
    "Membership",
    "PhiAccrual",
    "Reconciler",
    "ScaleSettings",
    "holds_majority",
    "watched_by",
    "watchers_of",
]
