"""The node: the management daemon that hosts cells, and what runs it.

``Node`` differentiates into its role and routes messages to its cells; ``run_node`` runs one as
a process until SIGTERM; ``LocalCluster`` runs several in this process on the embedded transport;
``NodeProcesses`` starts and kills node processes; ``metrics`` and ``logs`` are what a node shows.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
