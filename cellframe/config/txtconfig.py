"""Configuration from DNS TXT records: each character-string is one ``key=value`` pair.

The rules (RFC 1464, with the choices cellframe makes where the RFC leaves room):

- The first unquoted ``=`` separates the key from the value; later ``=`` belong to the value.
- In the key, a backquote quotes the next ``=``, space, tab or backquote; before any other
  character a backquote is itself. Unquoted spaces and tabs around the key are ignored.
- Keys are lower-cased (``Weight`` and ``weight`` are one key); ``-`` and ``.`` are kept.
- The value is kept exactly: whitespace, ``=`` and newlines included. ``key=`` is a key with
  an empty value.
- A key that appears twice: the last one wins, after sorting the records of the RRset by their
  strings (a server may return records in any order, so the order must not come from it), and a
  warning names both places.
- A string that is not a pair (no unquoted ``=``, an empty key, an empty string, bytes that are
  not UTF-8, control characters in the key) is skipped with a warning; parsing never raises.

Warnings are logged on the ``cellframe.config`` logger and returned with the result.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..language.budget import DEFAULT_BUDGET
from ..wire.routing import validate_name

__all__ = [
    "CLUSTER_SETTING_KEYS",
    "LANGUAGE_SETTING_KEYS",
    "ClusterIntent",
    "NodeConfig",
    "format_txt_string",
    "int_setting",
    "language_budget",
    "node_name_from_hostname",
    "parse_names",
    "parse_node_config",
    "parse_txt_records",
    "parse_txt_string",
]

log = logging.getLogger("cellframe.config")

#: Keys at ``_cluster`` that are settings, not role counts (a dotted key is a setting too,
#: since a role name is one routing word and never holds a dot).
CLUSTER_SETTING_KEYS = frozenset({
    "replicas", "heartbeat-ms", "failure-timeout-ms",
    # Capacity that follows load (cellframe.healing.capacity): thresholds and hold times.
    "scale-out-load", "scale-in-load", "scale-out-hold-ms", "scale-in-hold-ms",
})

#: Settings that give the evaluator's budgets (``cellframe.language.budget``): at ``_cluster``
#: for every node, or in a node's own records, which win. Dotted, so settings at ``_cluster``.
LANGUAGE_SETTING_KEYS = {
    "language.max-steps": "max_steps",
    "language.max-depth": "max_depth",
    "language.max-work": "max_work",
    "language.max-bytes": "max_bytes",
}

_QUOTABLE = frozenset("= \t`")
# C0 and C1 control characters, tab excepted (RFC 1464 lets a backquote quote it).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_COUNT = re.compile(r"[0-9]{1,9}\Z")
_NAME_SEPARATORS = re.compile(r"[\s,]+")
# A TXT character-string carries at most 255 bytes (RFC 1035, 3.3).
_MAX_STRING = 255


@dataclass(frozen=True)
class NodeConfig:
    """What DNS says about one node: its role (``None`` for a spare) and every setting.

    Two configs are equal when name, role and settings are; ``ttl`` and ``warnings`` describe
    one reading and do not count as a change.
    """

    name: str
    role: str | None
    settings: dict[str, str]
    ttl: int = field(default=0, compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class ClusterIntent:
    """The shape the cluster should have: cells per role, the spare nodes, other settings.

    A role given as a range (``web=3..6``) has its minimum in ``roles`` and the range in
    ``ranges``: capacity follows load between the two (``cellframe.healing.capacity``).
    """

    roles: dict[str, int]
    spares: tuple[str, ...] = ()
    settings: dict[str, str] = field(default_factory=dict)
    ttl: int = field(default=0, compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """How many cells the roles ask for, spares not counted."""
        return sum(self.roles.values())

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, str], *, ttl: int = 0, strict: bool = False,
        warnings: Sequence[str] = (),
    ) -> ClusterIntent:
        """Sort parsed ``_cluster`` pairs into role counts, spares and settings.

        Bad counts or names are skipped with a warning; with ``strict`` they raise one
        ConfigError that lists every problem.
        """
        problems: list[str] = []
        roles: dict[str, int] = {}
        ranges: dict[str, tuple[int, int]] = {}
        other: dict[str, str] = {}
        spares: tuple[str, ...] = ()
        for key, value in settings.items():
            if key == "spares":
                spares = _parse_names(value, "spare", problems)
            elif key in CLUSTER_SETTING_KEYS or "." in key:
                other[key] = value
            elif ".." in value:
                _add_role_range(roles, ranges, key, value, problems)
            else:
                _add_role_count(roles, key, value, problems)
        if strict and problems:
            raise ConfigError("cluster intent: " + "; ".join(problems))
        _log_all(problems)
        return cls(roles, spares, other, ttl, (*warnings, *problems), ranges)


def _add_role_count(roles: dict[str, int], key: str, value: str, problems: list[str]) -> None:
    try:
        validate_name(key, "role")
    except ConfigError as exc:
        problems.append(f"{exc}; ignored")
        return
    if not _COUNT.match(value):
        problems.append(f"role {key!r}: count {value!r} is not a non-negative integer; ignored")
        return
    roles[key] = int(value)


def _add_role_range(roles: dict[str, int], ranges: dict[str, tuple[int, int]], key: str,
                    value: str, problems: list[str]) -> None:
    low, _, high = value.partition("..")
    if not (_COUNT.match(low) and _COUNT.match(high)) or int(low) > int(high):
        problems.append(f"role {key!r}: range {value!r} is not MIN..MAX with MIN <= MAX; ignored")
        return
    _add_role_count(roles, key, low, problems)
    if key in roles:
        ranges[key] = (int(low), int(high))


def parse_names(text: str) -> tuple[tuple[str, ...], list[str]]:
    """Split node names separated by commas or whitespace; return (names, warnings)."""
    problems: list[str] = []
    return _parse_names(text, "node", problems), problems


def _parse_names(text: str, what: str, problems: list[str]) -> tuple[str, ...]:
    names: list[str] = []
    for word in _NAME_SEPARATORS.split(text.strip()):
        if not word:
            continue
        try:
            validate_name(word, f"{what} name")
        except ConfigError as exc:
            problems.append(f"{exc}; ignored")
            continue
        if word not in names:
            names.append(word)
    return tuple(names)


def parse_txt_string(raw: bytes | str) -> tuple[str, str]:
    """Split one character-string into ``(key, value)``, or raise ConfigError saying why."""
    text = _decode(raw)
    if text == "":
        raise ConfigError("empty string")
    chars: list[tuple[str, bool]] = []  # (character, was it quoted?)
    i = 0
    while i < len(text):
        char = text[i]
        if char == "`" and i + 1 < len(text) and text[i + 1] in _QUOTABLE:
            chars.append((text[i + 1], True))
            i += 2
        elif char == "=":
            return _finish_key(chars, text), text[i + 1 :]
        else:
            chars.append((char, False))
            i += 1
    raise ConfigError(f"no unquoted '=' in {text!r}")


def _decode(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 at byte {exc.start}: {raw!r}") from exc


def _finish_key(chars: list[tuple[str, bool]], text: str) -> str:
    """Strip unquoted blanks around the key, lower-case it, and check what is left."""
    start, end = 0, len(chars)
    while start < end and chars[start] in ((" ", False), ("\t", False)):
        start += 1
    while end > start and chars[end - 1] in ((" ", False), ("\t", False)):
        end -= 1
    key = "".join(char for char, _ in chars[start:end]).lower()
    if not key:
        raise ConfigError(f"empty key in {text!r}")
    _check_no_control(key)
    return key


def _check_no_control(key: str) -> None:
    if _CONTROL.search(key):
        raise ConfigError(f"control character in key {key!r}")


def format_txt_string(key: str, value: str) -> bytes:
    """Encode one pair as a character-string that ``parse_txt_string`` reads back.

    The key is quoted where RFC 1464 asks (``=``, blanks, backquotes); the key comes back
    lower-cased. Raises ConfigError for an empty key, a control character in the key, or a
    string over 255 bytes.
    """
    if not key:
        raise ConfigError("empty key")
    _check_no_control(key)
    quoted = "".join("`" + char if char in _QUOTABLE else char for char in key)
    encoded = f"{quoted}={value}".encode()
    if len(encoded) > _MAX_STRING:
        raise ConfigError(
            f"key {key!r}: the pair is {len(encoded)} bytes, a TXT string holds {_MAX_STRING}"
        )
    return encoded


def parse_txt_records(
    records: Iterable[Sequence[bytes]], where: str = ""
) -> tuple[dict[str, str], list[str]]:
    """Merge the strings of every TXT record of one name into settings; never raises.

    ``records`` holds one tuple of strings per record (``rdata.strings``). Returns the
    settings and the warnings, each warning naming ``where`` and the string's position.
    """
    settings: dict[str, str] = {}
    seen_at: dict[str, str] = {}
    warnings: list[str] = []
    ordered = sorted(tuple(strings) for strings in records)
    for r, strings in enumerate(ordered, 1):
        for s, raw in enumerate(strings, 1):
            place = f"{where}record {r} of {len(ordered)}, string {s}"
            try:
                key, value = parse_txt_string(raw)
            except ConfigError as exc:
                warnings.append(f"{place}: {exc}; skipped")
                continue
            if key in settings:
                warnings.append(
                    f"{place}: key {key!r} repeated ({seen_at[key]} set it first); "
                    f"the later value {value!r} wins"
                )
            settings[key], seen_at[key] = value, f"record {r}, string {s}"
    _log_all(warnings)
    return settings, warnings


def parse_node_config(
    name: str, records: Iterable[Sequence[bytes]] | None, *, ttl: int = 0, where: str = ""
) -> NodeConfig:
    """Build a node's config from its TXT records (``None``: the name has none)."""
    if records is None:
        warning = f"{where}no TXT records for node {name!r}: it has no role (a spare)"
        _log_all([warning])
        return NodeConfig(name, None, {}, ttl, (warning,))
    settings, warnings = parse_txt_records(records, where)
    role = settings.get("role") or None
    if role is not None:
        try:
            validate_name(role, "role")
        except ConfigError as exc:
            warnings.append(f"{where}{exc}; the node has no role")
            _log_all(warnings[-1:])
            role = None
    return NodeConfig(name, role, settings, ttl, tuple(warnings))


def int_setting(
    settings: Mapping[str, str], key: str, default: int, *, minimum: int = 0
) -> int:
    """Read an integer setting, or raise ConfigError naming the key and the bad value."""
    text = settings.get(key)
    if text is None:
        return default
    try:
        value = int(text.strip())
    except ValueError:
        raise ConfigError(f"setting {key!r}: {text!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"setting {key!r}: {value} is below the minimum {minimum}")
    return value


def language_budget(*layers: Mapping[str, str]) -> dict[str, int]:
    """The evaluator's budgets (``Evaluator(**budget)``) that settings give: later layers win,
    the defaults fill in the rest; ConfigError names a bad setting."""
    budget = dict(DEFAULT_BUDGET)
    for settings in layers:
        for key, name in LANGUAGE_SETTING_KEYS.items():
            budget[name] = int_setting(settings, key, budget[name], minimum=1)
    return budget


def node_name_from_hostname(hostname: str | None = None) -> str:
    """A node's name: the first label of its hostname, lower-cased, checked as a routing word."""
    host = socket.gethostname() if hostname is None else hostname
    return validate_name(host.split(".", 1)[0].lower(), "node name (from the hostname)")


def _log_all(warnings: Iterable[str]) -> None:
    for warning in warnings:
        log.warning("%s", warning)
