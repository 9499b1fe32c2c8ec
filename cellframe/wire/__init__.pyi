# The names this package re-exports, read by type checkers and by lazy_loader (see __init__.py).
from .envelope import Envelope as Envelope
from .envelope import Message as Message
from .envelope import new_message_id as new_message_id
from .routing import ALL as ALL
from .routing import parse_target as parse_target
from .routing import topic_matches as topic_matches
from .signing import Signer as Signer
from .signing import load_secret as load_secret

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
