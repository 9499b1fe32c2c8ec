"""The node: the management daemon that hosts cells, and what runs it.

``Node`` differentiates into its role and routes messages to its cells; ``run_node`` runs one as
a process until SIGTERM; ``LocalCluster`` runs several in this process on the embedded transport;
``NodeProcesses`` starts and kills node processes; ``metrics`` and ``logs`` are what a node shows.
"""

from __future__ import annotations

from .children import NodeProcesses
from .cluster import LocalCluster
from .node import Node
from .process import run_node

__all__ = [
    "LocalCluster",
    "Node",
    "NodeProcesses",
    "run_node",
]
