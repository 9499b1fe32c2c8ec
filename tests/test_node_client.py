"""The Node.js client of examples/node-client, written from docs/protocol.md alone, against
real nodes on RabbitMQ: if the spec and the Python implementation drift apart, this fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from cellframe import Signer, Symbol, read
from cellframe.testing import AmqpNames
from cellframe.wire.keys import Keyring, new_key
from tests.node_support import Wire

CLIENT = Path(__file__).resolve().parent.parent / "examples" / "node-client"
RUN_TIMEOUT = 120  # seconds for npm ci, or for the whole scenario on a loaded machine


@pytest.fixture(scope="module")
def node_client() -> Path:
    """The client's folder with its npm dependencies installed (``npm ci``, as .ci/run does)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node and npm are needed for the Node.js client test")
        pytest.skip("node and npm are not installed")
    if not (CLIENT / "node_modules" / "amqplib").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=CLIENT, check=True,
                       capture_output=True, timeout=RUN_TIMEOUT)
    return CLIENT


def run_check(client: Path, config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    done = subprocess.run(["node", "check.js", str(path)], cwd=client, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, f"node check.js failed:\n{done.stderr}"
    return json.loads(done.stdout)


@pytest.mark.amqp
def test_the_node_client_talks_to_an_unsigned_cluster_through_every_target(
        amqp_names: AmqpNames, node_client: Path, tmp_path: Path) -> None:
    wire = Wire.on_rabbitmq(amqp_names)
    try:
        names = [f"js-{uuid.uuid4().hex[:6]}" for _ in range(2)]
        for name in names:
            wire.node(name, role="tally")
        out = run_check(node_client, {
            "url": amqp_names.url, "exchange": amqp_names.topology["exchange"],
            "queuePrefix": amqp_names.queue_prefix, "nodes": names, "role": "tally",
            "cell": names[0]}, tmp_path)
    finally:
        wire.close()
    assert out["pong_nodes"] == sorted(names)
    assert out["status"] == {"node": names[0]}
    # (add 2) went to one node of the role, (total) to one (maybe the other): together, the
    # answers of each.tally hold the 2 once.
    [role_answer] = out["role_answers"]
    assert read(role_answer)[0] == Symbol("total") and read(role_answer)[2] in names
    each = [read(text) for text in out["each_answers"]]
    assert sorted(expr[2] for expr in each) == sorted(names)
    assert sum(expr[1] for expr in each) == 2
    [cell_answer] = out["cell_answers"]
    assert read(cell_answer)[2] == names[0]
    assert out["error_answers"] == ["error"]
    assert out["refused_call_backs"] == [] and out["answers"] >= 8


@pytest.mark.amqp
def test_the_node_client_signs_verifies_and_is_refused_when_forged_or_expired(
        amqp_names: AmqpNames, node_client: Path, tmp_path: Path) -> None:
    node_key = new_key("js-nodes", ["all"], kind="node")
    ops_key = new_key("js-ops", ["all"], kind="operator")
    keyring = Keyring([node_key, ops_key])
    wire = Wire.on_rabbitmq(amqp_names)
    try:
        names = [f"js-{uuid.uuid4().hex[:6]}" for _ in range(2)]
        nodes = [wire.node(name, role="tally", signer=Signer(
            node_key, keyring=keyring, exchange=amqp_names.topology["exchange"]))
            for name in names]
        out = run_check(node_client, {
            "url": amqp_names.url, "exchange": amqp_names.topology["exchange"],
            "queuePrefix": amqp_names.queue_prefix, "nodes": names, "role": "tally",
            "cell": names[0], "keyId": ops_key.id, "keys": {ops_key.id: ops_key.secret.hex()}},
            tmp_path)
    finally:
        wire.close()
    assert out["pong_nodes"] == sorted(names) and out["status"] == {"node": names[0]}
    assert len(out["each_answers"]) == 2 and out["error_answers"] == ["error"]
    # Every call-back was signed with the client's own key, for its reply queue, and checked.
    assert out["refused_call_backs"] == []
    assert out["verified"] == out["answers"] >= 8
    # A wrong signature and an expired message are refused, silently, and counted.
    assert out["forged_answered"] == 0 and out["expired_answered"] == 0
    assert out["refusal_notices"] == 2  # unsigned hints, refused as answers by the client
    assert out["rejected_delta"] == 2
    refused = nodes[0].counters.refused
    assert refused.get("bad-signature") == 1 and refused.get("expired") == 1, refused


def test_the_node_client_signs_every_vector_of_the_spec_alike(node_client: Path) -> None:
    vectors = node_client.parent.parent / "docs" / "protocol-vectors.json"
    done = subprocess.run(["node", "vectors.js", str(vectors)], cwd=node_client,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)
    result = json.loads(done.stdout)
    assert result["mismatches"] == [] and result["checked"] >= 10, done.stderr
    assert done.returncode == 0
