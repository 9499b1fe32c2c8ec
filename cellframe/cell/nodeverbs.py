"""The verbs only nodes send each other, and the verbs a node key bound to one node may send only
in its own name, gathered from the cell classes that declare them.

A cell class declares three kinds, each verb with the keyword that names the node speaking:

- ``node_verbs``: what only nodes send each other (replication, claims, membership news, the web
  tier's joins), ``{"heartbeat": "node", "member-down": "by", "replicate": None}`` (None: the
  message names no node). Refused from an operator key whatever its capabilities.
- ``shared_verbs``: what operators send too, and nodes send in their own name
  (``{"set-weight": "node"}``: a web cell asks for its own backend's weight; an operator may set
  any). An operator key sends them as its capabilities allow.
- ``local_verbs``: what a cell only tells itself (the proxy's ``reroute``). Never read from the
  wire: refused from every key, a node's too.

From a node key bound to one node, a node or shared verb whose keyword names another node (or
none) is refused. When the class is defined, ``declare`` adds its verbs here, and a node's gate
reads the tables on every delivery: ``DECLARED`` (node-only and local verbs, for operator
keys), ``SPEAKERS`` (for bound node keys) and ``LOCAL`` (for every node key). The keyword is a
``Keyword``, which the gate compares by identity: 130 ns a message less than making it.

Gathered at class definition, so the tables are always those of every cell class in the
process: a verb of a class never imported here has no cell here to reach. They are replaced
whole, never changed in place, so the gate reads them without a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from ..errors import StateMachineError
from ..language.symbols import Keyword

__all__ = ["DECLARED", "LOCAL", "SPEAKERS", "declare"]

#: Node-only verbs (and local ones) -> the keyword naming the node that speaks (None: none).
DECLARED: Mapping[str, Keyword | None] = {}
#: Node and shared verbs that name their speaker -> that keyword (a bound node key's check).
SPEAKERS: Mapping[str, Keyword] = {}
#: Verbs a cell only tells itself: refused from the wire whatever the key.
LOCAL: frozenset[str] = frozenset()

#: verb -> (kind, speaker keyword name, declaring class), kind "node", "shared" or "local".
_entries: dict[str, tuple[str, str | None, str]] = {}
_lock = threading.Lock()


def declare(owner: str, verbs: Mapping[str, str | None], *,
            shared: Mapping[str, str] | None = None, local: Iterable[str] = ()) -> None:
    """Add ``owner``'s node-only ``verbs``, its ``shared`` verbs and its ``local`` verbs; a verb
    another class declared otherwise (another kind or speaker keyword) is a StateMachineError:
    the gate could not check both."""
    wanted = [*(("node", verb, name) for verb, name in verbs.items()),
              *(("shared", verb, name) for verb, name in (shared or {}).items()),
              *(("local", verb, None) for verb in local)]
    with _lock:
        for kind, verb, name in wanted:
            known = _entries.get(verb)
            if known is not None and known[:2] != (kind, name):
                raise StateMachineError(
                    f"{owner}: {kind} verb {verb!r} names its speaker with {name!r}, but "
                    f"{known[2]} declared {known[1]!r} (a {known[0]} verb)")
        for kind, verb, name in wanted:
            _entries.setdefault(verb, (kind, name, owner))
        _publish()


def _publish() -> None:
    """Rebuild the gate's tables from the entries (at class definition only)."""
    global DECLARED, SPEAKERS, LOCAL
    keyword = {verb: Keyword(name) if name is not None else None
               for verb, (_, name, _) in _entries.items()}
    # Plain dicts and a frozenset: a get or an ``in`` is the gate's cost (25 ns).
    DECLARED = {verb: keyword[verb] for verb, (kind, _, _) in _entries.items() if kind != "shared"}
    SPEAKERS = {verb: word for verb, word in keyword.items() if word is not None}
    LOCAL = frozenset(verb for verb, (kind, _, _) in _entries.items() if kind == "local")
