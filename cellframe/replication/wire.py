"""What shard cells put in their messages: records packed in strings, cut to fit a message.

Records travel as *rows*: strings that each hold up to ``RECORDS_PER_ROW`` records, one after
the other, each written ``TIME GUID F V FAMILYVALUE`` (F and V: the lengths, in characters,
of the family and of the value text; the value text is the store's bytes, the printer's text
of a language value). The digest is not sent: the receiver recomputes it from the content
anyway (``content_digest``).

Why strings: the lark reader costs about 5 us per atom and 0.1 us per character, and every
record of a partition transfer passes through it. Records of 100-byte values read in 59 us
each as lists ``(family time guid value)``, 46 us as a flat list of atoms, 29 us as one string
each, and 10 us packed 16 to a string (measured here, messages of 50 KB; a plist with the
digest took 130 us). Merkle digests, the subject of their own messages, travel as 32-digit
hex strings.

A message must stay under the node's 64 KiB limit, so every list of rows or digests is cut
by its written size (``chunks``) before it is sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from ..language.printer import write
from ..language.symbols import Symbol
from ..store import Record, content_digest

__all__ = [
    "MAX_RECORD_BYTES",
    "MESSAGE_BUDGET",
    "RECORDS_PER_ROW",
    "chunks",
    "digest_hex",
    "fits",
    "hex_digest",
    "quoted",
    "record_text",
    "row_records",
    "row_size",
    "rows_of",
    "rows_to_records",
    "value_text",
]

#: Records packed in one string (past 16 the reader gains nothing: 10.2 us a record at 16,
#: 10.7 at 64).
RECORDS_PER_ROW = 16
#: Bytes of rows or digests per message: the node refuses bodies over 64 KiB, and the rest of
#: a message (verb, keywords, partition) takes well under a kilobyte.
MESSAGE_BUDGET = 56 * 1024
#: Characters of records packed in one row, at most (a longer record goes alone): a read's
#: answer is cut at half a message by whole rows (``fits``), so rows stay well under that.
ROW_BUDGET = 8 * 1024
#: The longest record a shard cell takes (its row as a message writes it): one that long must
#: still fit a message that replicates or answers it.
MAX_RECORD_BYTES = MESSAGE_BUDGET // 2

_QUOTE = Symbol("quote")
#: What opens a record in a row: TIME (signed), GUID, F and V, each followed by a space.
_RECORD_HEAD = re.compile(r"(-?[0-9]{1,19}) ([0-9]{1,20}) ([0-9]{1,20}) ([0-9]{1,20}) ")
_GUID_MAX = (1 << 64) - 1
T = TypeVar("T")


def quoted(value: Any) -> Any:
    """``value`` as a message argument: lists and symbols quoted, so they stay data."""
    if isinstance(value, list | Symbol):
        return [_QUOTE, value]
    return value


def value_text(value: bytes) -> str:
    """The store's value bytes as a string (surrogate escapes keep non-UTF-8 bytes intact)."""
    return value.decode("utf-8", "surrogateescape")


def record_text(record: Record) -> str:
    """One record as it appears in a row: ``TIME GUID F V FAMILYVALUE``."""
    family, value = record.family, value_text(record.value)
    return f"{record.time} {record.guid} {len(family)} {len(value)} {family}{value}"


def rows_of(records: Iterable[Record], per_row: int = RECORDS_PER_ROW,
            budget: int = ROW_BUDGET) -> list[str]:
    """``records``, in order, packed ``per_row`` to a string, and at most about ``budget``
    characters to one (a longer record goes alone): rows are what ``fits`` and ``chunks``
    count, so a row of sixteen large records must not outgrow a message."""
    rows: list[str] = []
    row: list[str] = []
    size = 0
    for record in records:
        text = record_text(record)
        if row and (len(row) == per_row or size + len(text) > budget):
            rows.append("".join(row))
            row, size = [], 0
        row.append(text)
        size += len(text)
    if row:
        rows.append("".join(row))
    return rows


def row_records(row: Any) -> list[Record]:
    """The records packed in ``row``; ValueError or TypeError names what is wrong with it.

    Runs once per record a replica receives: one regex match for the four numbers (0.8 us,
    against 1.5 for four ``find`` and ``int`` calls) and the guid's range checked inline.
    """
    if not isinstance(row, str):
        raise TypeError(f"a row of records is a string, got {type(row).__name__}")
    out, at, end = [], 0, len(row)
    while at < end:
        head = _RECORD_HEAD.match(row, at)
        if head is None:
            raise ValueError(f"a record is 'TIME GUID F V FAMILYVALUE', got {row[at:at + 60]!r}")
        time, guid, flen, vlen = int(head[1]), int(head[2]), int(head[3]), int(head[4])
        at = head.end()
        stop = at + flen + vlen
        if flen <= 0 or stop > end:
            raise ValueError(f"a record names {flen} + {vlen} characters past its row's end")
        if guid > _GUID_MAX:
            raise ValueError(f"{guid} is not a 64-bit guid")
        family = row[at:at + flen]
        value = row[at + flen:stop].encode("utf-8", "surrogateescape")
        at = stop
        out.append(Record(family, time, value, guid, content_digest(family, time, value)))
    return out


def rows_to_records(rows: Any) -> tuple[list[Record], int]:
    """The records of ``rows`` that are well formed, and how many rows were not."""
    if not isinstance(rows, list):
        return [], 1
    records, bad = [], 0
    for row in rows:
        try:
            records += row_records(row)
        except (TypeError, ValueError, UnicodeError):
            bad += 1
    return records, bad


def row_size(row: str) -> int:
    """Bytes ``row`` takes in a message (written, with a separating space)."""
    if row.isascii() and row.isprintable():  # the common case, without writing it
        return len(row) + 3 + row.count('"') + row.count("\\")
    return len(write(row).encode("utf-8")) + 1


def hex_digest(digest: bytes) -> str:
    return digest.hex()


def digest_hex(text: Any) -> bytes | None:
    """A digest from its hex text; None if ``text`` is not 32 hex digits."""
    if not isinstance(text, str) or len(text) != 32:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def chunks(items: Iterable[T], size_of: Callable[[T], int],
           budget: int = MESSAGE_BUDGET) -> Iterator[list[T]]:
    """Cut ``items`` into lists whose sizes add up to at most ``budget`` (one item at least)."""
    chunk: list[T] = []
    used = 0
    for item in items:
        size = size_of(item)
        if chunk and used + size > budget:
            yield chunk
            chunk, used = [], 0
        chunk.append(item)
        used += size
    if chunk:
        yield chunk


def fits(rows: Sequence[Any], budget: int = MESSAGE_BUDGET) -> int:
    """How many leading ``rows`` fit in ``budget`` bytes (at least one, if there is one)."""
    used = 0
    for i, row in enumerate(rows):
        used += row_size(row)
        if used > budget and i:
            return i
    return len(rows)
