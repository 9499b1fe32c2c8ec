"""The names of a cluster's AMQP topology: one control exchange, and its dead letters.

Several clusters (or test runs) share one broker by choosing their own exchange; the dead-letter
exchange and queue are named after it, so one name is all an operator passes (``--exchange``).
"""

from __future__ import annotations

from typing import TypedDict

__all__ = ["AmqpTopology", "amqp_topology"]


class AmqpTopology(TypedDict, total=False):
    """The keyword arguments of AmqpTransport that name its exchanges and dead-letter queue."""

    exchange: str
    dead_letter_exchange: str
    dead_letter_queue: str


def amqp_topology(exchange: str | None) -> AmqpTopology:
    """AmqpTransport's topology names for ``--exchange E``: the control exchange E, and a
    dead-letter exchange and queue both named ``E.dead-letter``; none: the defaults."""
    if exchange is None:
        return {}
    return {"exchange": exchange, "dead_letter_exchange": f"{exchange}.dead-letter",
            "dead_letter_queue": f"{exchange}.dead-letter"}
