"""The cluster's retention rule: what ``shard.retention`` says, and the ``Retention`` it means now.

Every replica of a partition must compact with the same rule, or anti-entropy would keep
moving the versions one of them dropped (and each would be right by its own rule). So the
rule is one setting, written at ``_cluster``::

    shard.retention=newest=3               the 3 newest versions of every family
    shard.retention=max-age=30d            every version of the last 30 days, plus the one
                                           that was current 30 days ago
    shard.retention=newest=3,max-age=12h   a version either rule keeps is kept

Ages take a unit: ``s``, ``m``, ``h`` or ``d``; the unit is also the step of the cut. The
cut ``now - max-age`` is rounded down to a whole unit (UTC), so replicas that compact within
the same unit use the same cut and end up with the same records: with ``max-age=30d`` two
compactions an hour apart agree except across midnight; with ``max-age=720h``, only within
the hour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError
from ..store import Retention

__all__ = ["UNITS", "RetentionRule", "parse_retention"]

#: Microseconds of each unit an age may be written in.
UNITS = {"s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
_AGE = re.compile(r"^([0-9]{1,9})([smhd])$")
_COUNT = re.compile(r"^[0-9]{1,9}$")


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """A retention rule with its age relative to now: ``at(now)`` gives the ``Retention``."""

    newest: int = 0
    max_age: int | None = None  # microseconds
    step: int = UNITS["s"]  # the cut is rounded down to a multiple of this
    text: str = ""

    def at(self, now: int) -> Retention:
        """The rule as it applies at ``now`` (int microseconds since the epoch)."""
        if self.max_age is None:
            return Retention(newest=self.newest)
        cut = (now - self.max_age) // self.step * self.step
        return Retention(newest=self.newest, since=cut)

    def __str__(self) -> str:
        return self.text


def parse_retention(key: str, text: str) -> RetentionRule:
    """Read a ``shard.retention`` value; ConfigError naming ``key`` and what is wrong."""
    words = [w for w in re.split(r"[,\s]+", text.strip()) if w]
    if not words:
        raise ConfigError(f"setting {key!r} is empty: write newest=N and/or max-age=AGE")
    fields: dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or name not in ("newest", "max-age"):
            raise ConfigError(f"setting {key!r}: {word!r} is not newest=N or max-age=AGE")
        if name in fields:
            raise ConfigError(f"setting {key!r}: {name} is given twice")
        fields[name] = value
    newest = 0
    if "newest" in fields:
        if not _COUNT.match(fields["newest"]) or int(fields["newest"]) < 1:
            raise ConfigError(f"setting {key!r}: newest={fields['newest']} must be a whole "
                              f"number of versions, at least 1")
        newest = int(fields["newest"])
    if "max-age" not in fields:
        return RetentionRule(newest, text=",".join(words))
    match = _AGE.match(fields["max-age"])
    if match is None or int(match.group(1)) < 1:
        raise ConfigError(f"setting {key!r}: max-age={fields['max-age']} must be a positive "
                          f"whole number of s, m, h or d (e.g. 30d)")
    step = UNITS[match.group(2)]
    return RetentionRule(newest, int(match.group(1)) * step, step, ",".join(words))
