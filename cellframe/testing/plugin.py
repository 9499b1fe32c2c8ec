"""cellframe's pytest plugin: real services and in-process clusters as fixtures.

Installed with cellframe and loaded by pytest through the ``pytest11`` entry point (named
``cellframe``; ``pytest -p no:cellframe`` turns it off). Its fixtures:

- ``amqp_url``: the broker of ``--amqp-uri`` (default ``amqp://guest:guest@127.0.0.1:5672/%2F``,
  or ``$CELLFRAME_TEST_AMQP``), checked once per run;
- ``amqp_names``: this test's own exchange and queue prefix on that broker (``AmqpNames``);
  its transports are closed, and its queues and exchanges deleted, after the test;
  ``amqp_connect`` is its ``connect``;
- ``bind_server``: a real BIND 9 on a loopback port serving ``bind_zone`` (one per module;
  override ``bind_zone`` to serve your own zone's text);
- ``haproxy_server``: a real HAProxy on a loopback port, its backend ``web`` empty and its
  runtime API on a Unix socket (``HaproxyProcess``), removed after the test;
- ``local_cluster``: ``local_cluster(zone, registry=..., ...)`` starts a ``LocalCluster``,
  waits until it converged, and stops it after the test;
- ``recording_outbox``: a ``RecordingOutbox``, for a cell started on its own;
- ``fake_clock``: a ``FakeClock``, for detectors, watchers and anything that takes ``now``.

A missing broker or ``named`` skips the tests that need them, and fails them under
``CI=true`` (``cellframe.testing.services``).

pytest imports this module in every run of every project that has cellframe installed, so it
imports nothing at the top but pytest and the standard library: pika, dnspython, Hy and the
rest of cellframe load inside the fixtures, when a test asks for one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..cell.outbox import RecordingOutbox
    from ..node.cluster import LocalCluster
    from ..transports.amqp import AmqpTransport
    from ..web.launch import HaproxyProcess
    from .amqp import AmqpNames
    from .bind import BindServer
    from .clock import FakeClock

DEFAULT_AMQP_URI = "amqp://guest:guest@127.0.0.1:5672/%2F"
AMQP_URI_VARIABLE = "CELLFRAME_TEST_AMQP"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cellframe", "cellframe: real services for tests")
    group.addoption("--amqp-uri", default=None, metavar="URI",
                    help=f"the RabbitMQ the amqp fixtures use (default: ${AMQP_URI_VARIABLE},"
                         f" else {DEFAULT_AMQP_URI})")


@pytest.fixture(scope="session")
def amqp_url(request: pytest.FixtureRequest) -> str:
    """The broker's URL; skips the test if nothing listens there (fails it under CI=true)."""
    from .services import require_amqp

    url = request.config.getoption("--amqp-uri") or os.environ.get(AMQP_URI_VARIABLE)
    return require_amqp(url or DEFAULT_AMQP_URI)


@pytest.fixture
def amqp_names(amqp_url: str) -> Iterator[AmqpNames]:
    """This test's exchange, dead letters and queue prefix; all gone after the test."""
    from .amqp import AmqpNames

    names = AmqpNames(amqp_url)
    try:
        yield names
    finally:
        names.cleanup()


@pytest.fixture
def amqp_connect(amqp_names: AmqpNames) -> Callable[..., AmqpTransport]:
    """``connect(urls=None, **options)``: a new AmqpTransport on this test's topology."""
    return amqp_names.connect


@pytest.fixture(scope="module")
def bind_zone() -> str:
    """The text of the zone ``bind_server`` serves (it needs a ``$ORIGIN`` line); override
    this fixture to serve your own. By default, the resolver conformance zone."""
    from .resolvers import conformance_zone

    return conformance_zone()


@pytest.fixture(scope="module")
def bind_server(bind_zone: str) -> Iterator[BindServer]:
    """A real BIND 9 serving ``bind_zone`` on a loopback port, for the tests of one module."""
    from .bind import run_named

    with run_named(bind_zone) as server:
        yield server


@pytest.fixture
def haproxy_server() -> Iterator[HaproxyProcess]:
    """A private HAProxy: frontend ``.url``, admin socket ``.socket_path``, backend ``web``."""
    from .haproxy import run_haproxy

    with run_haproxy() as server:
        yield server


@pytest.fixture
def local_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """``local_cluster(zone, **options)``: a started, converged LocalCluster (``options`` as
    for ``LocalCluster``, plus ``ready=`` and ``timeout=``), stopped after the test."""
    from .cluster import running_cluster

    started: list[LocalCluster] = []
    with contextlib.ExitStack() as clusters:
        def start(zone: str | Path | None = None, **options: Any) -> LocalCluster:
            if "workdir" not in options:  # each its own, so their log sumps do not mix
                options["workdir"] = tmp_path / f"cluster-{len(started)}"
                options["workdir"].mkdir()
            started.append(clusters.enter_context(running_cluster(zone, **options)))
            return started[-1]

        yield start


@pytest.fixture
def recording_outbox() -> RecordingOutbox:
    """An outbox that keeps what a cell sends (``.sent``) and dead-letters (``.dead_letters``)."""
    from ..cell.outbox import RecordingOutbox

    return RecordingOutbox()


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock that moves only when the test says: ``advance``, ``sleep``, ``ticks``."""
    from .clock import FakeClock

    return FakeClock()
