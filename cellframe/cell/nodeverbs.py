"""The verbs only nodes send each other, gathered from the cell classes that declare them.

A cell class lists in ``node_verbs`` the verbs of its own that only nodes send (replication,
claims, membership news), each with the keyword that names the node speaking, or None if the
message names none: ``{"heartbeat": "node", "member-down": "by", "replicate": None}``. When the
class is defined, ``declare`` adds them here (the keyword as a ``Keyword``, which the gate
compares by identity: 130 ns a message less than making it), and a node's gate reads
``DECLARED`` on every delivery: it refuses those verbs from an operator key whatever its
capabilities, and from a node key bound to one node unless that keyword names the key's node.

Gathered at class definition, so the list is always that of every cell class in the process:
a verb of a class never imported here has no cell here to reach. ``DECLARED`` is replaced
whole, never changed in place, so the gate reads it without a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from ..errors import StateMachineError
from ..language.symbols import Keyword

__all__ = ["DECLARED", "declare"]

#: Verb -> the keyword naming the node that speaks (None: none), for every declaring class.
DECLARED: Mapping[str, Keyword | None] = {}
_owners: dict[str, str] = {}
_lock = threading.Lock()


def declare(owner: str, verbs: Mapping[str, str | None]) -> None:
    """Add ``owner``'s node-only verbs; a verb another class declared with another speaker
    keyword is a StateMachineError (the gate could not check both)."""
    global DECLARED
    with _lock:
        merged = dict(DECLARED)
        for verb, name in verbs.items():
            speaker = Keyword(name) if name is not None else None
            if verb in merged and merged[verb] is not speaker:
                raise StateMachineError(
                    f"{owner}: node verb {verb!r} names its speaker with {name!r}, but "
                    f"{_owners[verb]} declared {_name(merged[verb])!r}")
            merged[verb] = speaker
        for verb in verbs:
            _owners.setdefault(verb, owner)
        DECLARED = merged  # a plain dict: its get is the gate's cost (25 ns)


def _name(keyword: Keyword | None) -> str | None:
    return keyword.name if keyword is not None else None
