"""Configuration from DNS: TXT ``key=value`` records keyed by hostname, read from a zone file
or a DNS server, watched for changes, registered with dynamic updates, and exported to shells.
"""

from __future__ import annotations

from .resolvers import ConfigWatcher, DnsServerResolver, ZoneFileResolver
from .txtconfig import ClusterIntent, NodeConfig

__all__ = [
    "ClusterIntent",
    "ConfigWatcher",
    "DnsServerResolver",
    "NodeConfig",
    "ZoneFileResolver",
]
