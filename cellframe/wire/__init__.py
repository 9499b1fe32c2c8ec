"""The wire format: what a message is (``Envelope``, ``Message``), where it goes (routing keys
and topic matching), and how it is signed (``Signer``). Transports carry envelopes; they do not
look inside them.
"""

from __future__ import annotations

from .envelope import Envelope, Message, new_message_id
from .routing import ALL, parse_target, topic_matches
from .signing import Signer, load_secret

__all__ = [
    "ALL",
    "Envelope",
    "Message",
    "Signer",
    "load_secret",
    "new_message_id",
    "parse_target",
    "topic_matches",
]
