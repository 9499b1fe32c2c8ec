"""``cellframe send``: send one expression, print its call-backs, and say what happened.

A send is fire and forget, so silence is ambiguous: a verb no cell knows and a transition
that does not apply from the cell's state are both no-ops, counted as ``ignored`` and never
answered. The summary on stderr says so, and how to find out which; the exit code tells a
script the same (see ``SendOutcome``).
"""

from __future__ import annotations

import time
from enum import IntEnum
from typing import Any

import click

from ..client import Client, Reply
from ..language.symbols import Keyword, Symbol

__all__ = ["SendOutcome", "is_error_reply", "refusal", "send_and_report"]

_ERROR = Symbol("error")
_NODE, _REASON = Keyword("node"), Keyword("reason")


class SendOutcome(IntEnum):
    """The exit codes of ``cellframe send`` (2 is click's and CliError's: usage, environment)."""

    DELIVERED = 0
    NOT_DELIVERED = 1
    REFUSED = 2  # a node refused the message before any cell saw it (a wrong key, or one
    #              without the capability)
    ERROR_REPLY = 3
    NO_CALL_BACK = 4


def is_error_reply(reply: Reply) -> bool:
    """True for an ``(error ...)`` call-back: a refused or failed message."""
    return isinstance(reply.expr, list) and bool(reply.expr) and reply.expr[0] == _ERROR


def refusal(reply: Reply) -> str | None:
    """What a node's gate said in refusing our message (a key without the capability, a
    replay), if ``reply`` is that ``(error :node N :reason "refused: ...")``; else None."""
    if not is_error_reply(reply):
        return None
    fields = dict(zip(reply.expr[1::2], reply.expr[2::2], strict=False))
    reason = fields.get(_REASON)
    if not isinstance(reason, str) or not reason.startswith("refused: "):
        return None
    return f"node {fields.get(_NODE, reply.sender)!s:.63} refused our message: {reason[9:]:.300}"


def send_and_report(transport: Any, key: str, expr: Any, *, signer: Any, queue_prefix: str,
                    wait: float, confirm_timeout: float, target: str | None = None) -> SendOutcome:
    """Send ``expr`` on routing key ``key`` (``target`` as the operator wrote it, for the
    messages), echo call-backs for ``wait`` seconds, and summarize on stderr."""
    target = target or key
    returned: list[str] = []
    with Client(transport, signer=signer, queue_prefix=queue_prefix) as client:
        sent_at = time.monotonic()
        message_id = client.send(key, expr, expect_reply=wait > 0,
                                 on_return=lambda envelope, reason: returned.append(reason))
        # The broker confirms a message once a queue has it, or returns it first when none
        # is bound: either way flush returns then, with on_return already run.
        if not transport.flush(confirm_timeout):
            _say(f"error: the broker did not confirm the message within {confirm_timeout:g} s")
            return SendOutcome.NOT_DELIVERED
        if returned:
            _say(f"error: nothing is listening on {target} ({key}): {returned[0]}")
            return SendOutcome.NOT_DELIVERED
        if wait <= 0:
            _say(f"delivered to {target} (message {message_id}); --wait SECONDS shows the "
                 f"call-backs")
            return SendOutcome.DELIVERED
        # The reply queue is this command's own: a call-back that names another message is
        # stale, and one that names none (a cell that sent to reply_to by hand, an older
        # node) is taken as an answer. A call-back that fails verification (a node's notice
        # that it refused the message) ends the wait at once.
        deadline, got = sent_at + wait, list[Reply]()
        while (left := deadline - time.monotonic()) > 0:
            printed = len(got)
            got = client.wait_for_answers(message_id, printed + 1, left, or_unnamed=True,
                                          or_refused=True)
            for reply in got[printed:]:
                click.echo(reply.text)
            refused = [str(r) for r in client.refused]
            refused += [line for r in got if (line := refusal(r)) is not None]
            if refused:
                _say(f"error: {refused[0]}")
                return SendOutcome.REFUSED
    return _summarize(target, message_id, got, wait)


def _summarize(target: str, message_id: str, replies: list[Reply], wait: float) -> SendOutcome:
    if not replies:
        _say(f"no call-back within {wait:g} s from {target} (message {message_id}): it was "
             f"delivered, but may have been a no-op (a verb no cell there knows, or no "
             f"transition from its state; see the 'ignored' column of cellframe status), or "
             f"refused unread (not signed with the nodes' secret: they log a warning). "
             f"To find out, send (diagnostic true) to the node and send again: a no-op then "
             f"goes to the dead letters with its reason, which `cellframe dead-letters` shows "
             f"(docs/operations.md, 'The first hour').")
        return SendOutcome.NO_CALL_BACK
    errors = sum(is_error_reply(r) for r in replies)
    if errors:
        _say(f"error: {errors} of {len(replies)} call-backs within {wait:g} s were errors")
        return SendOutcome.ERROR_REPLY
    _say(f"{len(replies)} call-back{'s' if len(replies) != 1 else ''} within {wait:g} s")
    return SendOutcome.DELIVERED


def _say(line: str) -> None:
    click.echo(line, err=True)
