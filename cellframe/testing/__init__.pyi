# The names this package re-exports, read by type checkers and by lazy_loader (see __init__.py).
from .amqp import AmqpNames as AmqpNames
from .bind import BindServer as BindServer
from .bind import run_named as run_named
from .clock import FakeClock as FakeClock
from .cluster import running_cluster as running_cluster
from .haproxy import run_haproxy as run_haproxy
from .resolvers import ResolverConformance as ResolverConformance
from .resolvers import conformance_zone as conformance_zone
from .services import missing as missing
from .tls_broker import TlsBroker as TlsBroker
from .transports import Collector as Collector
from .transports import Connector as Connector
from .transports import TransportConformance as TransportConformance
from .transports import publish_many as publish_many
from .waiting import holds_for as holds_for
from .waiting import wait_for as wait_for

__all__ = [
    "AmqpNames",
    "BindServer",
    "Collector",
    "Connector",
    "FakeClock",
    "ResolverConformance",
    "TlsBroker",
    "TransportConformance",
    "conformance_zone",
    "holds_for",
    "missing",
    "publish_many",
    "run_haproxy",
    "run_named",
    "running_cluster",
    "wait_for",
]
