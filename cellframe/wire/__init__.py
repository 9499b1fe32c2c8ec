"""The wire format: what a message is (``Envelope``, ``Message``), where it goes (routing keys
and topic matching), how it is signed (``Signer``), by which keys (``Key``, ``Keyring``, ``KeyFiles``), and
the memory that refuses replays (``ReplayCache``). Transports carry envelopes; they do not
look inside them.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
