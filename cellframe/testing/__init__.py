"""cellframe's testing kit: conformance suites, a pytest plugin, and waiting without sleeps.

- ``TransportConformance`` and ``ResolverConformance``: the behaviour every transport and every
  config resolver must show, as suites an outside implementation subclasses to prove itself
  (``transports.py``, ``resolvers.py``).
- ``wait_for`` (the one waiting helper; it is defined in ``cellframe.node.cluster``, where
  library code can use it) and ``holds_for`` (``waiting.py``); ``Collector``, ``Connector``
  and ``publish_many`` for deliveries and transports.
- ``FakeClock`` (``clock.py``), ``AmqpNames`` (``amqp.py``), ``run_named`` and ``BindServer``
  (``bind.py``), ``run_haproxy`` (``haproxy.py``), ``running_cluster`` (``cluster.py``),
  ``missing`` (``services.py``), ``TlsBroker`` (``tls_broker.py``: a RabbitMQ node with a TLS
  listener and certificates made by openssl, for the TLS tests and the TLS bench).
- ``plugin.py``: the pytest plugin (entry point ``pytest11``) whose fixtures use all of these.

The names are listed in ``__init__.pyi`` and load on first use (lazy_loader, as in
``cellframe/__init__.py``): pytest imports this package for its plugin in every run, and the
suites pull in pytest, pika and dnspython.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
