"""Whether a broker node is up, asked when a member's queue vanished and it was connected to
another broker node (``cellframe.healing.brokercheck``)."""

from __future__ import annotations

import socket
import threading

from cellframe.healing.brokercheck import BrokerCheck, tcp_answers
from cellframe.testing import wait_for


def test_a_listening_port_answers_and_a_closed_one_does_not() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        assert tcp_answers(address, 1.0)
    assert not tcp_answers(address, 1.0)  # closed now: refused at once
    assert not tcp_answers("no port here", 1.0)


def test_an_answer_is_unknown_until_checked_then_remembered_then_asked_again() -> None:
    now = [0.0]
    asked: list[str] = []
    release = threading.Event()

    def answers(address: str, timeout: float) -> bool:
        asked.append(address)
        release.wait(5)
        return address.endswith(":5701")

    check = BrokerCheck(memory=1.0, answers=answers, clock=lambda: now[0])
    assert check.up("h:5702") is None
    assert check.up("h:5702") is None  # one check on its way, not two
    release.set()
    assert wait_for(lambda: check.up("h:5702") is False, 5, what="the check's answer") is True
    assert check.up("h:5701") is None
    wait_for(lambda: check.up("h:5701") is not None, 5, what="the second check's answer")
    assert check.up("h:5701") is True
    assert asked == ["h:5702", "h:5701"]
    now[0] = 1.5  # past the memory: asked again
    assert check.up("h:5702") is None
    wait_for(lambda: asked == ["h:5702", "h:5701", "h:5702"], 5, what="a fresh check")
