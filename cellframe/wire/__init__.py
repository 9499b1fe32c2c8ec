"""The wire format: what a message is (``Envelope``, ``Message``), where it goes (routing keys
and topic matching), and how it is signed (``Signer``). Transports carry envelopes; they do not
look inside them.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
