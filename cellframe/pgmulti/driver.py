"""Keeping pgbouncer's write alias on the masters that answer: probe, rewrite, ``RELOAD``.

pgbouncer cannot skip a dead host in a host list, so a lost master must leave the ``write``
alias by a new configuration file. ``BouncerDriver.poll()`` does one round:

1. re-read the layout (from DNS) once its TTL has run out, so a master added or removed there
   reaches pgbouncer too;
2. probe every master at once, each with ``SELECT 1`` on a connection of its own, with a
   deadline: a refused connection, an error or no answer in time is "lost" (a hung server
   that still accepts TCP is caught by the deadline, not by the kernel);
3. if the live set or the layout changed, write the file again (atomically) and send
   ``RELOAD`` on the admin console; pgbouncer then closes the old entry's server connections
   as they are released and opens new ones on the new host list.

A master that answers again is put back the same way. The first round also compares the file
on disk with what it would write, and rewrites it if they differ: a driver that starts (or a
cell that takes over on another node) after a master was lost does not trust an old file.

``start()`` runs rounds on a thread of its own every ``interval``, and ``probe_now()`` asks for
one at once (the ``pgbouncer`` role cell does on membership news); ``on_change(lost, back)``
is called on that thread after each RELOAD. Tests call ``poll()``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import psycopg

from ..errors import CellframeError, StoreError
from .bouncer import BouncerSettings, bouncer_ini, write_file_atomically
from .layout import MasterEndpoint, PgLayout

__all__ = ["BouncerDriver", "admin_command"]

log = logging.getLogger(__name__)


def admin_command(admin_conninfo: str, command: str) -> list[tuple[Any, ...]]:
    """Run one command on pgbouncer's admin console (``RELOAD``, ``SHOW DATABASES``...).

    No parameters, so psycopg sends it with the simple query protocol, the only one the
    console speaks."""
    try:
        with psycopg.connect(admin_conninfo, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(command.encode())
            return cur.fetchall() if cur.description else []
    except psycopg.Error as exc:
        raise StoreError(f"pgbouncer console: {command}: {exc}") from exc


def _settings_of(ini: str) -> list[str]:
    """The lines of a pgbouncer file that pgbouncer reads: no comments, no blank lines."""
    return [line.strip() for line in ini.splitlines() if line.strip() and not line.lstrip().startswith(";")]


class _Probe:
    """One master's probe connection, kept open between rounds (a new connection forks a
    backend each time)."""

    def __init__(self, master: MasterEndpoint, timeout: float) -> None:
        self.master = master
        self.timeout = timeout
        self.conn: psycopg.Connection[Any] | None = None

    def answers(self) -> bool:
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(
                    self.master.endpoint.conninfo(connect_timeout=max(2, int(self.timeout) + 1),
                                                  application_name="cellframe-bouncer-probe"),
                    autocommit=True)
            self.conn.execute("SELECT 1").fetchone()
            return True
        except psycopg.Error as error:
            log.debug("probe of master %s failed: %s", self.master.name, error)
            self.close()
            return False

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass


class BouncerDriver:
    """Rewrites pgbouncer's configuration and RELOADs it when the live masters change."""

    def __init__(
        self,
        layout_source: Callable[[], PgLayout],
        config_path: str | Path,
        admin_conninfo: str,
        settings: BouncerSettings,
        *,
        interval: float = 0.2,
        probe_timeout: float = 1.0,
        source: str = "DNS",
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[list[str], list[str]], None] | None = None,
    ) -> None:
        self._layout_source = layout_source
        self.config_path = Path(config_path)
        self.admin_conninfo = admin_conninfo
        self.settings = settings
        self.interval = interval
        self.probe_timeout = probe_timeout
        self.source = source
        self._clock = clock
        self._on_change = on_change
        self.layout = layout_source()
        self._layout_due = clock() + self.layout.ttl
        self.live: frozenset[str] = frozenset(self.layout.names())
        self.reloads = 0
        self.failures = 0
        self.rounds = 0
        self._probes: dict[str, _Probe] = {}
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="cf-bouncer-probe")
        self._checked_file = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> bool:
        """One round; True if pgbouncer was reconfigured. ``rounds`` counts those finished."""
        try:
            return self._round()
        finally:
            self.rounds += 1

    def _round(self) -> bool:
        layout_changed = self._refresh_layout()
        live = self._probe_all()
        if not layout_changed and live == self.live and self._file_as_written(live):
            return False
        lost, back = sorted(self.live - live), sorted(live - self.live)
        self.apply(live)
        if lost:
            log.warning("master %s lost: out of pgbouncer's write alias", ", ".join(lost))
        if back:
            log.info("master %s answers again: back in pgbouncer's write alias", ", ".join(back))
        if self._on_change is not None:
            self._on_change(lost, back)
        return True

    def _file_as_written(self, live: frozenset[str]) -> bool:
        """True once the file on disk says what this driver writes for ``live``, comments
        aside (read on the first round only: afterwards only this driver writes it)."""
        if self._checked_file:
            return True
        try:
            on_disk = self.config_path.read_text(encoding="utf-8")
        except OSError:
            return False
        wanted = bouncer_ini(self.layout, self.settings, live=live, source=self.source)
        self._checked_file = _settings_of(on_disk) == _settings_of(wanted)
        return self._checked_file

    def apply(self, live: frozenset[str]) -> None:
        """Write the configuration for ``live`` masters and RELOAD pgbouncer."""
        write_file_atomically(self.config_path,
                              bouncer_ini(self.layout, self.settings, live=live, source=self.source))
        admin_command(self.admin_conninfo, "RELOAD")
        self.live = live
        self.reloads += 1
        self._checked_file = True

    def _refresh_layout(self) -> bool:
        now = self._clock()
        if now < self._layout_due:
            return False
        try:
            layout = self._layout_source()
        except CellframeError as error:
            log.warning("pgbouncer layout not re-read, keeping the last one: %s", error)
            self._layout_due = now + max(1.0, self.interval)
            return False
        self._layout_due = now + max(layout.ttl, self.interval)
        if layout == self.layout:
            return False
        for name in set(self._probes) - set(layout.names()):
            self._probes.pop(name).close()
        self.layout = layout
        self.live = self.live & frozenset(layout.names())
        return True

    def _probe_all(self) -> frozenset[str]:
        probes = []
        for master in self.layout.masters:
            probe = self._probes.get(master.name)
            if probe is None or probe.master != master:
                if probe is not None:
                    probe.close()
                probe = self._probes[master.name] = _Probe(master, self.probe_timeout)
            probes.append(probe)
        futures = {probe.master.name: self._pool.submit(probe.answers) for probe in probes}
        deadline = time.monotonic() + self.probe_timeout
        live = set()
        for name, future in futures.items():
            try:
                if future.result(timeout=max(0.0, deadline - time.monotonic())):
                    live.add(name)
            except FutureTimeout:  # a hung server: drop the connection, probe afresh next time
                self._probes.pop(name).close()
        return frozenset(live)

    # -- running on a thread --------------------------------------------------------------

    def start(self) -> BouncerDriver:
        self._thread = threading.Thread(target=self._run, name="cf-bouncer-driver", daemon=True)
        self._thread.start()
        return self

    def probe_now(self) -> None:
        """Ask the running thread for a round now rather than at the end of its interval."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except CellframeError as error:  # pgbouncer itself down: try again next round
                self.failures += 1
                log.warning("pgbouncer driver: %s", error)
            self._wake.wait(self.interval)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for probe in self._probes.values():
            probe.close()

    def __enter__(self) -> BouncerDriver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
