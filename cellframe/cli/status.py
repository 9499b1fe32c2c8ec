"""Cluster status: ask every node for ``(status)``, gather the call-backs, show a table.

Fire and forget all the way: the request goes to ``all``; each node calls back with
``(node-status ...)``, whose shape ``cellframe.node.status`` defines and decodes; whatever has
arrived when the window closes is the picture (``picture.ClusterPicture``): a node that did
not answer in time is still listed, as silent, suspect, down or left, with whose membership
view says so. An answer not of that shape is logged and left out.
"""

from __future__ import annotations

import io
import logging
import math
import time
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..client import Client
from ..errors import LanguageError
from ..language.symbols import Keyword, Symbol
from ..node.status import STATUS_VERB, decode_status
from ..wire.routing import ALL
from .picture import ClusterPicture, MemberRow

__all__ = [
    "collect_status",
    "decode_status",
    "render_text",
    "roles_table",
    "status_table",
    "status_view",
    "to_json_ready",
]

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
    """One row per member any view knows, the silent and the dead included: role, cells and
    states, health with whose view says so, the freshest heartbeat another node heard, and
    the message counters. The roles (intent against actual) are ``roles_table``."""
    picture = ClusterPicture.from_statuses(statuses)
    gone = sum(not m.answered for m in picture.members)
    title = f"cellframe cluster: {picture.answered} of {len(picture.members)} nodes answered"
    table = Table(title=title + (f", {gone} did not" if gone else ""), expand=False)
    for column in ("node", "role", "cells (state)", "health", "last heartbeat", "applied",
                   "ignored", "refused", "errors", "dead letters", "store"):
        table.add_column(column)
    for member in picture.members:
        table.add_row(member.name, member.role or "spare", *_answer_columns(member),
                      style=None if member.live else "red")
    return table


def _answer_columns(member: MemberRow) -> list[str]:
    health = member.health
    if len(member.evidence) > 3:
        health += f" (per {len(member.evidence)} views)"
    elif member.evidence:
        health += f" (per {', '.join(member.evidence)})"
    lag = "-" if member.heartbeat_lag is None else _ago(member.heartbeat_lag)
    status = member.status
    if status is None:
        return ["- (no answer)", health, lag, *("-" for _ in _TOTALS), "-"]
    cells = [c for c in status["cells"] if "healing" not in c]
    totals = {k: sum(_count(c["counters"].get(k)) for c in status["cells"]) for k in _TOTALS}
    store = [c["store"] for c in status["cells"] if isinstance(c.get("store"), dict)]
    return [", ".join(f"{c['name']} ({_cell_condition(c)})" for c in cells) or "-", health, lag,
            *(str(totals[k]) for k in _TOTALS), _store_summary(store)]


def _ago(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms ago" if seconds < 1 else f"{seconds:.1f} s ago"


def roles_table(statuses: list[dict[str, Any]]) -> Table | None:
    """Per role: the intent, the live holders (``web 2/3``), what is missing. None when no
    node reports the intent."""
    picture = ClusterPicture.from_statuses(statuses)
    if not picture.intent_known:
        return None
    table = Table(title="roles: intent (DNS) against actual", expand=False)
    for column in ("role", "held / wanted", "missing", "held by"):
        table.add_column(column)
    for row in picture.roles:
        table.add_row(row.role, f"{len(row.holders)}/{row.wanted}", str(row.missing or "-"),
                      ", ".join(row.holders) or "-", style="red" if row.missing else None)
    return table


def status_view(statuses: list[dict[str, Any]]) -> Group:
    """Everything ``cellframe status`` prints: the members, the roles, the ranged roles'
    capacity against load (``web 4/3..6``), and what the healing does next (which spare
    takes which role, and why)."""
    from ..healing.capacity import capacity_lines

    picture = ClusterPicture.from_statuses(statuses)
    roles = roles_table(statuses)
    capacity: dict[str, Any] = next((cell["capacity"] for status in statuses for cell in status["cells"]
                     if isinstance(cell.get("capacity"), dict)), {})
    rows = {role: row for role, row in capacity.items()  # as picture._view_of reads a view
            if isinstance(role, str) and isinstance(row, dict) and {"held", "min", "max", "want"} <= row.keys()}
    ranges = [Text(f"capacity: {line}") for line in capacity_lines(rows)]
    steps = [Text(f"next: {step}") for step in picture.next_steps]
    return Group(status_table(statuses), *([roles] if roles is not None else []), *ranges,
                 *steps)


def render_text(renderable: Any, width: int = 200) -> str:
    """A rich renderable as plain text (no colours), for the REPL's ``,status``."""
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text().rstrip("\n")


def _store_summary(stores: list[dict[str, Any]]) -> str:
    if not stores:
        return "-"
    records = sum(_count(s.get("records")) for s in stores)
    partitions = sum(_count(s.get("partitions")) for s in stores)
    return f"{records} records / {partitions} partitions"


def _count(value: Any) -> int:
    """A counter of a node's answer, 0 if it is not one (see ``picture._view_of``)."""
    return value if type(value) is int else 0


def to_json_ready(value: Any) -> Any:
    """Data from the wire made fit for ``--json``: Symbols and Keywords as plain strings, and
    NaN or an infinity, which JSON has not (``json.dumps`` writes them anyway), as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
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
