"""64-bit guids: the top 16 bits name the shard, the low 48 bits count within it.

Layout (unsigned view)::

    63            48 47                                             0
    +---------------+-----------------------------------------------+
    |  shard (16)   |               counter (48)                    |
    +---------------+-----------------------------------------------+

Decisions, documented here because other systems see these ids:

* **Signed stores** (PostgreSQL ``bigint``, Java ``long``): the same 64 bits read as a signed
  two's-complement integer. Shards 0..32767 give positive ids; shards 32768..65535 give
  negative ids. ``to_signed`` / ``from_signed`` convert losslessly, and ``decode`` accepts
  either view, so a value read back from ``bigint`` decodes to the right shard.
* **JSON**: readers that use doubles lose precision past 2**53, and every id of shard 32 and
  up is past it. Ids therefore travel in JSON as decimal **strings** of the unsigned value
  (``to_json`` / ``from_json``).
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import GuidExhaustedError

__all__ = [
    "COUNTER_BITS",
    "MAX_COUNTER",
    "MAX_SHARD",
    "SHARD_BITS",
    "Guid",
    "decode",
    "encode",
    "from_json",
    "from_signed",
    "to_json",
    "to_signed",
]

SHARD_BITS = 16
COUNTER_BITS = 48
MAX_SHARD = (1 << SHARD_BITS) - 1
MAX_COUNTER = (1 << COUNTER_BITS) - 1
_MASK64 = (1 << 64) - 1


class Guid(NamedTuple):
    """A decoded guid: which shard issued it and its place in that shard's sequence."""

    shard: int
    counter: int


def encode(shard: int, counter: int) -> int:
    """Return the unsigned 64-bit guid for ``counter`` on ``shard``."""
    if not 0 <= shard <= MAX_SHARD:
        raise ValueError(f"shard id {shard} is outside 0..{MAX_SHARD}")
    if counter > MAX_COUNTER:
        raise GuidExhaustedError(f"shard {shard} has issued all {MAX_COUNTER + 1} of its ids")
    if counter < 0:
        raise ValueError(f"counter {counter} is negative")
    return (shard << COUNTER_BITS) | counter


def decode(guid: int) -> Guid:
    """Split a guid (unsigned, or the signed view a ``bigint`` column returns) into its parts."""
    if not -(1 << 63) <= guid <= _MASK64:
        raise ValueError(f"{guid} is not a 64-bit guid")
    unsigned = guid & _MASK64
    return Guid(unsigned >> COUNTER_BITS, unsigned & MAX_COUNTER)


def to_signed(guid: int) -> int:
    """The value a signed 64-bit column (PostgreSQL ``bigint``) stores for ``guid``."""
    unsigned = guid & _MASK64
    return unsigned - (1 << 64) if unsigned >= 1 << 63 else unsigned


def from_signed(value: int) -> int:
    """The unsigned guid that a signed 64-bit column holds as ``value``."""
    return value & _MASK64


def to_json(guid: int) -> str:
    """A guid as JSON carries it: the unsigned value as a decimal string."""
    return str(guid & _MASK64)


def from_json(text: str) -> int:
    """Read a guid written by ``to_json``; a bare JSON number is refused as possibly rounded."""
    if not isinstance(text, str) or not text.isdigit():
        raise ValueError(f"a guid in JSON must be a decimal string, got {text!r}")
    value = int(text)
    if value > _MASK64:
        raise ValueError(f"{text} is larger than 64 bits")
    return value
