"""One ``send()`` per wake-up instead of one per AMQP frame, on pika's plaintext transport.

pika marshals every frame into a buffer of its own (a publish is three frames: method, header
and body; an ack is one) and its transport then sends the buffers one system call each. Every
``send()`` lets go of the GIL and takes it back; in a node, where consumer workers, cells and
the I/O thread share one interpreter, taking it back means waiting for whichever thread holds
it. So before pika sends, the waiting buffers are joined (up to ``JOIN_BYTES`` at a time): the
bytes on the wire are the same, in the same order, in fewer system calls.

Measured with ``cellframe.benchmarks.amqp.bench_transport`` (signed, 20,000 messages of 100
bytes, publisher and consumer in one process): 9.6k-11.5k messages/s per ``send()`` per frame,
13.1k-14.6k/s coalesced. Stock pika gains as much from it, so the raw-pika baselines in
``cellframe bench`` stay stock: they measure pika as it ships.

This touches two private names of pika 1.x (``_produce`` and ``_tx_buffers`` of
``_AsyncPlaintextTransport``); on any other transport class, or if they are missing, nothing
changes and pika sends as it always did.
"""

from __future__ import annotations

import logging
from typing import Any

try:
    from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport
except ImportError:  # pragma: no cover - a pika laid out otherwise: send frame by frame
    _AsyncPlaintextTransport = None

__all__ = ["JOIN_BYTES", "coalesce_writes"]

log = logging.getLogger("cellframe.transports.amqp")

#: Join at most this many waiting bytes into one send: a partial send copies what is left, so
#: an unbounded join could copy a large backlog many times over.
JOIN_BYTES = 4 * 1024 * 1024


def coalesce_writes(connection: Any) -> bool:
    """Make ``connection``'s transport join its waiting frames before each send; return
    whether it could (a plaintext transport of the expected shape)."""
    transport = getattr(connection, "_transport", None)
    if _AsyncPlaintextTransport is None or type(transport) is not _AsyncPlaintextTransport:
        return False
    buffers = getattr(transport, "_tx_buffers", None)
    produce = getattr(transport, "_produce", None)
    if buffers is None or produce is None:
        log.debug("pika's transport has changed shape; sending frame by frame")
        return False

    def produce_joined() -> None:
        if len(buffers) > 1:
            joined, size = [], 0
            while buffers and size < JOIN_BYTES:
                chunk = buffers.popleft()
                joined.append(chunk)
                size += len(chunk)
            buffers.appendleft(b"".join(joined))
        produce()

    transport._produce = produce_joined
    return True
