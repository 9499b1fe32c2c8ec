"""Sending where nobody may be listening: fire and forget, without a warning if unroutable."""

from __future__ import annotations

import inspect
import logging
from typing import Any

from ..cell import Cell
from ..errors import CellframeError

__all__ = ["send_quietly"]

log = logging.getLogger(__name__)
_ACCEPTS_RETURNS: dict[type, bool] = {}


def _ignore(envelope: Any, reason: str) -> None:
    log.debug("message %s had no listener: %s", envelope.message_id, reason)


def send_quietly(cell: Cell, target: str, expr: Any, *, reply_to: str | None = None) -> None:
    """Send ``expr`` to ``target`` for ``cell``: no listener is fine (a proxy not started yet,
    a backend role with no cell yet), and a closed transport (a killed node) sends nothing."""
    outbox = cell.cell_outbox
    kind = type(outbox)
    if kind not in _ACCEPTS_RETURNS:
        _ACCEPTS_RETURNS[kind] = "on_return" in inspect.signature(outbox.send).parameters  # type: ignore[union-attr]
    try:
        if _ACCEPTS_RETURNS[kind]:
            outbox.send(target, expr, reply_to=reply_to, sender=cell.cell_name,  # type: ignore[union-attr, call-arg]
                        on_return=_ignore)
        else:
            cell.cell_send(target, expr, reply_to=reply_to)
    except CellframeError as error:
        log.debug("%s: not sent to %s: %s", cell.cell_name, target, error)
