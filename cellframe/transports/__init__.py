"""Transports: how envelopes move between nodes, behind one small interface (``Transport``).

``MemoryTransport`` connects to a ``MemoryBroker`` in this process, with RabbitMQ's routing
rules; ``AmqpTransport`` speaks AMQP to RabbitMQ. Both pass ``cellframe.testing``'s conformance
suite. A transport is passed in as an object: ``Node(transport=AmqpTransport(url))``.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
