# The names this package re-exports, read by type checkers and by lazy_loader (see __init__.py).
from .children import NodeProcesses as NodeProcesses
from .cluster import LocalCluster as LocalCluster
from .node import Node as Node
from .process import run_node as run_node
from .supervisor import RestartIntensity as RestartIntensity
from .supervisor import SupervisionPolicy as SupervisionPolicy

__all__ = [
    "LocalCluster",
    "Node",
    "NodeProcesses",
    "RestartIntensity",
    "SupervisionPolicy",
    "run_node",
]
