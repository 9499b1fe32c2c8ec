"""Driving ``cellframe`` in-process as an operator does (click's CliRunner), with the root
logger put back afterwards, and in-process nodes on a topology of the test's own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cellframe.cli.main import main
from cellframe.node.node import Node
from cellframe.roles.registry import RoleRegistry
from cellframe.wire.signing import Signer
from tests.node_support import Tally

__all__ = ["ZONE", "invoke", "running_signed_nodes", "signed_nodes", "write_private"]

ZONE = Path(__file__).resolve().parent.parent / "examples" / "cluster.zone"


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``cellframe ARGS`` as a user would; a traceback of our own fails the test."""
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def write_private(path: Path, content: str | bytes) -> None:
    """Write a key or secret file readable by its owner alone, as ``cellframe keys new``
    does (one others may read draws a warning on stderr)."""
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    path.chmod(0o600)


@contextmanager
def running_signed_nodes(amqp_names: Any, tmp_path: Path,
                         names: tuple[str, str]) -> Iterator[dict[str, Any]]:
    """Two signed in-process nodes (the first plays ``tally``), and the CLI options that
    reach them."""
    secret_file = tmp_path / "secret"
    write_private(secret_file, b"a cluster secret for the cli tests")
    signer = Signer(secret_file.read_bytes(), exchange=amqp_names.exchange)
    started = []
    try:
        for name, role in zip(names, ("tally", None), strict=True):
            transport = amqp_names.connect(name=f"cf-test-{amqp_names.token}-{name}")
            node = Node(name, transport=transport, signer=signer, role=role,
                        registry=RoleRegistry({"tally": [Tally]}),
                        queue_prefix=amqp_names.queue_prefix)
            started.append(node.start())
        yield {"nodes": started, "options": [
            "--amqp", amqp_names.url, "--exchange", amqp_names.exchange, "--queue-prefix",
            amqp_names.queue_prefix, "--secret-file", str(secret_file)]}
    finally:
        for node in started:
            node.stop()


@pytest.fixture
def signed_nodes(amqp_names: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Nodes op-a (tally) and op-b, signed, and the CLI options that reach them."""
    with running_signed_nodes(amqp_names, tmp_path, ("op-a", "op-b")) as found:
        yield found
