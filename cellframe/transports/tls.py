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
pika and cellframe then read the same URL (the TLS bench does). Both at once are refused:
which one applies is not a silent choice.

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
        """A client SSLContext that verifies the broker and shows ``cert`` if given; a
        ConfigError names the file that is wrong and how."""
        if self.key is not None and self.cert is None:
            raise ConfigError("a TLS client key needs its certificate (--tls-cert)")
        ca = os.fspath(self.ca) if self.ca is not None else None
        try:
            context = ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise _file_error("--tls-ca", ca, exc) from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert is not None:
            _load_client_certificate(context, os.fspath(self.cert),
                                     os.fspath(self.key) if self.key is not None else None)
        return context


def _load_client_certificate(context: ssl.SSLContext, cert: str, key: str | None) -> None:
    try:  # first alone, so that a bad certificate is not blamed on the key
        ssl.create_default_context(cafile=cert)
    except (OSError, ssl.SSLError) as exc:
        raise _file_error("--tls-cert", cert, exc) from exc
    try:
        # A callback, so that OpenSSL never prompts: it asked "Enter PEM pass phrase:" on the
        # terminal, where a node or a script waited, and said "Invalid argument" without one.
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except _Encrypted as exc:
        raise ConfigError(f"--tls-key {key or cert!r} is encrypted: give the key unencrypted "
                          "(cellframe asks for no passphrase), readable by its user alone") from exc
    except (OSError, ssl.SSLError) as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ConfigError(f"--tls-key {key!r} is not the key of --tls-cert {cert!r}") from exc
        if key is None:
            raise ConfigError(f"--tls-cert {cert!r} holds no private key: give --tls-key "
                              f"FILE ({_why(exc)})") from exc
        raise _file_error("--tls-key", key, exc, "is not a PEM private key") from exc


class _Encrypted(Exception):
    """OpenSSL asked for the passphrase of an encrypted key."""


def _no_passphrase() -> str:
    raise _Encrypted


def _file_error(option: str, path: str | None, exc: BaseException,
                what: str = "holds no PEM certificate") -> ConfigError:
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError):
        return ConfigError(f"{option} {path!r} could not be loaded: {exc.strerror or exc}")
    return ConfigError(f"{option} {path!r} {what} ({_why(exc)})")


def _why(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or str(exc)
