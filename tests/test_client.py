"""A client's reply log: numbered in arrival order, bounded, and safe to read while it grows."""

from __future__ import annotations

import threading

import pytest

from cellframe import Client, Envelope, MemoryBroker
from cellframe.client import Reply, ReplyLog
from cellframe.testing import wait_for


def _reply(n: int) -> Reply:
    return Reply(n, "sender", str(n), f"m{n}")


def _log(count: int, keep: int) -> ReplyLog:
    log = ReplyLog(keep)
    for n in range(count):
        log.append(_reply(n))
    return log


def test_the_log_numbers_replies_from_zero_and_slices_by_those_numbers():
    log = _log(5, keep=10)
    assert len(log) == 5 and log.forgotten == 0
    assert [r.expr for r in log[2:]] == [2, 3, 4]
    assert [r.expr for r in log[::2]] == [0, 2, 4]
    assert log[0].expr == 0 and log[-1].expr == 4
    assert [r.expr for r in log] == [0, 1, 2, 3, 4]


def test_the_oldest_replies_are_forgotten_and_the_numbers_stay_the_same():
    log = _log(25, keep=10)
    assert len(log) == 25
    assert log.forgotten >= 25 - 2 * 10 and len(list(log)) <= 2 * 10
    assert [r.expr for r in log[20:]] == [20, 21, 22, 23, 24]
    assert log[24].expr == 24 and log[-1].expr == 24
    assert [r.expr for r in log[0:]][0] == log.forgotten  # a slice skips what is forgotten
    with pytest.raises(IndexError, match="not held"):
        log[0]
    with pytest.raises(IndexError):
        log[25]


def test_the_log_holds_at_most_twice_keep_however_many_arrive():
    log = _log(100_000, keep=100)
    assert len(log) == 100_000
    held = list(log)
    assert 100 <= len(held) < 200
    assert [r.expr for r in held] == list(range(100_000 - len(held), 100_000))


def test_a_keep_that_is_not_a_positive_int_is_refused():
    for keep in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="keep_replies"):
            ReplyLog(keep)  # type: ignore[arg-type]


def test_reads_while_replies_arrive_always_see_consecutive_numbers():
    log = ReplyLog(keep=50)
    done = threading.Event()

    def arrive() -> None:
        for n in range(20_000):
            log.append(_reply(n))
        done.set()

    writer = threading.Thread(target=arrive)
    writer.start()
    while not done.is_set():
        first = max(0, len(log) - 30)
        got = [r.expr for r in log[first:]]
        if got:
            assert got == list(range(got[0], got[0] + len(got)))
            assert got[0] >= first
    writer.join()


def test_a_client_holds_only_its_newest_call_backs():
    broker = MemoryBroker()
    client = Client(broker.connect(), keep_replies=10)
    sender = broker.connect()
    try:
        for n in range(50):
            sender.publish(client.reply_to, Envelope(f"(n {n})".encode(), sender="test"))
        wait_for(lambda: len(client.replies) == 50, 20)
        held = list(client.replies)
        assert len(held) < 20
        assert held[-1].text == "(n 49)"
        assert [r.text for r in client.replies[45:]] == [f"(n {n})" for n in range(45, 50)]
    finally:
        client.close()
        sender.close()
