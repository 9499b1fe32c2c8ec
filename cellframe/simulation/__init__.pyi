# The names this package re-exports, read by type checkers and by lazy_loader (see __init__.py).
from .sim import PartitionFault as PartitionFault
from .sim import Simulation as Simulation
from .sim import SimulationReport as SimulationReport
from .sim import simulate as simulate

__all__ = [
    "PartitionFault",
    "Simulation",
    "SimulationReport",
    "simulate",
]
