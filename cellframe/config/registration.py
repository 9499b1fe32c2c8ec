"""Registering a node in DNS: an RFC 2136 dynamic update, signed with TSIG.

``register`` replaces every TXT record at ``<name>.<zone>`` with one record holding the given
pairs, and (unless ``list_in_nodes=False``) adds ``name`` to ``_nodes`` as a record of its own
(adding a record that is already there changes nothing). Nodes that watch their config see
the change when their TTL runs out.

Errors: the server refusing the update (REFUSED, NOTAUTH, a key it does not know or a
signature that does not verify) raises ConfigError, since our configuration is what is wrong;
a server that cannot be reached or answers garbage raises DnsLookupError.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable, Mapping

import dns.exception
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.update

from ..errors import ConfigError, DnsLookupError
from ..wire.routing import validate_name
from .resolvers import NODES_LABEL
from .txtconfig import format_txt_string

__all__ = ["register", "txt_rdata"]


def txt_rdata(pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> dns.rdtypes.ANY.TXT.TXT:
    """One TXT record holding one ``key=value`` string per pair, in order."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    strings = [format_txt_string(key, value) for key, value in items]
    if not strings:
        raise ConfigError("no pairs to register: a TXT record needs at least one string")
    return _txt(strings)


def _txt(strings: list[bytes]) -> dns.rdtypes.ANY.TXT.TXT:
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings)


def register(
    server: str,
    port: int,
    zone: str,
    key_name: str,
    key_secret: str,
    name: str,
    pairs: Mapping[str, str] | Iterable[tuple[str, str]],
    ttl: int = 5,
    *,
    algorithm: str = "hmac-sha256",
    timeout: float = 5.0,
    list_in_nodes: bool = True,
) -> None:
    """Set node ``name``'s TXT configuration to ``pairs`` on ``server`` with one signed update."""
    validate_name(name, "node name")
    update = dns.update.UpdateMessage(zone, keyring=_tsig_key(key_name, key_secret, algorithm))
    update.replace(name, ttl, txt_rdata(pairs))
    if list_in_nodes:
        update.add(NODES_LABEL, ttl, _txt([name.encode()]))
    _send(update, server, port, timeout, f"update of {name}.{zone} at {server}:{port}")


def _tsig_key(key_name: str, secret: str, algorithm: str) -> dns.tsig.Key:
    try:
        return dns.tsig.Key(key_name, secret, algorithm)
    except (binascii.Error, ValueError, dns.exception.DNSException) as exc:
        raise ConfigError(f"TSIG key {key_name!r}: the secret is not valid base64 ({exc})") from exc


def _send(
    update: dns.update.UpdateMessage, server: str, port: int, timeout: float, what: str
) -> None:
    try:
        response = dns.query.tcp(update, server, port=port, timeout=timeout)
    except dns.tsig.PeerError as exc:
        # The server answered BADKEY/BADSIG/BADTIME: it does not trust our key.
        raise ConfigError(f"{what}: the server rejected the TSIG key ({exc})") from exc
    except (OSError, dns.exception.DNSException) as exc:
        raise DnsLookupError(f"{what} failed: {exc}") from exc
    rcode = response.rcode()
    if rcode != dns.rcode.NOERROR:
        raise ConfigError(f"{what}: the server answered {dns.rcode.to_text(rcode)}")
