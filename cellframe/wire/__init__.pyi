# The names this package re-exports, read by type checkers and by lazy_loader (see __init__.py).
from .envelope import Envelope as Envelope
from .envelope import Message as Message
from .envelope import new_message_id as new_message_id
from .keys import Capability as Capability
from .keys import Key as Key
from .keys import KeyFiles as KeyFiles
from .keys import Keyring as Keyring
from .keys import new_key as new_key
from .replay import ReplayCache as ReplayCache
from .routing import ALL as ALL
from .routing import parse_target as parse_target
from .routing import topic_matches as topic_matches
from .signing import Signer as Signer
from .signing import load_secret as load_secret

__all__ = [
    "ALL",
    "Capability",
    "Envelope",
    "Key",
    "KeyFiles",
    "Keyring",
    "Message",
    "ReplayCache",
    "Signer",
    "load_secret",
    "new_key",
    "new_message_id",
    "parse_target",
    "topic_matches",
]
