"""TLS to RabbitMQ, against a real broker node with a TLS listener of the test's own (mutual TLS,
certificates made by openssl): the transport passes the conformance suite over amqps://, a
signed node answers over it, and a wrong CA, a missing or rogue client certificate, a wrong
server name or a plain URL with TLS options are refused."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cellframe import Client, Node
from cellframe.cli.main import main
from cellframe.errors import BrokerUnavailableError, ConfigError
from cellframe.testing import Connector, TransportConformance
from cellframe.testing.services import missing
from cellframe.testing.tls_broker import RABBITMQ_SERVER, TlsBroker
from cellframe.transports.amqp import AmqpTransport
from cellframe.transports.tls import TlsOptions
from cellframe.wire.keys import dump_keys, new_key
from cellframe.wire.signing import Signer
from tests.node_support import registry, replies_matching

pytestmark = pytest.mark.amqp
SETTINGS = {"heartbeat": 5, "connect_timeout": 10.0, "op_timeout": 10.0, "close_timeout": 5.0}


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[TlsBroker]:
    if not RABBITMQ_SERVER.exists() or shutil.which("openssl") is None or os.geteuid() != 0:
        missing("a RabbitMQ node of our own with a TLS listener (rabbitmq-server, openssl, root)")
    base = Path(tempfile.mkdtemp(prefix="cf-tls-"))
    broker = TlsBroker(base)
    try:
        yield broker.start()
    finally:
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def tls(tls_broker) -> TlsOptions:
    certs = tls_broker.certs
    return TlsOptions(ca=certs.ca, cert=certs.client_cert, key=certs.client_key)


class TestAmqpTransportOverTlsConformance(TransportConformance):
    @pytest.fixture
    def connect(self, tls_broker, tls):
        with Connector(lambda: AmqpTransport(tls_broker.url, tls=tls, **SETTINGS)) as connect:
            yield connect


def test_a_signed_node_answers_over_mutual_tls(tls_broker, tls) -> None:
    key = new_key("nodes", kind="node")
    node = Node("tls-01", transport=AmqpTransport(tls_broker.url, tls=tls, **SETTINGS),
                signer=Signer(key), role="tally", registry=registry(), watch_config=False)
    node.start()
    transport = AmqpTransport(tls_broker.url, tls=tls, **SETTINGS)
    client = Client(transport, signer=Signer(key))
    try:
        client.send("cell.tls-01", "(add 4)")
        client.send("cell.tls-01", "(total)")
        assert replies_matching(client, "total", 1)[0][1] == 4
    finally:
        client.close()
        transport.close()
        node.stop()
        node.transport.close()


@pytest.mark.parametrize("case", ["no-client-cert", "rogue-client-cert", "system-cas",
                                  "wrong-server-name"])
def test_a_connection_that_fails_tls_checks_is_refused(tls_broker, case) -> None:
    certs = tls_broker.certs
    options = {
        "no-client-cert": TlsOptions(ca=certs.ca),
        "rogue-client-cert": TlsOptions(ca=certs.ca, cert=certs.rogue_cert, key=certs.rogue_key),
        "system-cas": TlsOptions(cert=certs.client_cert, key=certs.client_key),
        "wrong-server-name": TlsOptions(ca=certs.ca, cert=certs.client_cert,
                                        key=certs.client_key, server_name="broker.example"),
    }[case]
    with pytest.raises(BrokerUnavailableError):
        AmqpTransport(tls_broker.url, tls=options, **{**SETTINGS, "connect_timeout": 5.0})


def test_tls_options_with_a_plain_url_are_refused_not_downgraded(tls) -> None:
    with pytest.raises(ConfigError, match="not an amqps:// URL"):
        AmqpTransport("amqp://guest:guest@127.0.0.1:5672/%2F", tls=tls)


def test_unreadable_certificates_are_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="could not be loaded"):
        TlsOptions(ca=tmp_path / "missing.pem").context()


def test_cellframe_send_and_status_speak_amqps_with_the_tls_options(tls_broker, tmp_path) -> None:
    certs = tls_broker.certs
    key = new_key("nodes", kind="node")
    key_file = tmp_path / "cluster.keys"
    key_file.write_text(dump_keys([key]))
    tls = TlsOptions(ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
    node = Node("tls-02", transport=AmqpTransport(tls_broker.url, tls=tls, **SETTINGS),
                signer=Signer(key), role="tally", registry=registry(), watch_config=False)
    node.start()
    try:
        options = ["--amqp", tls_broker.url, "--tls-ca", str(certs.ca), "--tls-cert",
                   str(certs.client_cert), "--tls-key", str(certs.client_key),
                   "--key", str(key_file)]
        result = CliRunner().invoke(main, ["send", "node:tls-02", "(ping)", "--wait", "2",
                                           *options], env={"CELLFRAME_SECRET": ""})
        assert result.exit_code == 0, result.output
        assert '(pong :node "tls-02"' in result.stdout
        refused = CliRunner().invoke(main, ["send", "node:tls-02", "(ping)", "--amqp",
                                            tls_broker.url, "--tls-ca", str(certs.ca)])
        assert refused.exit_code != 0
    finally:
        node.stop()
        node.transport.close()
