"""Cluster status: ask every node for ``(status)``, gather the call-backs, show a table.

Fire and forget all the way: the request goes to ``all``; each node calls back with
``(node-status ...)``, whose shape ``cellframe.node.status`` defines and decodes; whatever has
arrived when the window closes is the picture (a node that did not answer in time is listed as
silent if the others' membership views know it). An answer not of that shape is logged and
left out.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rich.table import Table

from ..client import Client
from ..errors import LanguageError
from ..language.symbols import Keyword, Symbol
from ..node.status import STATUS_VERB, decode_status
from ..wire.routing import ALL

__all__ = ["collect_status", "decode_status", "status_table", "to_json_ready"]

log = logging.getLogger(__name__)

#: The cell counters the table sums per node, in its column order.
_TOTALS = ("applied", "ignored", "refused", "errors", "dead_lettered")


def collect_status(client: Client, *, window: float = 1.0, expected: int | None = None) -> list[dict[str, Any]]:
    """Broadcast ``(status)`` and return the decoded answers that arrive within ``window``
    seconds (sooner once ``expected`` nodes answered), sorted by node name."""
    first = len(client.replies)
    client.send(ALL, [Symbol("status")])
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        answers = _answers(client, first)
        if expected is not None and len(answers) >= expected:
            break
        client.wait_for_replies(len(client.replies) + 1, max(0.0, deadline - time.monotonic()))
    return sorted(_answers(client, first).values(), key=lambda s: s["node"])


def _answers(client: Client, first: int) -> dict[str, dict[str, Any]]:
    answers = {}
    for reply in client.replies[first:]:
        if isinstance(reply.expr, list) and reply.expr and reply.expr[0] == STATUS_VERB:
            try:
                status = decode_status(reply.expr)
            except LanguageError as error:
                log.warning("a status from %s left out: %s", reply.sender, error)
                continue
            answers[status["node"]] = status
    return answers


def status_table(statuses: list[dict[str, Any]]) -> Table:
    """One row per node: role, cells and states, health, heartbeat, message counters."""
    table = Table(title=f"cellframe cluster: {len(statuses)} nodes answered", expand=False)
    for column in ("node", "role", "cells (state)", "health", "last heartbeat", "applied",
                   "ignored", "refused", "errors", "dead letters", "store"):
        table.add_column(column)
    views = _membership_views(statuses)
    for status in statuses:
        cells = [c for c in status["cells"] if "members" not in c]
        totals = {k: sum(c["counters"].get(k, 0) for c in status["cells"]) for k in _TOTALS}
        health, seen = _health(status["node"], views)
        store = [c["store"] for c in status["cells"] if isinstance(c.get("store"), dict)]
        table.add_row(
            status["node"], status.get("role") or "spare",
            ", ".join(f"{c['name']} ({_cell_condition(c)})" for c in cells) or "-",
            health, seen,
            *(str(totals[k]) for k in _TOTALS),
            _store_summary(store),
        )
    return table


def _membership_views(statuses: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [c["members"] for s in statuses for c in s["cells"] if isinstance(c.get("members"), list)]


def _health(node: str, views: list[list[dict[str, Any]]]) -> tuple[str, str]:
    """The worst health any live node reports for ``node``, and the freshest heartbeat lag."""
    states, lags = [], []
    for view in views:
        for member in view:
            if isinstance(member, dict) and member.get("name") == node:
                states.append(str(member.get("status", "?")))
                if isinstance(member.get("silence"), int | float):
                    lags.append(member["silence"])
    if not states:
        return "-", "-"
    worst = next((s for s in ("down", "held", "suspect", "alive") if s in states), states[0])
    return worst, f"{min(lags) * 1000:.0f} ms ago" if lags else "-"


def _store_summary(stores: list[dict[str, Any]]) -> str:
    if not stores:
        return "-"
    records = sum(s.get("records", 0) for s in stores)
    partitions = sum(s.get("partitions", 0) for s in stores)
    return f"{records} records / {partitions} partitions"


def to_json_ready(value: Any) -> Any:
    """Status data with Symbols and Keywords turned into plain strings, for ``--json``."""
    if isinstance(value, dict):
        return {str(k): to_json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json_ready(v) for v in value]
    if isinstance(value, Symbol | Keyword):
        return str(value)
    return value


def _cell_condition(cell: dict[str, Any]) -> str:
    """A cell's state while it runs; else its supervisor's condition (restarting, failed),
    with its restarts when it has any."""
    condition = cell.get("condition", "running")
    shown = cell["state"] if condition == "running" else condition
    restarts = cell.get("restarts", 0)
    return f"{shown}, {restarts} restarts" if restarts else shown
