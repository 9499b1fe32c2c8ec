"""Where configuration comes from: a zone file or a DNS server, behind one small interface.

A node passes a resolver object in (``Node(resolver=ZoneFileResolver("cluster.zone"))``); both
implementations pass the same conformance tests and answer the same way:

- ``node_config(name)`` reads the TXT records at ``<name>.<zone>``. A name with no TXT records
  (NXDOMAIN included) is not an error: it is a node with no role, a spare, plus a warning; its
  ``ttl`` is the zone's negative-caching TTL, so a node added later is noticed.
- ``cluster_intent()`` reads ``_cluster.<zone>``; ``node_names()`` reads ``_nodes.<zone>``.
- A server that does not answer, refuses, or does not serve the zone raises DnsLookupError, and
  so does a zone file that cannot be read; dnspython's errors are translated here.

``watchers.ConfigWatcher`` re-reads a node's config when its TTL runs out and reports changes,
so a new role reaches a running node without a restart.
"""

from __future__ import annotations

import abc
import ipaddress
import logging
import os
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver
import dns.zone

from ..errors import ConfigError, DnsLookupError
from ..wire.routing import validate_name
from .txtconfig import ClusterIntent, NodeConfig, parse_names, parse_node_config, parse_txt_records

__all__ = [
    "ConfigResolver",
    "DnsServerResolver",
    "ZoneFileResolver",
    "resolver_from_options",
]

log = logging.getLogger("cellframe.config")

CLUSTER_LABEL = "_cluster"
NODES_LABEL = "_nodes"
Records = list[tuple[bytes, ...]]


@runtime_checkable
class ConfigResolver(Protocol):
    """Reads node configs and the cluster intent from one DNS zone."""

    def node_config(self, name: str) -> NodeConfig:
        """The TXT configuration of node ``name`` (a spare if it has none)."""
        ...

    def cluster_intent(self) -> ClusterIntent:
        """The cluster-wide intent at ``_cluster``."""
        ...

    def node_names(self) -> list[str]:
        """Every node name the zone lists at ``_nodes``, sorted."""
        ...

    def close(self) -> None:
        """Release what the resolver holds."""
        ...


class _TxtResolver(abc.ABC):
    """Shared logic: everything but how one name's TXT records are fetched."""

    origin: dns.name.Name

    @abc.abstractmethod
    def _lookup(self, label: str) -> tuple[Records | None, int]:
        """TXT strings at ``label`` (``None`` if there are none) and the TTL of that answer."""

    def _where(self, label: str) -> str:
        return f"{label}.{self.origin.to_text()}: "

    def node_config(self, name: str) -> NodeConfig:
        validate_name(name, "node name")
        records, ttl = self._lookup(name)
        return parse_node_config(name, records, ttl=ttl, where=self._where(name))

    def cluster_intent(self) -> ClusterIntent:
        records, ttl = self._lookup(CLUSTER_LABEL)
        if records is None:
            raise ConfigError(f"{self._where(CLUSTER_LABEL)}no TXT records: no cluster intent")
        settings, warnings = parse_txt_records(records, self._where(CLUSTER_LABEL))
        return ClusterIntent.from_settings(settings, ttl=ttl, warnings=warnings)

    def node_names(self) -> list[str]:
        records, _ = self._lookup(NODES_LABEL)
        if records is None:
            log.warning("%sno TXT records: no node names listed", self._where(NODES_LABEL))
            return []
        return _names_from_records(records, self._where(NODES_LABEL))

    def close(self) -> None:  # noqa: B027 (a no-op by design, not abstract)
        """Nothing to release: dnspython opens a socket per query."""

    def __enter__(self) -> _TxtResolver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _names_from_records(records: Records, where: str) -> list[str]:
    names: set[str] = set()
    for strings in records:
        for raw in strings:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                log.warning("%snot UTF-8: %r; skipped", where, raw)
                continue
            found, warnings = parse_names(text)
            names.update(found)
            for warning in warnings:
                log.warning("%s%s", where, warning)
    return sorted(names)


def _negative_ttl(soa_ttl: int, soa_minimum: int) -> int:
    # RFC 2308, section 5: a negative answer lives min(SOA TTL, SOA MINIMUM) seconds.
    return min(soa_ttl, soa_minimum)


class ZoneFileResolver(_TxtResolver):
    """Reads a zone file offline (the embedded default), re-reading it when it changes on disk.

    ``origin`` is needed only when the file has no ``$ORIGIN``. ``$INCLUDE`` is refused: the
    re-read watches one file. If a re-read fails (an editor half-way through a save), the last
    good zone keeps answering and a warning is logged.
    """

    def __init__(self, path: str | os.PathLike[str], origin: str | None = None):
        self.path = Path(path)
        self._origin_text = origin
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._zone = self._load()
        self._failed_stamp: tuple[int, int, int] | None = None
        assert self._zone.origin is not None  # from_file checks the origin
        self.origin = self._zone.origin

    def _stat(self) -> tuple[int, int, int]:
        try:
            st = self.path.stat()
        except OSError as exc:
            raise DnsLookupError(f"zone file {str(self.path)!r}: {exc.strerror}") from exc
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> dns.zone.Zone:
        try:
            return dns.zone.from_file(
                str(self.path), origin=self._origin_text, allow_include=False
            )
        except dns.zone.UnknownOrigin as exc:
            raise DnsLookupError(
                f"zone file {str(self.path)!r} has no $ORIGIN: name the zone's domain "
                "(--domain in the CLI, origin= in Python)"
            ) from exc
        except (OSError, ValueError, dns.exception.DNSException) as exc:  # ValueError: dnspython
            # on a zone that does not fit the origin given (``--domain ""``: "non-origin SOA")
            raise DnsLookupError(f"zone file {str(self.path)!r}: {exc}") from exc

    def _current(self) -> dns.zone.Zone:
        with self._lock:
            try:
                stamp = self._stat()
                if stamp in (self._stamp, self._failed_stamp):
                    return self._zone
                self._zone, self._stamp = self._load(), stamp
            except DnsLookupError as exc:
                self._keep_last_good(exc)
            return self._zone

    def _keep_last_good(self, exc: DnsLookupError) -> None:
        # Warn once per failing version of the file, not on every lookup.
        try:
            failed = self._stat()
        except DnsLookupError:
            failed = (-1, -1, -1)
        if failed != self._failed_stamp:
            log.warning("%s; still answering from the last good read", exc)
        self._failed_stamp = failed

    def _lookup(self, label: str) -> tuple[Records | None, int]:
        zone = self._current()
        rdataset = zone.get_rdataset(label, dns.rdatatype.TXT)
        if rdataset is None:
            soa = zone.find_rdataset("@", dns.rdatatype.SOA)  # from_file insists on one
            return None, _negative_ttl(soa.ttl, soa[0].minimum)
        return [rdata.strings for rdata in rdataset], rdataset.ttl


class DnsServerResolver(_TxtResolver):
    """Asks a DNS server (BIND in the tests) for the TXT records of ``domain``; no caching."""

    def __init__(
        self,
        address: str = "127.0.0.1",
        port: int = 10053,
        domain: str = "cluster.test.",
        *,
        timeout: float = 2.0,
    ):
        self.address, self.port = address, port
        self._resolver = dns.resolver.Resolver(configure=False)
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(f"DNS server {address!r} must be an IP address (HOST[:PORT], "
                              f"e.g. 127.0.0.1:53), not a host name") from None
        try:
            self.origin = dns.name.from_text(domain)
            self._resolver.nameservers = [address]
        except (ValueError, dns.exception.DNSException) as exc:
            raise ConfigError(f"DNS server {address!r}, domain {domain!r}: {exc}") from exc
        self._resolver.port = port
        self._resolver.timeout = self._resolver.lifetime = timeout

    def _lookup(self, label: str) -> tuple[Records | None, int]:
        qname = dns.name.from_text(label, self.origin)
        try:
            answer = self._resolver.resolve(qname, "TXT", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            responses = list(exc.responses().values())  # one: no search list is configured
            return None, self._negative_ttl(responses[-1], qname)
        except dns.exception.DNSException as exc:
            raise DnsLookupError(
                f"TXT lookup of {qname} at {self.address}:{self.port} failed: {exc}"
            ) from exc
        if answer.rrset is None:
            return None, self._negative_ttl(answer.response, qname)
        return [rdata.strings for rdata in answer.rrset], answer.rrset.ttl

    def _negative_ttl(self, response: dns.message.Message, qname: dns.name.Name) -> int:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA:
                return _negative_ttl(rrset.ttl, rrset[0].minimum)
        raise DnsLookupError(f"{self.address}:{self.port} denied {qname} with no SOA")


def resolver_from_options(
    zone_file: str | None = None, dns: str | None = None, domain: str | None = None
) -> ZoneFileResolver | DnsServerResolver:
    """Build a resolver from command-line options: a zone file, or ``dns="HOST[:PORT]"``."""
    if (zone_file is None) == (dns is None):
        raise ConfigError("give exactly one of a zone file or a DNS server (HOST[:PORT])")
    if zone_file is not None:
        return ZoneFileResolver(zone_file, origin=domain)
    host, port = _split_host_port(dns or "")
    return DnsServerResolver(host, port, domain or "cluster.test.")


def _split_host_port(text: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address; port 53 if none."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ConfigError(f"DNS server {text!r}: no host")
    if not port:
        return host, 53
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"DNS server {text!r}: port {port!r} is not a number from 1 to 65535")
    return host, int(port)
