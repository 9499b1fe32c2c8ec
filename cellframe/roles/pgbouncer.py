"""The pgbouncer cell: the cluster keeps pgbouncer's write alias on the masters that answer.

A node in role ``pgbouncer`` runs next to a pgbouncer and owns its configuration file. The
cell reads the multi-master layout from DNS (``PgLayout.from_dns``: ``pg.masters`` and
``pg.read`` at ``_cluster``), and runs a ``BouncerDriver`` on a thread of its own: every
``pgbouncer.interval-ms`` (200) it probes each master with ``SELECT 1`` (a deadline of
``pgbouncer.probe-ms``, 1000, so a hung server counts as lost), and when the set that answers
changes it rewrites the file and sends ``RELOAD`` on pgbouncer's console. The probe is how
cellframe learns that a *database* is lost: membership only knows cellframe nodes, and a
master's server can die under a node that lives, or the other way round.

Membership news is a hint: the cell binds ``membership.down.*`` and ``membership.leave.*``,
and on ``(member-down ...)`` or ``(member-leave ...)`` it asks the driver for a round at once
instead of at the end of its interval. The probe is the judge, so the messages are
idempotent: a repeated or late one (a master that is back already) finds the live set that
is written already, and changes nothing. After each RELOAD the driver tells the cell, which
emits ``event.pgbouncer-reloaded.<node>`` with the masters lost, back and live.

A driver that cannot start (no layout in DNS yet, ``cellframe[postgres]`` not installed) does
not stop the cell: it logs the reason at ERROR, emits ``event.pgbouncer-not-driven.<node>``
(once per reason), and tries again every second, so a layout added to DNS is taken up.

Its DNS settings, in the node's record or, for every node that may take the role (a spare
beside a pgbouncer of its own), at ``_cluster``; the node's record wins::

    pgb-01 IN TXT "role=pgbouncer" "pgbouncer.config=/etc/pgbouncer/pgbouncer.ini"
                  "pgbouncer.listen=127.0.0.1:6432" "pgbouncer.auth-file=/etc/pgbouncer/userlist.txt"

``pgbouncer.config`` is required; ``pgbouncer.listen`` (127.0.0.1:6432) is where pgbouncer
listens, written into the file and used to reach its console as ``pgbouncer.admin-user``
(``postgres``), one of its ``admin_users``; ``pgbouncer.auth-file`` (``userlist.txt`` beside
the file) and ``pgbouncer.auth-type`` (``trust``) are written as given, and so is
``pgbouncer.query-timeout-ms`` (0, off), pgbouncer's ``query_timeout``, which frees a client
stuck on a hung master (``BouncerSettings``). The cell needs
``cellframe[postgres]``, imported only when it starts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pykka

from ..cell.cell import Cell
from ..cell.statemachine import transition
from ..config.txtconfig import int_setting
from ..errors import CellframeError, ConfigError
from ..language.symbols import Keyword, Symbol
from ..wire.envelope import Message

__all__ = ["BouncerCell", "RELOADED_VERB"]

log = logging.getLogger(__name__)

#: The verb the driver's thread tells the cell after a RELOAD.
RELOADED_VERB = "pgbouncer-reloaded"
#: Seconds between tries to start a driver that could not start (and between ticks).
RETRY_START = 1.0


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"setting 'pgbouncer.listen': {text!r} is not HOST:PORT")
    return host, int(port)


class BouncerCell(Cell):
    """Owns a pgbouncer's configuration: rewrites it and RELOADs when a master is lost or back."""

    role = "pgbouncer"
    states = ("driving",)
    initial = "driving"
    bindings = ("membership.down.*", "membership.leave.*")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings: dict[str, str] = {}
        for layer in self.cell_setting_layers():  # _cluster's, then the node's own
            settings.update(layer)
        config = settings.get("pgbouncer.config")
        if not config:
            raise ConfigError(f"{self.cell_name}: role pgbouncer needs the setting "
                              "pgbouncer.config=PATH (pgbouncer's configuration file)")
        self.config_path = Path(config)
        self.listen = _listen(settings.get("pgbouncer.listen", "127.0.0.1:6432"))
        self.admin_user = settings.get("pgbouncer.admin-user", "postgres")
        self.auth_file = settings.get("pgbouncer.auth-file", str(self.config_path.parent / "userlist.txt"))
        self.auth_type = settings.get("pgbouncer.auth-type", "trust")
        self.interval = int_setting(settings, "pgbouncer.interval-ms", 200, minimum=10) / 1000
        self.probe_timeout = int_setting(settings, "pgbouncer.probe-ms", 1000, minimum=10) / 1000
        self.query_timeout = int_setting(settings, "pgbouncer.query-timeout-ms", 0) / 1000
        self.driver: Any = None  # a BouncerDriver once started (psycopg is imported then)
        self.hints = 0
        self.not_started = ""  # why the driver could not start, when it could not

    def on_start(self) -> None:
        super().on_start()
        self._start_driver()

    def cell_tick_interval(self) -> float | None:
        return RETRY_START

    @transition("tick")
    def tick(self) -> None:
        """Start the driver if it could not start yet (DNS without a layout, no extra)."""
        if self.driver is None:
            self._start_driver()

    def _start_driver(self) -> None:
        """Start the driver; on a CellframeError say why (once per reason) and let the next
        tick try again: an exception in ``on_start`` would stop the actor unseen by its
        node's supervisor (pykka calls no ``on_failure`` for it)."""
        try:
            self.driver = self._new_driver().start()
        except CellframeError as error:
            if str(error) != self.not_started:
                self.not_started = str(error)
                log.error("%s: not driving pgbouncer, trying again every %g s: %s",
                          self.cell_name, RETRY_START, error)
                self.cell_host.emit("pgbouncer-not-driven", cell=self.cell_name, error=str(error))
            return
        self.not_started = ""
        log.info("%s: driving pgbouncer %s:%d (%s) over masters %s", self.cell_name,
                 *self.listen, self.config_path, ", ".join(self.driver.layout.names()))

    def _new_driver(self) -> Any:
        from ..pgmulti import BouncerDriver, BouncerSettings, PgLayout

        resolver = self.cell_host.resolver
        if resolver is None:
            raise ConfigError("role pgbouncer reads the masters from DNS, and its node has no "
                              "resolver")
        host, port = self.listen
        settings = BouncerSettings(
            listen_addr=host, listen_port=port, admin_users=(self.admin_user,),
            auth_file=self.auth_file, auth_type=self.auth_type, query_timeout=self.query_timeout)
        from psycopg.conninfo import make_conninfo

        admin = make_conninfo(host=host, port=port, dbname="pgbouncer", user=self.admin_user)
        me = self.actor_ref

        def changed(lost: list[str], back: list[str]) -> None:  # the driver's thread: only tell
            try:
                me.tell(Message([Symbol(RELOADED_VERB), Keyword("lost"), " ".join(lost),
                                 Keyword("back"), " ".join(back)]))
            except pykka.ActorDeadError:
                pass

        return BouncerDriver(lambda: PgLayout.from_dns(resolver), self.config_path, admin,
                             settings, interval=self.interval, probe_timeout=self.probe_timeout,
                             source=f"DNS, by node {self.cell_host.name}", on_change=changed)

    def on_stop(self) -> None:
        self._stop_driver()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._stop_driver()
        super().on_failure(exception_type, exception_value, traceback)

    def _stop_driver(self) -> None:
        driver, self.driver = self.driver, None
        if driver is not None:
            driver.stop()

    # -- membership: a hint to probe now ----------------------------------------------------

    @transition("member-down")
    def member_down(self, node: Any = None, **extra: Any) -> None:
        """A node is down: probe the masters now (the probe decides; repeats change nothing)."""
        self._probe_now()

    @transition("member-leave")
    def member_leave(self, node: Any = None, **extra: Any) -> None:
        self._probe_now()

    def _probe_now(self) -> None:
        self.hints += 1
        if self.driver is not None:
            self.driver.probe_now()

    # -- what the driver did ------------------------------------------------------------------

    @transition(RELOADED_VERB)
    def reloaded(self, lost: Any = "", back: Any = "", **extra: Any) -> None:
        """The driver rewrote the file and RELOADed pgbouncer: say so as an event."""
        live = sorted(self.driver.live) if self.driver is not None else []
        self.cell_host.emit(RELOADED_VERB, cell=self.cell_name, lost=str(lost), back=str(back),
                            live=" ".join(live))

    def cell_snapshot(self) -> dict[str, Any]:
        snapshot = super().cell_snapshot()
        driver = self.driver
        if driver is not None:
            snapshot["pgbouncer"] = {"config": str(self.config_path), "live": sorted(driver.live),
                                     "masters": driver.layout.names(), "reloads": driver.reloads,
                                     "failures": driver.failures, "rounds": driver.rounds,
                                     "hints": self.hints}
        return snapshot
