"""The gate: the checks a delivery passes before any cell sees it, each refusal with its reason.

In order, cheapest first: the body's size, the signature (a known key, unaltered, meant for the
routing key it arrived on, alive: ``Signer.verify``), a replay within the message's life
(``ReplayCache``), the body read as cellframe language (a body seen lately is not read again:
``ReadMemo``), and last what the key may send: never a node's traffic from an operator key (the
routing keys of ``NODE_ONLY``, the verbs cells declare in ``node_verbs``), never what a cell
only tells itself (``local_verbs``) from any key, never another node's name from a node key
bound to one node (``node_verbs`` and ``shared_verbs``), and then its capabilities, which need
the verb. The verbs are those of the message and of every form inside it that calls one
(``language.calls``). Every refusal is a ``RefusedError`` whose ``reason`` is one of
``wire.signing.REASONS``; the node counts them by reason and dead-letters the message in
diagnostic mode. Runs on the transport's consumer thread, so it never blocks.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ..cell import nodeverbs
from ..errors import LanguageError, RefusedError
from ..language.calls import calls_within
from ..language.read_memo import ReadMemo
from ..language.symbols import Keyword, Symbol
from ..transports.base import Delivery
from ..wire.keys import Key
from ..wire.replay import ReplayCache
from ..wire.routing import speaker_of
from ..wire.signing import EXPIRES_HEADER

__all__ = ["NODE_ONLY", "Admitted", "Gate", "ReplayEntry"]

#: Routing keys only nodes publish to (heartbeats, membership news, probes, logs, events,
#: call-backs): an operator key, whatever its capabilities, cannot impersonate a node there.
NODE_ONLY = ("heartbeat.", "membership.", "probe.", "log.", "event.", "reply.")
#: The longest message id a node takes: every cell remembers the ids it applied (100,000 by
#: default) and a durable cell records them, so an id as long as a message would let one
#: sender fill a node's memory, or a record.
MAX_MESSAGE_ID = 1024

#: Client reply addresses remembered with the operator key that last wrote from them.
_REPLY_KEYS = 10_000


#: What the replay cache remembers of a signed message: (key id, message id, routing key,
#: the queue it came from).
ReplayEntry = tuple[str, str, str, str]


class Admitted:
    """A delivery that passed the gate: its expression, the key that signed it, and (signed)
    its replay cache entry and expiry, for the role's other instances
    (``cellframe.node.replays``)."""

    __slots__ = ("entry", "expires", "expr", "key", "verb")

    def __init__(self, expr: Any, key: Key | None, verb: str | None,
                 entry: ReplayEntry | None = None, expires: float = 0.0) -> None:
        self.expr = expr
        self.key = key
        self.verb = verb
        self.entry = entry
        self.expires = expires


class Gate:
    """Admits or refuses deliveries for one node (``signer`` None: unsigned, insecure)."""

    def __init__(self, signer: Any | None, max_message_bytes: int,
                 replays: ReplayCache | None = None) -> None:
        self.signer = signer
        self.max_message_bytes = max_message_bytes
        self.replays = replays if replays is not None else ReplayCache()
        self._read = ReadMemo(max_message_bytes).read  # a repeated body is read once
        self._reply_keys: OrderedDict[str, Key] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, delivery: Delivery, where: str) -> Admitted:
        """The delivery's expression and signing key; ``RefusedError`` says why not. ``where``
        names the queue it came from (one message may reach a node through two queues)."""
        envelope = delivery.envelope
        size = len(envelope.body)
        if size > self.max_message_bytes:
            raise RefusedError("oversized", f"message of {size} bytes exceeds {self.max_message_bytes}")
        if len(envelope.message_id) > MAX_MESSAGE_ID:
            raise RefusedError("oversized", f"a message id of {len(envelope.message_id)} "
                               f"characters exceeds {MAX_MESSAGE_ID}")
        key, entry, expires = None, None, 0.0
        if self.signer is not None:
            now = time.time()  # one clock read for the expiry and the replay cache
            key = self.signer.verify(envelope, delivery.routing_key, now=now)
            entry = (key.id, envelope.message_id, delivery.routing_key, where)
            expires = float(envelope.headers[EXPIRES_HEADER])
            if self.replays.seen(entry, expires, now) and not delivery.redelivered:
                raise _with_key(RefusedError("replayed", f"message {envelope.message_id!r} was seen "
                                                    "before (a replay within its life)"), key)
            if key.kind == "operator" and envelope.reply_to:
                self._remember(envelope.reply_to, key)
        try:
            expr = self._read(envelope.body)
        except LanguageError as error:
            raise RefusedError("unreadable", f"unreadable: {error}") from error
        verb = head_verb(expr)
        if key is not None:
            routing_key = delivery.routing_key
            # The verbs called inside the message are checked as its own verb is: else
            # (do (replicate ...)) or (set-weight :weight (serve ...)) would pass as (do) does.
            inner = calls_within(expr) if verb is not None else ()
            if key.kind == "operator":
                _refuse_node_traffic(key, routing_key, verb, inner)
            else:
                _refuse_local(key, verb, inner)
                if key.node is not None:
                    _refuse_other_names(key, routing_key, verb, expr, inner)
            if not key.unrestricted:  # checked here, not in a function: 0.1 us a message less
                if not key.allows(routing_key, verb):
                    raise _beyond(key, routing_key, verb)
                for form in inner:
                    if not key.allows(routing_key, form[0].name):
                        raise _beyond(key, routing_key, form[0].name)
        return Admitted(expr, key, verb, entry, expires)

    def reply_key(self, target: str) -> Key | None:
        """The operator key to sign a call-back to ``target`` with: the one its client wrote
        with, so a client holding only its own key can verify the answer."""
        return self._reply_keys.get(target)

    def _remember(self, reply_to: str, key: Key) -> None:
        with self._lock:
            self._reply_keys[reply_to] = key
            self._reply_keys.move_to_end(reply_to)
            if len(self._reply_keys) > _REPLY_KEYS:
                self._reply_keys.popitem(last=False)


def _refuse_node_traffic(key: Key, routing_key: str, verb: str | None,
                         inner: Sequence[list[Any]]) -> None:
    """An operator key, whatever its capabilities, never sends what only nodes send."""
    if routing_key.startswith(NODE_ONLY):
        raise _with_key(RefusedError("not-allowed", f"operator key {key.id!r} may not send "
                                     f"to {routing_key!r}: only node keys do"), key)
    declared = nodeverbs.DECLARED
    if verb in declared:
        raise _with_key(RefusedError("not-allowed", f"operator key {key.id!r} may not send "
                                     f"({verb} ...): only node keys do"), key)
    for form in inner:
        if form[0].name in declared:
            raise _with_key(RefusedError("not-allowed", f"operator key {key.id!r} may not send "
                                         f"({form[0].name} ...) inside ({verb} ...): only node "
                                         "keys do"), key)


def _refuse_local(key: Key, verb: str | None, inner: Sequence[list[Any]]) -> None:
    """No key sends what a cell only tells itself (the proxy's ``reroute``)."""
    local = nodeverbs.LOCAL
    if verb in local:
        raise _not_local(key, verb)
    for form in inner:
        if form[0].name in local:
            raise _not_local(key, form[0].name)


def _not_local(key: Key, verb: str | None) -> RefusedError:
    return _with_key(RefusedError("not-allowed", f"key {key.id!r} may not send ({verb} ...): a "
                                  "cell only tells itself that"), key)


def _refuse_other_names(key: Key, routing_key: str, verb: str | None, expr: Any,
                        inner: Sequence[list[Any]]) -> None:
    """A node key bound to one node speaks only in that node's name: on the routing keys that
    name the speaker, and in the speaker keyword of the node and shared verbs cells declare."""
    named = speaker_of(routing_key)
    if named is not None and named != key.node:
        raise _with_key(RefusedError("not-allowed", f"node key {key.id!r} speaks for "
                                     f"{key.node!r}, not {named!r} ({routing_key!r})"), key)
    speakers = nodeverbs.SPEAKERS
    speaker = speakers.get(verb) if verb is not None else None
    if speaker is not None:
        _refuse_unless_named(key, expr, verb, speaker)
    for form in inner:
        speaker = speakers.get(form[0].name)
        if speaker is not None:
            _refuse_unless_named(key, form, form[0].name, speaker)


def _refuse_unless_named(key: Key, form: list[Any], verb: str | None, speaker: Keyword) -> None:
    named = _keyword_value(form, speaker)
    if named != key.node:
        raise _with_key(RefusedError("not-allowed", f"node key {key.id!r} speaks for "
                                     f"{key.node!r}, not {named!r} (({verb} {speaker} ...))"),
                        key)


def _beyond(key: Key, routing_key: str, verb: str | None) -> RefusedError:
    return _with_key(RefusedError("not-allowed", f"key {key.id!r} may not send ({verb} ...) to "
                                  f"{routing_key!r}"), key)


def _keyword_value(form: list[Any], keyword: Keyword) -> Any:
    """The value the evaluator would give ``keyword`` in ``(verb ... :keyword value ...)``,
    else None: read as the evaluator reads a verb's arguments, a keyword and its value at a time
    from the left (so a keyword that is another keyword's value is not taken for it). The
    keyword is compared by identity: 220 ns for a member-down."""
    index, end = 1, len(form) - 1
    while index < end:
        item = form[index]
        if item is keyword:
            return form[index + 1]
        index += 2 if type(item) is Keyword else 1
    return None


def _with_key(error: RefusedError, key: Key) -> RefusedError:
    error.key = key  # type: ignore[attr-defined]  # for the audit trail
    return error


def head_verb(expr: Any) -> str | None:
    """The verb of ``(verb ...)``, else None."""
    if isinstance(expr, list) and expr and isinstance(expr[0], Symbol):
        return expr[0].name
    return None
