"""A started ``LocalCluster`` that is stopped whatever happens: for tests and scripts.

``running_cluster`` starts the nodes, waits until the cluster is ready (by default: every
node sees every node alive, with the same roles), and stops every node on the way out, also
when the start or the test fails half-way; the plugin's ``local_cluster`` fixture uses it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..node.cluster import LocalCluster

__all__ = ["running_cluster"]

#: Long enough for a dozen nodes to hear each other on two busy cores.
READY_TIMEOUT = 30.0  # a deadline, not a wait: a quiet machine is ready in well under a second


@contextlib.contextmanager
def running_cluster(zone: str | Path | None = None, *,
                    ready: Callable[[LocalCluster], object] | None = LocalCluster.converged,
                    timeout: float = READY_TIMEOUT, **options: Any) -> Iterator[LocalCluster]:
    """A LocalCluster of ``zone`` (or ``resolver=``) with ``options``, started and ``ready``
    (``None``: do not wait), stopped afterwards."""
    cluster = LocalCluster(zone, **options)
    try:
        cluster.start()
        if ready is not None:
            cluster.wait_for(lambda: ready(cluster), timeout,
                             what=f"the cluster to be ready ({getattr(ready, '__name__', ready)})",
                             show=cluster.roles)
        yield cluster
    finally:
        cluster.stop()
