"""The fixtures of cellframe's own tests. Shared services come from cellframe's pytest plugin
(``cellframe/testing/plugin.py``: the broker, BIND 9, local clusters, the fake clock); the
fixtures here are the ones only this project needs."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from tests.dns_docs import ZONE_FILE
from tests.node_support import Wire
from tests.timing_support import CLUSTER_URLS, RMQC, cluster_up, cold_start_cluster, stop_cluster

pytest_plugins = ["pytester"]  # tests/test_testing_kit.py runs pytest on projects of its own


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("cellframe"):
        raise pytest.UsageError(
            "cellframe's pytest plugin is not loaded: install the project (`pip install -e"
            " '.[dev]'`) so that its pytest11 entry point is registered, and do not pass"
            " `-p no:cellframe`")


@pytest.fixture(autouse=True)
def logging_as_it_was() -> Iterator[None]:
    """Commands run in-process (click's CliRunner) set up logging as a ``cellframe`` process
    would (the root's handler on the runner's stderr, ``-v``'s level, the demo and the local
    REPL quieting ``cellframe`` to ERROR): put it back, so a later test's ``caplog`` sees what
    its code logs."""
    loggers = [logging.getLogger(name) for name in ("", "cellframe", "pika")]
    levels = [logger.level for logger in loggers]
    handlers = [list(logger.handlers) for logger in loggers]
    yield
    for logger, level, kept in zip(loggers, levels, handlers, strict=True):
        logger.setLevel(level)
        logger.handlers[:] = kept


@pytest.fixture(scope="module")
def bind_zone() -> str:
    """The DNS tests run against the bundled zone (docs/dns.md shows the same one)."""
    return ZONE_FILE.read_text()


@pytest.fixture(params=["memory", "amqp"])
def wire(request: pytest.FixtureRequest) -> Iterator[Wire]:
    """Nodes and clients on one broker, in-process or the real RabbitMQ: the node tests run
    on both alike."""
    if request.param == "memory":
        wire = Wire.in_process()
    else:
        wire = Wire.on_rabbitmq(request.getfixturevalue("amqp_names"))
    try:
        yield wire
    finally:
        wire.close()


@pytest.fixture(scope="session")
def rabbitmq_cluster() -> Iterator[list[str]]:
    """The URLs of the 3-node cluster (``../shared/tools/rabbitmq-cluster``), started from
    nothing if it is not running (then stopped after the session)."""
    started = False
    if not cluster_up():
        if not (RMQC / "rabbitmq-cluster").exists():
            if os.environ.get("CI") == "true":
                pytest.fail(f"{RMQC / 'rabbitmq-cluster'} is missing")
            pytest.skip(f"{RMQC / 'rabbitmq-cluster'} is missing")
        cold_start_cluster()
        started = True
    yield CLUSTER_URLS
    if started:
        stop_cluster()
