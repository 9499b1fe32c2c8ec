"""Bodies read before: the expression of a message body that came before, without reading it
again.

Control traffic repeats bodies: a client sending the same ``(set-weight "web-1" 5)`` to many
cells, ``(ping)``, ``(status)``, a batch of identical ``(add 1 ...)``. Only the message ids,
times and signatures differ, and those are checked before the body is read. Reading a
100-byte body took 7-10 us here (the largest single part of a node's intake in the pipeline
benchmark); a repeat found here takes about 0.5 us: a dict lookup on the body's bytes and a
copy of its lists. Bodies that never repeat (heartbeats carry a sequence number) pay the
lookup and one insertion, about 0.2 us.

What it hands out is always fresh: every list is a new list, as ``read`` would have made it,
so a cell that changes the expression it was given changes nothing here. The atoms are shared,
and immutable: ``str``, ``int``, ``float``, ``bool``, ``None``, ``Symbol``, ``Keyword`` (the
reader makes nothing else). A body that does not read is not remembered: it is read, and
refused with lark's error, every time.

Bounded: bodies of at most ``MEMO_BODY_BYTES`` are remembered, at most ``MEMO_ENTRIES`` of
them, and the memo is emptied when it is full (a few hundred KB at most, whatever arrives).
"""

from __future__ import annotations

from typing import Any

from .reader import DEFAULT_MAX_BYTES, read

__all__ = ["MEMO_BODY_BYTES", "MEMO_ENTRIES", "ReadMemo"]

#: Bodies longer than this are read every time (hashing a long body costs more than little).
MEMO_BODY_BYTES = 512
#: Bodies remembered at most; the memo is emptied when it reaches this.
MEMO_ENTRIES = 256


class ReadMemo:
    """``read`` for message bodies, remembering the expressions of the last few bodies read.

    Safe from several threads: one dict, each lookup and insertion atomic under the GIL; two
    threads reading the same new body both read it, and one of the results is kept.
    """

    __slots__ = ("_exprs", "max_bytes")

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._exprs: dict[bytes, Any] = {}

    def read(self, body: bytes) -> Any:
        """The expression in ``body``, as ``read(body, max_bytes=self.max_bytes)`` returns it;
        raises what ``read`` raises."""
        if type(body) is not bytes or len(body) > MEMO_BODY_BYTES:
            return read(body, max_bytes=self.max_bytes)
        exprs = self._exprs
        expr = exprs.get(body)
        if expr is None:
            expr = read(body, max_bytes=self.max_bytes)
            if len(exprs) >= MEMO_ENTRIES:
                exprs.clear()
            exprs[body] = expr
        return fresh(expr) if type(expr) is list else expr

    def __len__(self) -> int:
        return len(self._exprs)


def fresh(expr: list[Any]) -> list[Any]:
    """A copy of ``expr`` with every list in it new and every atom the same."""
    return [fresh(item) if type(item) is list else item for item in expr]
