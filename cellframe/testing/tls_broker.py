"""A RabbitMQ node with a TLS listener on loopback, and certificates made by openssl, for the
TLS tests and ``cellframe bench``'s TLS pipeline (the approach of tools/rabbitmq-cluster: a
node of its own name, config, data and distribution port, run as the rabbitmq user beside the
main broker, which it never touches).

It listens for AMQPS only (no plain TCP listener), asks every client for a certificate signed
by the test CA (``verify_peer``, ``fail_if_no_peer_cert``), and its certificate names
``localhost`` and ``127.0.0.1``. A cold start takes 5 to 20 s on 2 busy cores.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Certificates", "TlsBroker", "make_certificates"]

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
#: Ports tried for the AMQPS listener and the Erlang distribution (away from 5672/25672 and
#: the 5701-5703/25701-25703 of tools/rabbitmq-cluster).
AMQPS_PORTS = range(5691, 5699)
DIST_OFFSET = 20_100


@dataclass(frozen=True)
class Certificates:
    """PEM files: the CA, the server's certificate and key, a client's, and a client
    certificate from a CA the server does not trust."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _signed(folder: Path, name: str, ca: Path, ca_key: Path, subject: str, san: str | None) -> None:
    key, csr, cert = (folder / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", subject)
    extensions = folder / f"{name}.ext"
    extensions.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(cert), "-days", "2", "-sha256",
             "-extfile", str(extensions))


def make_certificates(folder: Path) -> Certificates:
    """A test CA, a server certificate for localhost/127.0.0.1, a client certificate, and a
    rogue CA's client certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    for authority in ("ca", "rogue-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-keyout", str(folder / f"{authority}.key"),
                 "-out", str(folder / f"{authority}.pem"),
                 "-subj", f"/CN=cellframe test {authority}")
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    _signed(folder, "server", ca, ca_key, "/CN=localhost", "DNS:localhost,IP:127.0.0.1")
    _signed(folder, "client", ca, ca_key, "/CN=cellframe-client", None)
    _signed(folder, "rogue", folder / "rogue-ca.pem", folder / "rogue-ca.key", "/CN=rogue", None)
    return Certificates(ca, folder / "server.pem", folder / "server.key", folder / "client.pem",
                        folder / "client.key", folder / "rogue.pem", folder / "rogue.key")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class TlsBroker:
    """One RabbitMQ node listening for AMQPS on 127.0.0.1; ``url`` reaches it as guest."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.name = f"cftls{uuid.uuid4().hex[:6]}@localhost"
        port = next((p for p in AMQPS_PORTS if _free(p) and _free(p + DIST_OFFSET)), None)
        if port is None:
            raise RuntimeError(f"no free port for the TLS broker in {AMQPS_PORTS}")
        self.port: int = port
        self.certs = make_certificates(base / "certs")

    @property
    def url(self) -> str:
        return f"amqps://guest:guest@localhost:{self.port}/%2F"

    @property
    def url_with_certificates(self) -> str:
        """``url`` carrying pika's own ``ssl_options`` argument (the test CA, the client's
        certificate and key): a URL raw pika and cellframe both connect with as it is."""
        certs = self.certs
        options = {"ca_certs": str(certs.ca), "certfile": str(certs.client_cert),
                   "keyfile": str(certs.client_key), "server_hostname": "localhost"}
        return f"{self.url}?ssl_options={urllib.parse.quote(repr(options))}"

    def start(self, timeout: float = 90.0) -> TlsBroker:
        certs, base = self.certs, self.base
        (base / "rabbitmq.conf").write_text(
            "listeners.tcp = none\n"
            f"listeners.ssl.default = 127.0.0.1:{self.port}\n"
            f"ssl_options.cacertfile = {certs.ca}\n"
            f"ssl_options.certfile = {certs.server_cert}\n"
            f"ssl_options.keyfile = {certs.server_key}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = true\n"
            "loopback_users = none\n")
        (base / "enabled_plugins").write_text("[].\n")
        shutil.chown(base, "rabbitmq", "rabbitmq")
        for path in base.rglob("*"):
            shutil.chown(path, "rabbitmq", "rabbitmq")
        env = (f"RABBITMQ_NODENAME={self.name} RABBITMQ_DIST_PORT={self.port + DIST_OFFSET} "
               f"RABBITMQ_CONFIG_FILE={base}/rabbitmq.conf RABBITMQ_MNESIA_BASE={base}/mnesia "
               f"RABBITMQ_LOG_BASE={base}/log RABBITMQ_PID_FILE={base}/pid "
               f"RABBITMQ_ENABLED_PLUGINS_FILE={base}/enabled_plugins")
        subprocess.run(["su", "rabbitmq", "-s", "/bin/bash", "-c",
                        f"cd / && {env} {RABBITMQ_SERVER} -detached"], check=True,
                       capture_output=True, cwd="/")
        deadline = time.monotonic() + timeout
        while _free(self.port):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the TLS broker did not listen on {self.port} within "
                                   f"{timeout:g} s; log: {self.log_tail()}")
            time.sleep(0.2)
        return self

    def log_tail(self) -> str:
        logs = sorted((self.base / "log").glob("*.log")) if (self.base / "log").exists() else []
        return "".join(p.read_text(errors="replace")[-2000:] for p in logs) or "(no log)"

    def stop(self) -> None:
        subprocess.run(["rabbitmqctl", "-n", self.name, "stop"], capture_output=True,
                       timeout=60, cwd="/")
        pid_file = self.base / "pid"
        if pid_file.exists():  # stop waits for the VM to exit; make sure it did
            try:
                os.kill(int(pid_file.read_text().strip()), 9)
            except (ValueError, ProcessLookupError):
                pass
