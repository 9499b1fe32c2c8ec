"""Shell completion of ``cellframe send`` targets, from the cluster's DNS (click's own
completion: ``eval "$(_CELLFRAME_COMPLETE=bash_source cellframe)"``).

The names come from the zone, not the live cluster: a completion must answer in
milliseconds, and asking every node for its status takes a second. The zone is
``$CELLFRAME_ZONE``, else the bundled one; its ``_nodes`` give ``node:`` and ``cell:``
names (a node's role cell is named after it), its ``_cluster`` intent the ``role:`` and
``each:`` names.
"""

from __future__ import annotations

import os
from typing import Any

import click
from click.shell_completion import CompletionItem

__all__ = ["complete_target", "target_names"]

_KINDS = ("all", "node:", "role:", "each:", "cell:")


def target_names(zone_file: str) -> list[str]:
    """Every target the zone names: ``all``, ``node:N``, ``cell:N``, ``role:R``, ``each:R``."""
    from ..config.resolvers import ZoneFileResolver
    from ..errors import CellframeError

    try:
        with ZoneFileResolver(zone_file) as resolver:
            nodes = resolver.node_names()
            roles = sorted(resolver.cluster_intent().roles)
    except CellframeError:
        return ["all"]
    return ["all", *(f"{kind}:{n}" for kind in ("node", "cell") for n in nodes),
            *(f"{kind}:{r}" for kind in ("role", "each") for r in roles)]


def complete_target(ctx: click.Context, param: click.Parameter,
                    incomplete: str) -> list[CompletionItem]:
    """Click's completion call-back for a TARGET argument."""
    import logging

    from ..config.bundled import bundled_zone

    logging.getLogger("cellframe").setLevel(logging.CRITICAL)  # a zone's warnings: not here
    zone = os.environ.get("CELLFRAME_ZONE") or str(bundled_zone())
    if ":" not in incomplete:
        candidates: list[Any] = [k for k in _KINDS if k.startswith(incomplete)]
        if len(candidates) != 1 or candidates[0] == "all":
            return [CompletionItem(c) for c in candidates]
    return [CompletionItem(t) for t in target_names(zone) if t.startswith(incomplete)]
