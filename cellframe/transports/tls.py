"""TLS to the broker: what ``amqps://`` URLs are checked against, and the certificate a client
shows (mutual TLS).

``TlsOptions(ca=..., cert=..., key=..., server_name=...)`` is passed to ``AmqpTransport`` as an
object (``cellframe node --tls-ca --tls-cert --tls-key``). The broker's certificate is always
verified, against ``ca`` (else the system's trusted CAs), and must name the host of the URL (or
``server_name``); ``cert`` and ``key`` are the client's own, for a broker that asks for one
(RabbitMQ's ``ssl_options.verify = verify_peer``). TLS 1.2 at least. A plain ``amqp://`` URL
with TLS options is refused, so a typo cannot silently downgrade to plain TCP. Without
``TlsOptions``, an ``amqps://`` URL may carry pika's own ``ssl_options`` argument (a dict of
``ca_certs``, ``certfile``, ``keyfile``, ``server_hostname``), which is then used as it is: raw
pika and cellframe then read the same URL (the TLS bench does).

Both of the transport's fast paths work over TLS: a publish is still marshalled into one
buffer and handed to pika's TLS transport; only the joining of buffers into one ``send()``
(``_amqp_writes.coalesce_writes``), which hooks pika's plaintext transport, is left out.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["TlsOptions"]


@dataclass(frozen=True)
class TlsOptions:
    """Certificates for ``amqps://`` connections (files in PEM)."""

    ca: str | os.PathLike[str] | None = None
    cert: str | os.PathLike[str] | None = None
    key: str | os.PathLike[str] | None = None
    server_name: str | None = None

    def context(self) -> ssl.SSLContext:
        """A client SSLContext that verifies the broker and shows ``cert`` if given."""
        if (self.cert is None) != (self.key is None) and self.cert is None:
            raise ConfigError("a TLS client key needs its certificate (--tls-cert)")
        try:
            context = ssl.create_default_context(
                cafile=os.fspath(self.ca) if self.ca is not None else None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.cert is not None:
                context.load_cert_chain(os.fspath(self.cert),
                                        os.fspath(self.key) if self.key is not None else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS certificates could not be loaded: {exc}") from exc
        return context
