"""Routing keys: how a message addresses a node, a role, a cell, or everyone.

Keys are dot-separated words, matched as AMQP topic patterns (``*`` one word, ``#`` zero or
more). Names are single words (letters, digits, ``-`` and ``_``), so a key never splits a
name: a host called ``web-01.example.org`` is node ``web-01``.

===================  ==========================================================
``node.<name>``      the management daemon of one node
``role.<role>``      one of the cells playing a role (a durable, shared queue: a
                     node that takes the role later inherits the backlog)
``each.<role>``      every node currently playing a role
``cell.<name>``      one cell, by its cluster-unique name
``all``              every node
``event.<kind>.<node>``   healing and membership events (for log sumps, operators)
``log.<node>.<level>``    log records
``reply.<name>``     call-backs to a client such as the REPL or ``cellframe send``
``heartbeat.<node>``         a node's heartbeats (every membership cell binds ``heartbeat.*``)
``probe.<node>``             a probe only that node's queue receives (unroutable: it is gone)
``membership.down.<node>``   news that a node was declared down
``membership.leave.<node>``  a node's goodbye on a clean stop
``membership.claim.<node>``  a spare node's claim on a role, or its withdrawal
``membership.announce.<node>``  a node's life and role, for nodes that do not watch it
===================  ==========================================================

On the keys of heartbeats, logs, events, goodbyes, claims and announcements the node named is
the one speaking (``speaker_of``): a node key bound to another node may not send there.

Messages to ``role.<role>`` wait in a durable queue for whoever plays the role, so they are
the one kind sent persistent (``is_persistent``): a broker restart keeps that backlog.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from ..errors import ConfigError

__all__ = [
    "ALL",
    "announce_key",
    "cell_key",
    "claim_key",
    "down_key",
    "each_key",
    "event_key",
    "heartbeat_key",
    "is_persistent",
    "leave_key",
    "log_key",
    "node_key",
    "parse_target",
    "probe_key",
    "reply_key",
    "role_key",
    "speaker_of",
    "topic_matches",
    "validate_name",
]

ALL = "all"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}\Z")


def validate_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is one routing word, else raise ConfigError saying why."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"{what} {name!r} must be 1 to 63 letters, digits, '-' or '_' (no dots or spaces)"
        )
    return name


def node_key(name: str) -> str:
    return "node." + validate_name(name, "node name")


def role_key(role: str) -> str:
    return "role." + validate_name(role, "role")


def each_key(role: str) -> str:
    return "each." + validate_name(role, "role")


def cell_key(name: str) -> str:
    return "cell." + validate_name(name, "cell name")


def event_key(kind: str, node: str) -> str:
    return f"event.{validate_name(kind, 'event kind')}.{validate_name(node, 'node name')}"


def log_key(node: str, level: str) -> str:
    return f"log.{validate_name(node, 'node name')}.{validate_name(level, 'log level')}"


def reply_key(name: str) -> str:
    return "reply." + validate_name(name, "reply name")


def _about_a_node(prefix: str) -> Callable[[str], str]:
    """The key builder of a membership message about one node: ``prefix`` + the node's name."""

    def key(node: str) -> str:
        return prefix + validate_name(node, "node name")

    return key


heartbeat_key = _about_a_node("heartbeat.")
probe_key = _about_a_node("probe.")
down_key = _about_a_node("membership.down.")
leave_key = _about_a_node("membership.leave.")
claim_key = _about_a_node("membership.claim.")
announce_key = _about_a_node("membership.announce.")


#: Keys on which a node speaks in its own name, and the word that names it.
_SPEAKER_WORD = {"heartbeat": 1, "log": 1, "event": 2, "membership.leave": 2,
                 "membership.claim": 2, "membership.announce": 2}
_SPEAKER_HEADS = ("heartbeat.", "log.", "event.", "membership.")


@lru_cache(maxsize=4096)  # a node sees few keys: 60-100 ns a hit, against 150-440 ns to work out
def speaker_of(key: str) -> str | None:
    """The node a message to routing key ``key`` speaks for (``heartbeat.web-01``,
    ``log.web-01.info``, ``event.down.web-01``, ``membership.claim.web-01``...), else None
    (a probe and a down name the node they are about, not the one speaking)."""
    if not key.startswith(_SPEAKER_HEADS):  # most keys (cell., node., role.): 80 ns, no split
        return None
    words = key.split(".")
    where = _SPEAKER_WORD.get(words[0])
    if where is None and len(words) > 1:
        where = _SPEAKER_WORD.get(f"membership.{words[1]}")
    return words[where] if where is not None and len(words) > where else None


def is_persistent(key: str) -> bool:
    """Whether a message sent to routing key ``key`` is sent persistent: those to a role's
    durable queue, which must outlive a broker restart."""
    return key.startswith("role.")


def parse_target(target: str) -> str:
    """Turn an operator's target (``all``, ``node:web-01``, ``role:web``, ``each:web``,
    ``cell:proxy``, or a full routing key) into a routing key."""
    if target == ALL:
        return ALL
    kind, sep, name = target.partition(":")
    if sep:
        builders = {"node": node_key, "role": role_key, "each": each_key, "cell": cell_key}
        if kind not in builders:
            raise ConfigError(f"unknown target kind {kind!r}: use node, role, each, cell or all")
        return builders[kind](name)
    prefix, dot, rest = target.partition(".")
    if dot and prefix in {"node", "role", "each", "cell", "reply"}:
        validate_name(rest)
        return target
    raise ConfigError(f"target {target!r} is not all, node:NAME, role:NAME, each:NAME or cell:NAME")


@lru_cache(maxsize=65_536)
def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` is zero or more words."""
    return _words_match(tuple(pattern.split(".")) if pattern else (), tuple(key.split(".")) if key else ())


def _words_match(pattern: tuple[str, ...], key: tuple[str, ...]) -> bool:
    # Glob matching over words; positions reachable so far, advanced one key word at a time.
    states = _closure(pattern, {0})
    for word in key:
        advanced = set()
        for i in states:
            if i < len(pattern):
                if pattern[i] == "#":
                    advanced.add(i)
                elif pattern[i] == "*" or pattern[i] == word:
                    advanced.add(i + 1)
        states = _closure(pattern, advanced)
        if not states:
            return False
    return len(pattern) in states


def _closure(pattern: tuple[str, ...], states: set[int]) -> set[int]:
    """Add the positions reachable by letting a '#' match zero words."""
    result = set(states)
    stack = list(states)
    while stack:
        i = stack.pop()
        if i < len(pattern) and pattern[i] == "#" and i + 1 not in result:
            result.add(i + 1)
            stack.append(i + 1)
    return result
