"""The keep-alive cell: only sends. Every ``keepalive-ms`` it publishes ``(keep-alive :node N
:seq S :time T)`` to ``keepalive-target`` (default ``log.<node>.debug``, which a log sump
records). It declares no verb but ``tick`` and expects nothing back: whatever it is sent is a
counted no-op.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..cell.cell import Cell
from ..cell.statemachine import transition
from ..config.txtconfig import int_setting
from ..errors import ConfigError
from ..language.symbols import Keyword, Symbol
from ..wire.routing import log_key, validate_name
from ._quiet import send_quietly

__all__ = ["KeepAliveCell"]

log = logging.getLogger(__name__)


class KeepAliveCell(Cell):
    """Sends a keep-alive ping every period; receives nothing."""

    role = "keepalive"
    states = ("sending",)
    initial = "sending"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.period = int_setting(self.cell_settings, "keepalive-ms", 1000, minimum=10) / 1000
        except ConfigError as error:
            log.warning("%s: %s; every 1 s", self.cell_name, error)
            self.period = 1.0
        node = self.cell_host.name
        self.node_name = validate_name(node, "node name")
        self.target = self.cell_settings.get("keepalive-target") or log_key(node, "debug")
        self.seq = 0

    def cell_tick_interval(self) -> float | None:
        return self.period

    @transition("tick")
    def tick(self) -> None:
        self.seq += 1
        send_quietly(self, self.target, [Symbol("keep-alive"), Keyword("node"), self.node_name,
                                         Keyword("seq"), self.seq, Keyword("time"), time.time()])
