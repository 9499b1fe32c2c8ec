"""cellframe's testing kit: conformance suites, a pytest plugin, and waiting without sleeps.

- ``TransportConformance`` and ``ResolverConformance``: the behaviour every transport and every
  config resolver must show, as suites an outside implementation subclasses to prove itself
  (``transports.py``, ``resolvers.py``).
- ``wait_for`` (the one waiting helper; it lives in ``cellframe.node.cluster``) and
  ``holds_for``; ``Collector`` and ``Connector`` for deliveries and transports.
- ``FakeClock`` (``clock.py``), ``AmqpNames`` (``amqp.py``), ``run_named`` and ``BindServer``
  (``bind.py``), ``running_cluster`` (``cluster.py``), ``missing`` (``services.py``).
- ``plugin.py``: the pytest plugin (entry point ``pytest11``) whose fixtures use all of these.

Names load on first use: pytest imports this package for its plugin in every run, and the
suites pull in pytest, pika and dnspython.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..node.cluster import wait_for
    from .amqp import AmqpNames
    from .bind import BindServer, run_named
    from .clock import FakeClock
    from .cluster import running_cluster
    from .resolvers import ResolverConformance, conformance_zone
    from .services import missing
    from .transports import Collector, Connector, TransportConformance, publish_many
    from .waiting import holds_for

__all__ = [
    "AmqpNames",
    "BindServer",
    "Collector",
    "Connector",
    "FakeClock",
    "ResolverConformance",
    "TransportConformance",
    "conformance_zone",
    "holds_for",
    "missing",
    "publish_many",
    "run_named",
    "running_cluster",
    "wait_for",
]

_HOMES = {
    "AmqpNames": ".amqp",
    "BindServer": ".bind",
    "Collector": ".transports",
    "Connector": ".transports",
    "FakeClock": ".clock",
    "ResolverConformance": ".resolvers",
    "TransportConformance": ".transports",
    "conformance_zone": ".resolvers",
    "holds_for": ".waiting",
    "missing": ".services",
    "publish_many": ".transports",
    "run_named": ".bind",
    "running_cluster": ".cluster",
    "wait_for": "..node.cluster",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # the next lookup is a plain one
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
