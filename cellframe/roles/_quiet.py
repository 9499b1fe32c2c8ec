"""Sending where nobody may be listening: fire and forget, without a warning if unroutable."""

from __future__ import annotations

import logging
from typing import Any

from ..cell.cell import Cell
from ..errors import CellframeError

__all__ = ["send_quietly"]

log = logging.getLogger(__name__)


def _ignore(envelope: Any, reason: str) -> None:
    log.debug("message %s had no listener: %s", envelope.message_id, reason)


def send_quietly(cell: Cell, target: str, expr: Any, *, reply_to: str | None = None) -> None:
    """Send ``expr`` to ``target`` for ``cell``: no listener is fine (a proxy not started yet,
    a backend role with no cell yet), and a closed transport (a killed node) sends nothing."""
    try:
        cell.cell_send(target, expr, reply_to=reply_to, on_return=_ignore)
    except CellframeError as error:
        log.debug("%s: not sent to %s: %s", cell.cell_name, target, error)
