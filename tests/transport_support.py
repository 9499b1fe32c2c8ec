"""Shared helpers for the routing and transport tests."""

from __future__ import annotations

__all__ = ["reference_matches"]


def reference_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching, written the plain recursive way, independent of cellframe.routing.

    Words are split as RabbitMQ splits them: the empty string has no words.
    """

    def words(text: str) -> list[str]:
        return text.split(".") if text else []

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return match(p[1:], k) or (bool(k) and match(p, k[1:]))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])

    return match(words(pattern), words(key))
