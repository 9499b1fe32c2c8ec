"""A node's configuration as ``export`` lines that a shell can ``eval``.

Names: ``CELLFRAME_`` + the key upper-cased, with ``-`` and ``.`` turned into ``_``
(``shard-id`` -> ``CELLFRAME_SHARD_ID``). For a NodeConfig, ``CELLFRAME_NAME`` and
``CELLFRAME_ROLE`` (empty for a spare) come from the config itself and a setting ``name`` is
reserved. Values are quoted with ``shlex.quote``, so ``eval`` in bash gives back every value
byte for byte: spaces, quotes, ``$``, backquotes, newlines and unicode included.

A key that makes no valid shell name (``data dir``, ``größe``), collides with a name already
exported, or has a value holding a NUL byte (no environment variable can) is not printed but
returned in the second list.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from .txtconfig import NodeConfig

__all__ = ["PREFIX", "env_name", "export_lines"]

PREFIX = "CELLFRAME_"
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def env_name(key: str, prefix: str = PREFIX) -> str | None:
    """The environment variable for ``key``, or ``None`` if it makes no valid shell name."""
    name = prefix + key.upper().replace("-", "_").replace(".", "_")
    return name if name.isascii() and _SHELL_NAME.match(name) else None


def export_lines(
    config: NodeConfig | Mapping[str, str], prefix: str = PREFIX
) -> tuple[list[str], list[str]]:
    """Return ``(lines, rejected_keys)``: one ``export NAME=VALUE`` line per exportable key."""
    pairs = _pairs(config)
    lines: list[str] = []
    rejected: list[str] = []
    used: set[str] = set()
    for key, value in pairs:
        name = env_name(key, prefix)
        if name is None or name in used or "\0" in value:
            rejected.append(key)
            continue
        used.add(name)
        lines.append(f"export {name}={shlex.quote(value)}")
    return lines, rejected


def _pairs(config: NodeConfig | Mapping[str, str]) -> list[tuple[str, str]]:
    """The pairs to export, with a NodeConfig's own name and role first."""
    if not isinstance(config, NodeConfig):
        return list(config.items())
    own = [("name", config.name), ("role", config.role or "")]
    rest = [(k, v) for k, v in config.settings.items() if k != "role"]
    return own + rest
