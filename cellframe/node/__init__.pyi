# The names this package re-exports, read by type checkers and by lazy_loader (see __init__.py).
from .children import NodeProcesses as NodeProcesses
from .cluster import LocalCluster as LocalCluster
from .node import Node as Node
from .process import run_node as run_node
from .shard_journal import ShardStore as ShardStore
from .shard_journal import shard_journal as shard_journal
from .supervisor import RestartIntensity as RestartIntensity
from .supervisor import SupervisionPolicy as SupervisionPolicy

__all__ = [
    "LocalCluster",
    "Node",
    "NodeProcesses",
    "RestartIntensity",
    "ShardStore",
    "SupervisionPolicy",
    "run_node",
    "shard_journal",
]
