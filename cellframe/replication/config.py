"""How a shard cell is configured: its shard id, its data directory, quorums and timings.

Settings come from DNS TXT records, the node's own records winning over ``_cluster``'s:

==========================  =======  ===================================================
key                         default  meaning
==========================  =======  ===================================================
``shard-id``                derived  16-bit shard id (node record); guids carry it
``data-dir``                temp     where the store lives (node record); else
                                     ``$CELLFRAME_DATA_DIR/<node>``, else a temp directory
``replicas``                3        N: copies of every partition
``shard.write-quorum``      2        W: durable copies before an insert is acknowledged
``shard.read-quorum``       2        R: replicas a select asks before it answers
``shard.partitions``        1024     partitions of the ring (every node must agree)
``shard.fsync``             true     ``false`` skips fsync (tests, demos: not durable)
``shard.handoff-rate``      64 MiB   bytes per second this node sends in transfers
``shard.anti-entropy-ms``   1000     period of the Merkle comparison with each peer
``shard.timeout-ms``        5000     a write or read not answered by then gets an error
``shard.announce-ms``       500      period of the ``(shard-hello)`` announcement
``shard.retention``         none     what compaction keeps: ``newest=N``, ``max-age=30d``
                                     or both (``retention``); none keeps every version
``shard.compact-ms``        none     period of compaction by that rule (else only the
                                     ``(compact)`` verb runs it)
``shard.drop-ms``           1000     period of the look for partitions that moved away
==========================  =======  ===================================================

Keys at ``_cluster`` carry a dot (``shard.``) because ``_cluster`` reads any other
``key=number`` as a role count. A node without ``shard-id`` (a spare that differentiates
into a shard) takes ``derive_shard_id(name)``: a stable hash of its name into
4096..65535, above the small ids operators write by hand; two names that hash alike are
told apart at run time (the cell refuses a peer announcing its own id).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..store.guid import MAX_SHARD
from .retention import RetentionRule, parse_retention

__all__ = [
    "DATA_DIR_ENV",
    "DERIVED_SHARD_BASE",
    "MAX_PARTITIONS",
    "ShardConfig",
    "derive_shard_id",
    "store_directory",
]

log = logging.getLogger(__name__)

#: Derived shard ids start here, leaving 1..4095 to ids written in DNS.
DERIVED_SHARD_BASE = 4096
DATA_DIR_ENV = "CELLFRAME_DATA_DIR"
#: The ring's table travels in one message (``ring-table``): 2048 rows of three 5-digit
#: shard ids take about 40 KB of the 64 KiB a message may hold.
MAX_PARTITIONS = 2048


def derive_shard_id(node: str) -> int:
    """The shard id of a node that has none in DNS: the same on every node and every run."""
    digest = hashlib.blake2b(node.encode("utf-8"), digest_size=8, person=b"cf-shard-id").digest()
    return DERIVED_SHARD_BASE + int.from_bytes(digest, "big") % (MAX_SHARD + 1 - DERIVED_SHARD_BASE)


@dataclass(frozen=True)
class ShardConfig:
    """A shard cell's settings; ``None`` fields are filled from DNS or derived."""

    shard_id: int | None = None
    data_dir: str | None = None
    replicas: int = 3
    write_quorum: int = 2
    read_quorum: int = 2
    partitions: int = 1024
    fsync: bool = True
    handoff_rate: float = float(64 << 20)
    handoff_concurrency: int = 1024
    handoff_batch_bytes: int = 40 * 1024
    anti_entropy_interval: float = 1.0
    anti_entropy_partitions: int = 256
    max_exchanges: int = 256
    request_timeout: float = 5.0
    announce_interval: float = 0.5
    peer_timeout: float = 10.0
    stall_timeout: float = 15.0
    ring_wait: float = 1.0
    ring_wait_max: float = 10.0
    restart_grace: float = 10.0
    tick: float = 0.05
    reoffer_interval: float = 30.0
    drop_interval: float = 1.0  # period of the look for partitions that moved away
    retention: RetentionRule | None = None  # None: keep every version, never compact
    compact_interval: float | None = None  # None: compact only when asked ``(compact)``

    @classmethod
    def from_settings(cls, *layers: Mapping[str, str], **overrides: Any) -> ShardConfig:
        """Read DNS settings (later layers win), then apply ``overrides``; ConfigError if bad."""
        values: dict[str, Any] = {}
        for settings in layers:
            for key, (name, parse) in _KEYS.items():
                if key in settings:
                    values[name] = parse(key, settings[key])
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("retention"), str):
            values["retention"] = parse_retention("retention", values["retention"])
        replicas = values.get("replicas", cls.replicas)
        for quorum in ("write_quorum", "read_quorum"):
            if quorum not in values and isinstance(replicas, int):
                values[quorum] = max(1, min(getattr(cls, quorum), replicas))  # N=1: W=R=1
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        if self.shard_id is not None and not 0 <= self.shard_id <= MAX_SHARD:
            raise ConfigError(f"shard-id {self.shard_id} is outside 0..{MAX_SHARD}")
        if self.replicas < 1:
            raise ConfigError(f"replicas must be at least 1, got {self.replicas}")
        for name, value in (("write-quorum", self.write_quorum),
                            ("read-quorum", self.read_quorum)):
            if not 1 <= value <= self.replicas:
                raise ConfigError(
                    f"shard.{name} must be 1..replicas ({self.replicas}), got {value}")
        if not 1 <= self.partitions <= MAX_PARTITIONS:
            raise ConfigError(
                f"shard.partitions must be 1..{MAX_PARTITIONS}, got {self.partitions}")
        if self.handoff_rate <= 0:
            raise ConfigError(f"shard.handoff-rate must be positive, got {self.handoff_rate}")
        if self.retention is not None and not isinstance(self.retention, RetentionRule):
            raise ConfigError(f"shard.retention must be a RetentionRule, got {self.retention!r}")
        if self.compact_interval is not None and self.compact_interval <= 0:
            raise ConfigError(f"shard.compact-ms must be positive, got {self.compact_interval}")

    def with_defaults(self, node: str, settings: Mapping[str, str]) -> ShardConfig:
        """Fill the shard id and data directory for ``node``."""
        shard = self.shard_id if self.shard_id is not None else derive_shard_id(node)
        return replace(self, shard_id=shard, data_dir=self.data_dir or _data_dir(node))


def store_directory(config: ShardConfig) -> Path:
    """The store's directory: one per shard id under the data directory, so a node whose id
    changes (a spare that became a shard) never reopens another shard's guid lease."""
    assert config.data_dir is not None and config.shard_id is not None
    return Path(config.data_dir) / f"shard-{config.shard_id}"


def _data_dir(node: str) -> str:
    base = os.environ.get(DATA_DIR_ENV)
    if base:
        return str(Path(base) / node)
    return tempfile.mkdtemp(prefix=f"cellframe-{node}-")


def _int(key: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"setting {key!r}: {text!r} is not an integer") from None


def _millis(key: str, text: str) -> float:
    value = _int(key, text)
    if value <= 0:
        raise ConfigError(f"setting {key!r}: {value} must be positive")
    return value / 1000


def _bool(key: str, text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"setting {key!r}: {text!r} is not true or false")


def _text(key: str, text: str) -> str:
    if not text.strip():
        raise ConfigError(f"setting {key!r} is empty")
    return text.strip()


_KEYS = {
    "shard-id": ("shard_id", _int),
    "data-dir": ("data_dir", _text),
    "replicas": ("replicas", _int),
    "shard.write-quorum": ("write_quorum", _int),
    "shard.read-quorum": ("read_quorum", _int),
    "shard.partitions": ("partitions", _int),
    "shard.fsync": ("fsync", _bool),
    "shard.handoff-rate": ("handoff_rate", lambda k, t: float(_int(k, t))),
    "shard.anti-entropy-ms": ("anti_entropy_interval", _millis),
    "shard.timeout-ms": ("request_timeout", _millis),
    "shard.announce-ms": ("announce_interval", _millis),
    "shard.retention": ("retention", parse_retention),
    "shard.compact-ms": ("compact_interval", _millis),
    "shard.drop-ms": ("drop_interval", _millis),
}
