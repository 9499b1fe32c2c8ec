"""The HTTP server a web cell runs: the user's WSGI app, named in DNS, under waitress.

Why waitress: it is a production WSGI server that is pure Python with no dependencies (the
node stays one process and installs anywhere), maintained by the Pylons project, and it runs
in a thread of the node's process, so the cell reads the load its requests make directly.
A pre-forking server (gunicorn) would put the requests in other processes, out of the cell's
sight; an ASGI server would ask every app to be async. Measured through HAProxy against the
same app under plain waitress: see docs/web.md.

``load_app("package.module:attr")`` imports the app and raises ``ConfigError`` with the reason
when it cannot (a claim for the role then fails with that message). ``HttpServer`` serves it
on a thread; ``health`` answers the health path itself (200 while serving, 503 while draining)
with its requests in flight as JSON, so HAProxy's checks see what the cell sees.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ConfigError, MissingExtraError
from .load import LoadMeter, WsgiApp

__all__ = ["HttpServer", "load_app"]

log = logging.getLogger(__name__)


def load_app(target: str) -> WsgiApp:
    """The WSGI app ``target`` names (``package.module:attr``); ConfigError if it cannot load."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"app={target!r}: expected package.module:attribute")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error while importing the user's code is a bad setting
        raise ConfigError(f"app={target!r}: cannot import {module_name}: {exc!r}") from exc
    app = getattr(module, attr, None)
    if not callable(app):
        raise ConfigError(f"app={target!r}: {module_name} has no callable {attr!r}")
    return app  # type: ignore[no-any-return]


class HttpServer:
    """The user's app under waitress on ``host:port``, measured, with a health path."""

    def __init__(self, app: WsgiApp, host: str, port: int, *, health_path: str = "/health",
                 threads: int = 8, window: float = 1.0) -> None:
        try:
            from waitress.server import create_server
        except ImportError as exc:
            raise MissingExtraError("web cells need waitress: pip install 'cellframe[web]'") from exc
        # waitress warns of every request that waits for a thread; the meter counts them.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self.meter = LoadMeter(app, window=window, threads=threads)
        self.health_path = health_path
        self.draining = False
        self._map: dict[int, Any] = {}  # waitress's sockets: the listener and every connection
        try:
            self._server = create_server(self._route, map=self._map, host=host, port=port,
                                         threads=threads, ident="cellframe", channel_timeout=30)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc
        self.host, self.port = host, int(self._server.effective_port)
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name=f"http:{self.port}",
                                        daemon=True)

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening, close every connection (requests in progress are cut) and wait for
        the serving thread to end.

        The sockets are closed on the serving thread itself, through waitress's trigger (its
        loop runs what the trigger is handed): closed from here, they raced the loop's
        ``select``, whose thread then died of ``EBADF`` (seen in CI).
        """
        self._closing = True
        try:
            if not self._thread.is_alive():
                raise OSError("not serving")
            self._server.trigger.pull_trigger(self._close_sockets)
        except OSError:  # not serving, or the trigger is gone already (seen once in CI)
            self._close_sockets()  # from here, then: _serve takes the loop's EBADF calmly
        self._thread.join(timeout)  # the loop ends when its map is empty
        # Its worker threads end after the request each is running: waited for a second at
        # most (an app that hangs must not hang the cell's stop), then left to end alone.
        self._server.task_dispatcher.shutdown(timeout=min(timeout, 1.0))

    def _serve(self) -> None:
        try:
            self._server.run()
        except OSError as error:  # its sockets closed under it: expected only once closing
            if not self._closing:
                raise
            log.debug("http:%s: serving loop ended on %r while closing", self.port, error)

    def _close_sockets(self) -> None:
        for channel in list(self._map.values()):
            if channel is not self._server and channel is not self._server.trigger:
                channel.close()
        try:
            self._server.close()  # the listener and the trigger
        except OSError as error:  # closed already
            log.debug("http:%s: %r while closing", self.port, error)

    def pending(self) -> int:
        """Connections with a request read but not answered, or an answer not yet sent: what a
        drain waits for besides the requests the meter sees (those queued for a thread)."""
        busy = 0
        for channel in list(self._map.values()):
            if (getattr(channel, "requests", None) or getattr(channel, "request", None) is not None
                    or getattr(channel, "total_outbufs_len", 0)):
                busy += 1
        return busy

    def _route(self, environ: dict[str, Any],
               start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == self.health_path:
            return self.health(start_response)
        return self.meter(environ, start_response)

    def health(self, start_response: Callable[..., Any]) -> Iterable[bytes]:
        status = "503 Service Unavailable" if self.draining else "200 OK"
        body = json.dumps({"draining": self.draining, "in-flight": self.meter.in_flight,
                           "served": self.meter.total}).encode()
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(body)))])
        return [body]
