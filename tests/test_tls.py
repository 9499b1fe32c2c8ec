"""TLS to RabbitMQ, against a real broker node with a TLS listener of the test's own (mutual TLS,
certificates made by openssl): the transport passes the conformance suite over amqps://, a
signed node answers over it, and a wrong CA, a missing or rogue client certificate, a wrong
server name or a plain URL with TLS options are refused."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cellframe import Client, Node
from cellframe.cli.main import main
from cellframe.errors import BrokerUnavailableError, ConfigError
from cellframe.testing import Connector, TransportConformance
from cellframe.testing.services import missing
from cellframe.testing.tls_broker import RABBITMQ_SERVER, Certificates, TlsBroker, make_certificates
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
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match="TLS"):
        AmqpTransport(tls_broker.url, tls=options, **{**SETTINGS, "connect_timeout": 30.0})
    # Retrying cannot cure it: said at once, not after the connect timeout.
    assert time.monotonic() - started < 10


def test_tls_to_a_port_that_does_not_speak_it_fails_at_once_saying_so() -> None:
    # It retried for the whole connect timeout and then said "no broker reachable within
    # 30 s (127.0.0.1:5672: [SSL: WRONG_VERSION_NUMBER] wrong version number ...)".
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match="does not speak TLS"):
        AmqpTransport("amqps://guest:guest@127.0.0.1:5672/%2F",
                      **{**SETTINGS, "connect_timeout": 30.0})
    assert time.monotonic() - started < 10


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


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certificates:
    if shutil.which("openssl") is None:
        missing("openssl, to make test certificates")
    return make_certificates(tmp_path_factory.mktemp("certs"))


def test_an_encrypted_client_key_is_refused_without_asking_for_a_passphrase(
        certs, tmp_path, capfd) -> None:
    # OpenSSL asked "Enter PEM pass phrase:" on the terminal, twice: `cellframe send` in a
    # script and a node started from a shell waited there; without a terminal it said
    # "[Errno 22] Invalid argument".
    encrypted = tmp_path / "client-encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", str(certs.client_key), "-aes256", "-passout",
                    "pass:secret", "-out", str(encrypted)], check=True, capture_output=True)
    with pytest.raises(ConfigError, match=f"{re.escape(str(encrypted))}.*encrypted"):
        TlsOptions(cert=certs.client_cert, key=encrypted).context()
    assert "pass phrase" not in capfd.readouterr().err


@pytest.mark.parametrize("given, message", [
    ({"ca": "garbage"}, "--tls-ca '{garbage}' holds no PEM certificate"),
    ({"ca": "client_key"}, "--tls-ca '{client_key}' holds no PEM certificate"),
    ({"cert": "client_cert"}, "--tls-cert '{client_cert}' holds no private key: give --tls-key"),
    ({"cert": "garbage", "key": "client_key"}, "--tls-cert '{garbage}' holds no PEM certificate"),
    ({"cert": "client_cert", "key": "garbage"}, "--tls-key '{garbage}' is not a PEM private key"),
    ({"cert": "client_cert", "key": "rogue_key"},
     "--tls-key '{rogue_key}' is not the key of --tls-cert '{client_cert}'"),
])
def test_each_bad_certificate_file_is_named_with_what_is_wrong(certs, tmp_path, given,
                                                               message) -> None:
    # All three of a certificate without its key, a garbage certificate and a garbage key
    # said "TLS certificates could not be loaded: [SSL] PEM lib (_ssl.c:3926)".
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    files = {"garbage": garbage, **{f: getattr(certs, f) for f in
                                    ("client_key", "client_cert", "rogue_key")}}
    options = TlsOptions(**{option: files[name] for option, name in given.items()})
    with pytest.raises(ConfigError, match=re.escape(message.format(**files))):
        options.context()


@pytest.mark.parametrize("ssl_options, problem", [
    # PROTOCOL_TLS (2): pika built an SSLContext that checked neither the certificate nor
    # the name, and the transport used it as it was.
    ("{'protocol': 2, 'ca_certs': '{ca}'}", "the broker's certificate unchecked"),
    ("{'protocol': 3, 'ca_certs': '{ca}'}", "the broker's certificate unchecked"),
])
def test_url_ssl_options_that_leave_the_broker_unchecked_are_refused(certs, ssl_options,
                                                                     problem) -> None:
    url = ("amqps://guest:guest@127.0.0.1:5671/%2F?ssl_options="
           + ssl_options.replace("{ca}", str(certs.ca)))
    with pytest.raises(ConfigError, match=problem):
        AmqpTransport(url, **SETTINGS)


def test_url_ssl_options_beside_tls_options_are_refused(certs) -> None:
    url = f"amqps://guest:guest@127.0.0.1:5671/%2F?ssl_options={{'ca_certs': '{certs.ca}'}}"
    with pytest.raises(ConfigError, match="give them one way, not both"):
        AmqpTransport(url, tls=TlsOptions(ca=certs.ca), **SETTINGS)


def test_url_ssl_options_on_a_plain_url_are_refused(certs) -> None:
    url = f"amqp://guest:guest@127.0.0.1:5672/%2F?ssl_options={{'ca_certs': '{certs.ca}'}}"
    with pytest.raises(ConfigError, match="not an amqps:// URL"):
        AmqpTransport(url, **SETTINGS)
