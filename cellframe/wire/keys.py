"""Signing keys: who may sign messages, and what each key may send (targets and verbs).

A ``Key`` is an id, a secret and a list of capabilities. A capability is one line of text, a
target then the verbs it allows (``*`` for any)::

    all *                         anything, anywhere (node keys)
    role:web set-weight           (set-weight ...) to role.web or each.web
    node:web-* status ping        (status) or (ping) to any node whose name matches web-*
    cell:echo-01 say              (say ...) to the cell echo-01

Targets match with shell globs on the name (``fnmatch``). A ``node`` key may sign what the
nodes send among themselves (heartbeats, claims, replication, call-backs); an ``operator`` key
is one a person or a tool holds, and what it sends is audited. A node key may be bound to one
node (``node = "web-01"``): it then speaks for that node alone, and the gate refuses it on
heartbeats, membership news, events and logs in another node's name. A node key bound to no
node (the cluster secret's, the demo's) speaks for every node.

Keys live in TOML files, never in DNS (which anyone on the path can read or spoof)::

    [[key]]
    id = "ops-2026"
    kind = "operator"
    secret = "9f1c...64 hex digits"
    allow = ["role:web set-weight", "node:* status"]

    [[key]]
    id = "web-01"
    kind = "node"
    node = "web-01"
    secret = "..."
    allow = ["all *"]

A ``Keyring`` is an immutable snapshot of the valid keys by id; ``KeyFiles`` rereads its files
when asked (SIGHUP) or when one changed, and replaces the snapshot whole, so a verifier reads
it without a lock. Two keys valid at once is how a key is rotated (docs/operations.md).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import threading
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from ..errors import ConfigError
from .routing import validate_name

log = logging.getLogger(__name__)

__all__ = [
    "ALL_CAPABILITIES",
    "KINDS",
    "MAX_KEY_FILE_BYTES",
    "MIN_SECRET_BYTES",
    "SETTLE_SECONDS",
    "Capability",
    "Key",
    "KeyFiles",
    "Keyring",
    "dump_keys",
    "load_key_files",
    "load_keys",
    "new_key",
]

#: Shortest secret accepted: 128 bits.
MIN_SECRET_BYTES = 16
#: Largest key file read: a key takes about 200 bytes, so some 5,000 keys. Without a limit a
#: key file of /dev/zero was read until memory ran out.
MAX_KEY_FILE_BYTES = 1 << 20
KINDS = ("node", "operator")
#: routing key prefixes each capability target kind covers.
_PREFIXES = {"role": ("role.", "each."), "node": ("node.",), "cell": ("cell.",),
             "key": ("",)}
#: A role, node or cell name in a capability: a routing word (``routing.validate_name``),
#: with shell globs. Anything else matched no name: ``node:web-01,web-02`` allowed nothing.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_\-*?\[\]!]+")
#: The fields of a key file's [[key]] table.
_FIELDS = frozenset({"id", "kind", "node", "secret", "allow"})
#: Seconds a changed key file must rest before KeyFiles.refresh() reads it (SIGHUP: at once).
SETTLE_SECONDS = 1.0
#: KeyFiles' stamps for files it could not even stat (removed, or a directory's mode changed).
_UNREADABLE: tuple[tuple[int, ...], ...] = ((-1,),)
#: Capability decisions a key remembers at most (each a few hundred bytes).
_DECISIONS = 4096


@dataclass(frozen=True, slots=True)
class Capability:
    """One grant: messages to ``target`` (``all``, ``role:NAME``, ``node:NAME``,
    ``cell:NAME`` or ``key:ROUTING-KEY``, globs allowed in the name) whose verb is in ``verbs``
    (None: any verb)."""

    target: str
    verbs: frozenset[str] | None

    @classmethod
    def parse(cls, text: str) -> Capability:
        """Read ``"TARGET VERB..."`` (``*`` or no verb: any verb)."""
        if not isinstance(text, str):
            raise ConfigError(f"a capability is text like 'role:web set-weight', not {text!r}")
        words = text.split()
        if not words:
            raise ConfigError("an empty capability: give a target and verbs, e.g. 'all *'")
        target, verbs = words[0], words[1:]
        if target not in ("all", "*"):
            kind, _, name = target.partition(":")
            if kind not in _PREFIXES or not name:
                raise ConfigError(f"capability target {target!r}: use all, role:NAME, "
                                  "node:NAME, cell:NAME or key:ROUTING-KEY")
            if kind != "key" and not _NAME_PATTERN.fullmatch(name):
                raise ConfigError(f"capability target {target!r}: names are letters, digits, "
                                  f"'-' and '_' (globs: * ? [...]), so it would match no {kind}")
        else:
            target = "all"
        for verb in verbs:
            _check_verb(verb, text)
        return cls(target, None if not verbs or "*" in verbs else frozenset(verbs))

    def allows(self, routing_key: str, verb: str | None) -> bool:
        if self.verbs is not None and verb not in self.verbs:
            return False
        if self.target == "all":
            return True
        kind, _, pattern = self.target.partition(":")
        return any(routing_key.startswith(prefix)
                   and fnmatchcase(routing_key[len(prefix):], pattern)
                   for prefix in _PREFIXES[kind])

    def __str__(self) -> str:
        return f"{self.target} {' '.join(sorted(self.verbs)) if self.verbs is not None else '*'}"


def _check_verb(verb: str, text: str) -> None:
    """A verb that could never be what was meant: each matched nothing, silently."""
    if verb.partition(":")[0] in _PREFIXES:
        raise ConfigError(f"capability {text!r}: one target a capability: {verb!r} is a second "
                          "(write a capability for each target)")
    if verb != "*" and any(c in verb for c in "*?["):
        raise ConfigError(f"capability {text!r}: verbs are exact names ('*' alone: any verb), "
                          f"so {verb!r} would match no verb")


ALL_CAPABILITIES = (Capability("all", None),)


@dataclass(frozen=True, slots=True)
class Key:
    """A signing key: its id (sent with every message it signs), its secret, its kind
    (``node`` or ``operator``), what it may send, and for a node key the node it speaks for
    (None: every node)."""

    id: str
    secret: bytes
    allow: tuple[Capability, ...] = ALL_CAPABILITIES
    kind: str = "operator"
    node: str | None = None
    #: Allowed everything (``all *``): the check every node key makes per message, made once.
    unrestricted: bool = field(default=False, init=False, repr=False, compare=False)
    #: What ``allows`` answered, by (routing key, verb): 0.1 us a message instead of 1.5 us
    #: of glob matching. The answer depends only on this key's capabilities, which never
    #: change (a reload makes new keys), and the memo is emptied past ``_DECISIONS`` entries.
    decisions: dict[tuple[str, str | None], bool] = field(default_factory=dict, init=False,
                                                          repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "unrestricted",
                           any(c.target == "all" and c.verbs is None for c in self.allow))
        validate_name(self.id, "key id")
        if not isinstance(self.secret, bytes):
            raise ConfigError(f"key {self.id!r}: the secret must be bytes, "
                              f"not {type(self.secret).__name__}")
        if len(self.secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"key {self.id!r}: the secret is {len(self.secret)} bytes; "
                              f"at least {MIN_SECRET_BYTES} needed")
        if self.kind not in KINDS:
            raise ConfigError(f"key {self.id!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.node is not None:
            if self.kind != "node":
                raise ConfigError(f"key {self.id!r}: only a node key speaks for a node "
                                  f"(node = {self.node!r} on a {self.kind} key)")
            validate_name(self.node, f"key {self.id!r}: node")

    def allows(self, routing_key: str, verb: str | None) -> bool:
        """May this key send a message with head ``verb`` to ``routing_key``?"""
        if self.unrestricted:
            return True
        decision = self.decisions.get((routing_key, verb))
        if decision is None:
            decision = any(c.allows(routing_key, verb) for c in self.allow)
            if len(self.decisions) >= _DECISIONS:
                self.decisions.clear()
            self.decisions[routing_key, verb] = decision
        return decision

    def speaks_for(self, node: str) -> bool:
        """May this key sign traffic in ``node``'s name (a node key bound to it or to none)?"""
        return self.kind == "node" and self.node in (None, node)

    def __repr__(self) -> str:  # never the secret
        bound = f" node={self.node}" if self.node is not None else ""
        return f"<Key {self.id} {self.kind}{bound} allow={[str(c) for c in self.allow]}>"


def new_key(key_id: str, allow: Iterable[str] = ("all *",), *, kind: str = "operator",
            node: str | None = None) -> Key:
    """A fresh key with a random 256-bit secret (``node``: the node a node key speaks for)."""
    return Key(key_id, secrets.token_bytes(32), tuple(Capability.parse(a) for a in allow), kind,
               node)


class Keyring:
    """The keys a verifier accepts, by id: an immutable snapshot."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[Key] = ()) -> None:
        found: dict[str, Key] = {}
        for key in keys:
            if key.id in found and found[key.id] != key:
                raise ConfigError(f"two different keys share the id {key.id!r}")
            found[key.id] = key
        self._keys = found

    def get(self, key_id: object) -> Key | None:
        return self._keys.get(key_id) if isinstance(key_id, str) else None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"<Keyring {sorted(self._keys)}>"


def load_keys(path: str | os.PathLike[str]) -> list[Key]:
    """The keys in a TOML key file (see the module doc); ConfigError says what is wrong, and
    in which file."""
    where = os.fspath(path)
    try:
        data, opened = _read_key_file(path, where)
        keys = _keys_in(data, where)
        # As a Keyring does: `send --key FILE` signed with the first of two, `keys list`
        # showed both, and only a node (which builds a Keyring) refused the file.
        Keyring(keys)
    except ConfigError as exc:
        prefix = f"key file {where!r}"
        raise (exc if str(exc).startswith(prefix) else ConfigError(f"{prefix}: {exc}")) from exc
    warn_if_others_may_read(opened, f"key file {where!r}")  # once it is known to hold keys
    return keys


def load_key_files(paths: Iterable[str | os.PathLike[str]]) -> Keyring:
    """The keyring of several key files; ConfigError names both files if they give one id two
    different keys (a node refuses such files, so ``keys list`` does too)."""
    found: dict[str, tuple[Key, str]] = {}
    for path in paths:
        for key in load_keys(path):
            if key.id in found and found[key.id][0] != key:
                raise ConfigError(f"key {key.id!r} is in {found[key.id][1]!r} and in "
                                  f"{os.fspath(path)!r}, with another secret, kind, node or "
                                  "capabilities: one id, one key")
            found.setdefault(key.id, (key, os.fspath(path)))
    return Keyring(key for key, _ in found.values())


def _read_key_file(path: str | os.PathLike[str], where: str,
                   ) -> tuple[dict[str, object], os.stat_result]:
    """The TOML of a key file, and what ``fstat`` said of the file read."""
    try:
        with open(path, "rb") as file:  # a pipe too: `--key <(pass show ops.key)`
            opened = os.fstat(file.fileno())
            raw = file.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"key file {where!r} cannot be read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise ConfigError(f"key file {where!r} is larger than {MAX_KEY_FILE_BYTES} bytes: "
                          "not a key file?")
    try:
        return tomllib.loads(raw.decode("utf-8")), opened
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"key file {where!r} is not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses once per nested array or table
        raise ConfigError(f"key file {where!r} is not a key file: its values are nested "
                          "too deeply") from exc


#: (where, device, inode, mode) already warned of: a node rereads its key files on SIGHUP.
_warned: set[tuple[str, int, int, int]] = set()


def warn_if_others_may_read(st: os.stat_result, where: str) -> None:
    """Log a warning, once per file and mode, if a regular file of secrets (``st``: what
    ``os.fstat`` said of it as it was read) may be read or written by its group or by others
    (ssh refuses such a private key): anyone who can read it can sign as its keys. A
    warning, not a refusal: a file written under the default umask still works, and
    ``cellframe keys new`` writes mode 600."""
    exposed = stat.S_IMODE(st.st_mode) & 0o077
    if not exposed or not stat.S_ISREG(st.st_mode):
        return
    seen = (where, st.st_dev, st.st_ino, st.st_mode)
    if seen not in _warned:
        _warned.add(seen)
        log.warning("%s may be read or written by its group or by others (mode %03o): anyone "
                    "who can read it can sign with its keys; chmod 600 it",
                    where, stat.S_IMODE(st.st_mode))


def _keys_in(data: dict[str, object], where: str) -> list[Key]:
    entries = data.get("key")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"key file {where!r} holds no [[key]] table")
    return [_key_from(entry, where) for entry in entries]


def _key_from(entry: object, where: str) -> Key:
    if not isinstance(entry, dict):
        raise ConfigError(f"key file {where!r}: a [[key]] entry is not a table")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        # A misspelt field was ignored: `nod = "web-01"` left a node key bound to no node,
        # free to speak for every node, and `alow` left a key with no capabilities.
        raise ConfigError(f"key file {where!r}: key {entry.get('id')!r} has unknown field(s) "
                          f"{', '.join(map(repr, unknown))} (known: {', '.join(sorted(_FIELDS))})")
    try:
        secret = bytes.fromhex(entry["secret"])
        allow = entry.get("allow", [])
        if not isinstance(allow, list):
            raise ConfigError(f"key file {where!r}: allow must be a list of capabilities")
        key = Key(entry["id"], secret, tuple(Capability.parse(a) for a in allow),
                  entry.get("kind", "operator"), entry.get("node"))
        if not key.allow:
            # Every message it signed was refused (not-allowed), a node's own heartbeats
            # too, and nothing said so when the file was read.
            raise ConfigError(f"key file {where!r}: key {key.id!r} allows nothing (no allow, "
                              "or allow = []): give it capabilities, e.g. allow = ['all *']; "
                              "to revoke a key, remove it")
        return key
    except KeyError as exc:
        raise ConfigError(f"key file {where!r}: a key has no {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"key file {where!r}: a key's secret must be hex ({exc})") from exc


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        raise ConfigError(f"key file {os.fspath(path)!r} cannot be read: "
                          f"{exc.strerror or exc}") from exc


def dump_keys(keys: Iterable[Key]) -> str:
    """The TOML text of a key file holding ``keys`` (``load_keys`` reads it back)."""
    blocks = []
    for key in keys:
        allow = ", ".join(f'"{c}"' for c in key.allow)
        bound = f'node = "{key.node}"\n' if key.node is not None else ""
        blocks.append(f'[[key]]\nid = "{key.id}"\nkind = "{key.kind}"\n{bound}'
                      f'secret = "{key.secret.hex()}"\nallow = [{allow}]\n')
    return "\n".join(blocks)


class KeyFiles:
    """A keyring read from files: ``reload()`` (on SIGHUP) or ``refresh()`` (when a file
    changed) replaces the snapshot whole; a file that fails to read keeps the old keys."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]], *,
                 settle: float = SETTLE_SECONDS) -> None:
        self.paths = [Path(p) for p in paths]
        self.settle = settle
        if not self.paths:
            raise ConfigError("no key files given")
        # Reentrant: SIGHUP's handler reloads on the main thread, which may be refreshing.
        self._lock = threading.RLock()
        self._stamps: tuple[tuple[int, ...], ...] = ()
        #: The stamps of files that failed to read: refresh() says so once for each version.
        self._failed: tuple[tuple[int, ...], ...] = ()
        self.keyring = Keyring()
        self.reload(strict=True)

    def reload(self, *, strict: bool = False) -> bool:
        """Read every file again; True if the new keys are in place. With ``strict``, an
        error is raised; else it is left for the caller to log and the old keys stay."""
        with self._lock:
            try:
                stamps = self._read_stamps()
                self.keyring = load_key_files(self.paths)
                self._stamps = stamps
                return True
            except ConfigError:
                if strict:
                    raise
                return False

    def refresh(self) -> bool:
        """Reload if a file changed (replaced, written, moved or its mode changed); True if it
        reloaded. A changed file that fails to read raises ConfigError, once for that version
        of the files; the old keys stay."""
        with self._lock:
            try:
                stamps = self._read_stamps()
            except ConfigError:
                if self._failed == _UNREADABLE:
                    return False
                self._failed = _UNREADABLE
                raise
            if stamps in (self._stamps, self._failed) or self._being_written(stamps):
                return False
            try:
                self.reload(strict=True)
            except ConfigError:
                self._failed = stamps
                raise
            return True

    def _being_written(self, stamps: tuple[tuple[int, ...], ...]) -> bool:
        """Was a file written less than ``settle`` seconds ago? A prefix of a file being
        written that still parses (its first [[key]] of two) revoked the keys after it until
        the next poll. A file moved into place keeps its old time and is read at once."""
        age = time.time_ns() - max(stamp[2] for stamp in stamps)
        return 0 <= age < self.settle * 1e9

    def _read_stamps(self) -> tuple[tuple[int, ...], ...]:
        # The inode and change time too: a file replaced whole by one of the same size and
        # modification time (a secret rotated in place, then `cp -p`) was not noticed.
        return tuple((s.st_dev, s.st_ino, s.st_mtime_ns, s.st_ctime_ns, s.st_size)
                     for s in map(_stat, self.paths))

    def get(self, key_id: object) -> Key | None:
        return self.keyring.get(key_id)

    def __repr__(self) -> str:
        return f"<KeyFiles {[str(p) for p in self.paths]} {self.keyring!r}>"
